"""Text from others, made safe to show: names checked at the door, output escaped.

Names (user names, nicknames) and chat come from other people, and a terminal obeys
some characters rather than showing them: escape sequences move the cursor, clear or
retitle the screen, a carriage return overwrites the line, bidi controls reorder what
is shown, zero-width characters hide text. A nickname such as
``"\\x1b[2K\\rbob verified: safety number ..."`` would draw a fake verification line.

Two rules, one per direction:

* ``check_name``: a name must have no character a terminal would obey (Unicode
  categories Cc, Cf, Zl, Zp, Cs: controls, C1, bidi and zero-width format characters,
  line and paragraph separators, lone surrogates). The server refuses such nicknames and
  the command line refuses them before connecting.
* ``escape``: whatever reaches a screen is shown with those characters as visible
  escapes (``\\x1b``, ``\\u202e``), the way Python's ``repr`` writes them.
"""

from __future__ import annotations

import unicodedata

from bangor.errors import BadNameError

# Unicode general categories a terminal obeys, or that hide or reorder text.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def check_name(name: str, what: str, max_len: int) -> None:
    """Raise :class:`BadNameError` unless ``name`` is at most ``max_len`` safe characters."""
    if len(name) > max_len:
        raise BadNameError(f"{what} must be at most {max_len} characters")
    bad = next((char for char in name if is_unsafe(char)), None)
    if bad is not None:
        raise BadNameError(
            f"{what} must not contain control, format or line-break characters "
            f"(found {_escaped(bad)})"
        )


def user_key(name: str) -> str:
    """What makes two user names the same account: NFKC, then case folded (NFKC again,
    since folding can leave a string that is not NFKC). ``Alice``, ``ALICE`` and
    ``Alice`` in fullwidth letters (U+FF21...) are all ``alice``; ``Straße`` is ``strasse``."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def escape(text: str) -> str:
    """``text`` with every character a terminal would obey written as a visible escape."""
    if text.isprintable():  # the usual case; isprintable() is False for all of them
        return text
    return "".join(_escaped(char) if is_unsafe(char) else char for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
