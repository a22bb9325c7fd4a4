// Text from others, made safe to show (as src/bangor/text.py does for terminals): a
// page does not obey control characters, but bidi controls reorder what is shown and
// zero-width ones hide text, so "<bob> hi" could be drawn to read as something else.
// Every character of the categories Python's text.is_unsafe names (Cc, Cf, Zl, Zp, Cs)
// is shown as a visible escape, written as Python writes it (\x1b, \u202e, \U000e0001).

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

function escaped(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  if (code < 0x100) return `\\x${code.toString(16).padStart(2, "0")}`;
  if (code < 0x10000) return `\\u${code.toString(16).padStart(4, "0")}`;
  return `\\U${code.toString(16).padStart(8, "0")}`;
}

/** `text` with every character that could hide or reorder text written as an escape. */
export function escapeRemote(text: string): string {
  return text.replace(UNSAFE, escaped);
}
