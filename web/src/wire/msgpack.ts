// A small strict MessagePack reader and writer for the control messages (PROTOCOL.md 3.1).
//
// Why not @msgpack/msgpack here: its decoder turns the float 1.0 into the number 1 and a
// str and a bin into values a validator cannot always tell apart by type alone, while
// PROTOCOL.md 3.1 makes "a float where an int is expected" a decode error, as msgspec does
// on the Python side. This reader keeps every msgpack type distinct (ints are bigint,
// floats are number), and the writer picks the same smallest forms as msgspec, so our
// bytes equal Python's byte for byte.

import { utf8 } from "./bytes.ts";
import { DecodeError, LocalProtocolError } from "./errors.ts";

/** Values nested deeper than this are refused ("nested too deeply"), as Python does. */
export const MAX_DEPTH = 500;
export const NESTED_TOO_DEEPLY = "nested too deeply";

export class MpMap {
  constructor(readonly entries: ReadonlyArray<readonly [MpValue, MpValue]>) {}
}
export class MpExt {
  constructor(
    readonly type: number,
    readonly data: Uint8Array,
  ) {}
}
/** int: bigint; float: number; str: string; bin: Uint8Array; array; map; nil: null. */
export type MpValue = null | boolean | bigint | number | string | Uint8Array | MpValue[] | MpMap | MpExt;

/** msgspec's names for a value's type, used in error messages. */
export function typeName(v: MpValue): string {
  if (v === null) return "None";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float";
  if (typeof v === "string") return "str";
  if (v instanceof Uint8Array) return "bytes";
  if (Array.isArray(v)) return "array";
  if (v instanceof MpMap) return "object";
  return "ext";
}

/**
 * Decodes exactly one value filling all of `data`; DecodeError (without prefix) otherwise.
 * `maxDepth`: nesting refused beyond it (member messages allow more than control ones).
 */
/**
 * A top-level key that is not valid UTF-8, with `lenientKeys` (unpack): msgspec skips such a
 * key of a Struct as an unknown field without decoding it; no field name can equal this.
 */
export const INVALID_KEY = "\u{fffd}invalid utf-8 key";

export function unpack(data: Uint8Array, maxDepth: number = MAX_DEPTH, lenientKeys = false): MpValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const need = (n: number): number => {
    if (pos + n > data.length) throw new DecodeError("Input data was truncated");
    const at = pos;
    pos += n;
    return at;
  };
  const bytes = (n: number): Uint8Array => data.slice(need(n), pos);
  let keyOfTop = false; // reading a key of the top-level map
  const str = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(data.subarray(at, pos));
    } catch {
      if (keyOfTop) return INVALID_KEY;
      throw new DecodeError("Invalid UTF-8 encoded string");
    }
  };
  const u8 = () => view.getUint8(need(1));
  const u16 = () => view.getUint16(need(2));
  const u32 = () => view.getUint32(need(4));
  const read = (depth: number): MpValue => {
    if (depth > maxDepth) throw new DecodeError(NESTED_TOO_DEEPLY);
    const start = pos;
    const op = u8();
    if (op <= 0x7f) return BigInt(op);
    if (op >= 0xe0) return BigInt(op - 0x100);
    if ((op & 0xf0) === 0x80) return map(op & 0x0f, depth);
    if ((op & 0xf0) === 0x90) return array(op & 0x0f, depth);
    if ((op & 0xe0) === 0xa0) return str(op & 0x1f);
    switch (op) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return bytes(u8());
      case 0xc5:
        return bytes(u16());
      case 0xc6:
        return bytes(u32());
      case 0xc7: {
        const n = u8();
        return new MpExt(view.getInt8(need(1)), bytes(n));
      }
      case 0xc8: {
        const n = u16();
        return new MpExt(view.getInt8(need(1)), bytes(n));
      }
      case 0xc9: {
        const n = u32();
        return new MpExt(view.getInt8(need(1)), bytes(n));
      }
      case 0xca:
        return view.getFloat32(need(4));
      case 0xcb:
        return view.getFloat64(need(8));
      case 0xcc:
        return BigInt(u8());
      case 0xcd:
        return BigInt(u16());
      case 0xce:
        return BigInt(u32());
      case 0xcf:
        return view.getBigUint64(need(8));
      case 0xd0:
        return BigInt(view.getInt8(need(1)));
      case 0xd1:
        return BigInt(view.getInt16(need(2)));
      case 0xd2:
        return BigInt(view.getInt32(need(4)));
      case 0xd3:
        return view.getBigInt64(need(8));
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8: {
        const type = view.getInt8(need(1));
        return new MpExt(type, bytes(1 << (op - 0xd4)));
      }
      case 0xd9:
        return str(u8());
      case 0xda:
        return str(u16());
      case 0xdb:
        return str(u32());
      case 0xdc:
        return array(u16(), depth);
      case 0xdd:
        return array(u32(), depth);
      case 0xde:
        return map(u16(), depth);
      case 0xdf:
        return map(u32(), depth);
      default: // 0xc1, never used
        throw new DecodeError(`MessagePack data is malformed: invalid opcode '\\x${op.toString(16)}' (byte ${start})`);
    }
  };
  // Each element takes at least one byte: a count beyond the input is truncation, found
  // before allocating anything for it.
  const array = (n: number, depth: number): MpValue[] => {
    if (n > data.length - pos) throw new DecodeError("Input data was truncated");
    const out: MpValue[] = [];
    for (let i = 0; i < n; i++) out.push(read(depth + 1));
    return out;
  };
  const map = (n: number, depth: number): MpMap => {
    if (2 * n > data.length - pos) throw new DecodeError("Input data was truncated");
    const out: [MpValue, MpValue][] = [];
    for (let i = 0; i < n; i++) {
      keyOfTop = lenientKeys && depth === 0;
      const key = read(depth + 1);
      keyOfTop = false;
      out.push([key, read(depth + 1)]);
    }
    return new MpMap(out);
  };
  const value = read(0);
  if (pos !== data.length) throw new DecodeError(`MessagePack data is malformed: trailing characters (byte ${pos})`);
  return value;
}

/** Writes msgpack in msgspec's forms: smallest int and length headers, floats as float64. */
export class MpWriter {
  #chunks: number[] = [];
  #parts: Uint8Array[] = [];

  #flush(): void {
    if (this.#chunks.length) {
      this.#parts.push(Uint8Array.from(this.#chunks));
      this.#chunks = [];
    }
  }

  #raw(b: Uint8Array): void {
    this.#flush();
    this.#parts.push(b);
  }

  #be(value: number | bigint, size: 1 | 2 | 4 | 8): void {
    const b = new Uint8Array(size);
    const v = new DataView(b.buffer);
    if (size === 1) v.setUint8(0, Number(value));
    else if (size === 2) v.setUint16(0, Number(value));
    else if (size === 4) v.setUint32(0, Number(value));
    else v.setBigUint64(0, BigInt.asUintN(64, BigInt(value)));
    this.#raw(b);
  }

  nil(): this {
    this.#chunks.push(0xc0);
    return this;
  }

  bool(v: boolean): this {
    this.#chunks.push(v ? 0xc3 : 0xc2);
    return this;
  }

  /** A type byte followed by a big-endian number of `size` bytes. */
  #head(op: number, value: number | bigint, size: 1 | 2 | 4 | 8): void {
    this.#chunks.push(op);
    this.#be(value, size);
  }

  int(value: number | bigint): this {
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new LocalProtocolError(`cannot encode ${value} as an int`);
    }
    const v = BigInt(value);
    if (v < -(2n ** 63n) || v >= 2n ** 64n) throw new LocalProtocolError(`int ${v} does not fit msgpack`);
    if (v >= 0n && v <= 0x7fn) this.#chunks.push(Number(v));
    else if (v >= 0n && v <= 0xffn) this.#head(0xcc, v, 1);
    else if (v >= 0n && v <= 0xffffn) this.#head(0xcd, v, 2);
    else if (v >= 0n && v <= 0xffffffffn) this.#head(0xce, v, 4);
    else if (v >= 0n) this.#head(0xcf, v, 8);
    else if (v >= -32n) this.#chunks.push(Number(v) + 0x100);
    else if (v >= -128n) this.#head(0xd0, Number(v) & 0xff, 1);
    else if (v >= -32768n) this.#head(0xd1, Number(v) & 0xffff, 2);
    else if (v >= -(2n ** 31n)) this.#head(0xd2, Number(v) >>> 0, 4);
    else this.#head(0xd3, v, 8);
    return this;
  }

  float(value: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, value);
    this.#chunks.push(0xcb);
    this.#raw(b);
    return this;
  }

  /** A length header: the fix form when `n` fits `fixMax`, else the 8/16/32-bit forms. */
  #length(n: number, fix: number, fixMax: number, ops: [number | null, number, number]): void {
    if (n <= fixMax) this.#chunks.push(fix | n);
    else if (ops[0] !== null && n <= 0xff) this.#head(ops[0], n, 1);
    else if (n <= 0xffff) this.#head(ops[1], n, 2);
    else this.#head(ops[2], n, 4);
  }

  str(value: string): this {
    const b = utf8.encode(value);
    this.#length(b.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    this.#raw(b);
    return this;
  }

  bin(value: Uint8Array): this {
    this.#length(value.length, 0xc4, -1, [0xc4, 0xc5, 0xc6]);
    this.#raw(Uint8Array.from(value));
    return this;
  }

  arrayHeader(n: number): this {
    this.#length(n, 0x90, 15, [null, 0xdc, 0xdd]);
    return this;
  }

  mapHeader(n: number): this {
    this.#length(n, 0x80, 15, [null, 0xde, 0xdf]);
    return this;
  }

  bytes(): Uint8Array {
    this.#flush();
    let n = 0;
    for (const p of this.#parts) n += p.length;
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}
