// Invite codes (PROTOCOL.md 7, wire/invite.py): server address, room id, room secret and
// server key fingerprint, as "bangor:" + Crockford base32 in groups of five.
//
//   version (1) | host length (1) | host (<= 253) | port (2, BE) | room id (8)
//   | room secret (16) | server fingerprint (16) | checksum (4)
//
// The checksum (BLAKE2s-256 of "bangor invite" + everything before it, first 4 bytes)
// catches typing mistakes; it is not a MAC (the fingerprint pins the server).

import { blake2s } from "@noble/hashes/blake2.js";
import { concat, equal, readU16, toHex, u16, utf8 } from "./bytes.ts";
import { InviteError } from "./errors.ts";
import { FINGERPRINT_SIZE } from "./fingerprint.ts";

export const INVITE_VERSION = 1;
export const INVITE_PREFIX = "bangor:";
export const ROOM_ID_SIZE = 8;
export const SECRET_SIZE = 16;
export const CHECKSUM_SIZE = 4;
export const CHECKSUM_CONTEXT = utf8.encode("bangor invite");
export const MAX_HOST = 253; // the longest DNS name
export const GROUP_SIZE = 5;
/** version + host length + port + room id + secret + fingerprint + checksum */
export const FIXED_SIZE = 1 + 1 + 2 + ROOM_ID_SIZE + SECRET_SIZE + FINGERPRINT_SIZE + CHECKSUM_SIZE;
export const MIN_SIZE = FIXED_SIZE + 1;

export const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford: no i, l, o, u
const DECODE = new Map<string, number>([...ALPHABET].map((c, i) => [c, i] as [string, number]));
DECODE.set("o", 0).set("i", 1).set("l", 1);

const MSG_EMPTY = "invite code is empty";
const MSG_CHARS = "invite code has invalid characters";
const MSG_CHECKSUM = "invite code checksum does not match (mistyped or tampered)";
const MSG_TRUNCATED = "invite code is truncated";
const MSG_NOT_INVITE = "not a Bangor invite code (one starts with 'bangor:0')";
const MSG_MALFORMED = "invite code is malformed";
const MSG_PORT = "invite code has a bad port";
const MSG_HOST = "invite code has a bad host";

const HOST_CHARS = /^[A-Za-z0-9._-]+$/;

// -- hosts ----------------------------------------------------------------------------

function parseIPv4(text: string): number[] | null {
  // As Python's ipaddress: exactly four decimal octets, no leading zeros.
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    out.push(Number(p));
  }
  return out;
}

function formatIPv6(groups: number[]): string {
  // RFC 5952 as Python prints it: the first longest run (of two or more) of zero groups
  // becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return hex.slice(0, best).join(":") + "::" + hex.slice(best + bestLen).join(":");
}

function parseIPv6(text: string): string | null {
  // As Python's ipaddress.IPv6Address: an IPv4 tail, one "::" standing for at least one
  // zero group, and a "%scope" suffix kept as it is.
  let addr = text;
  let scope = "";
  const pct = text.indexOf("%");
  if (pct >= 0) {
    scope = text.slice(pct + 1);
    addr = text.slice(0, pct);
    if (!scope || scope.includes("%")) return null;
  }
  const lastColon = addr.lastIndexOf(":");
  if (lastColon < 0) return null;
  const tail = addr.slice(lastColon + 1);
  if (tail.includes(".")) {
    const v4 = parseIPv4(tail);
    if (v4 === null) return null;
    const hi = ((v4[0] as number) << 8) | (v4[1] as number);
    const lo = ((v4[2] as number) << 8) | (v4[3] as number);
    addr = addr.slice(0, lastColon + 1) + hi.toString(16) + ":" + lo.toString(16);
  }
  const hextet = (p: string) => /^[0-9a-fA-F]{1,4}$/.test(p);
  let groups: number[];
  const gap = addr.indexOf("::");
  if (gap >= 0) {
    if (addr.indexOf("::", gap + 1) >= 0) return null;
    const left = gap === 0 ? [] : addr.slice(0, gap).split(":");
    const right = gap + 2 === addr.length ? [] : addr.slice(gap + 2).split(":");
    if (left.length + right.length > 7 || ![...left, ...right].every(hextet)) return null;
    groups = [
      ...left.map((p) => parseInt(p, 16)),
      ...new Array<number>(8 - left.length - right.length).fill(0),
      ...right.map((p) => parseInt(p, 16)),
    ];
  } else {
    const parts = addr.split(":");
    if (parts.length !== 8 || !parts.every(hextet)) return null;
    groups = parts.map((p) => parseInt(p, 16));
  }
  return formatIPv6(groups) + (scope ? "%" + scope : "");
}

/**
 * Canonical ASCII form of a host, as Python's invite.normalize_host: IP literals
 * compressed (brackets dropped), names lowercase IDNA. Non-ASCII names go through the
 * browser's own IDNA (UTS 46), which differs from Python's IDNA 2003 for a few letters
 * (e.g. "ß"); such invites are made by Python in ASCII anyway.
 */
export function normalizeHost(host: string): string {
  const bare = host.replace(/^[[\]]+|[[\]]+$/g, "");
  const v4 = parseIPv4(bare);
  if (v4 !== null) return v4.join(".");
  const v6 = bare.includes(":") ? parseIPv6(bare) : null;
  if (v6 !== null) return v6;
  let ascii: string;
  if (/^[\x00-\x7f]*$/.test(host)) {
    ascii = host.toLowerCase();
  } else {
    if (/[\x00-\x7f]/.test(host.replace(/[A-Za-z0-9._-]/g, ""))) throw new InviteError(MSG_HOST);
    try {
      ascii = new URL(`http://${host}/`).hostname.toLowerCase();
    } catch {
      throw new InviteError(MSG_HOST);
    }
  }
  // Python's idna codec: every label but a trailing empty one has 1..63 characters.
  const labels = ascii.split(".");
  if (labels.slice(0, -1).some((l) => l.length === 0 || l.length > 63) || (labels.at(-1) as string).length > 63) {
    throw new InviteError(MSG_HOST);
  }
  if (!ascii || ascii.length > MAX_HOST || !HOST_CHARS.test(ascii)) throw new InviteError(MSG_HOST);
  return ascii;
}

// -- base32 ---------------------------------------------------------------------------

function b32encode(data: Uint8Array): string {
  const bits = data.length * 8;
  const pad = (5 - (bits % 5)) % 5;
  let value = data.length ? BigInt("0x" + toHex(data)) : 0n;
  value <<= BigInt(pad);
  const chars = (bits + pad) / 5;
  let out = "";
  for (let i = chars - 1; i >= 0; i--) out += ALPHABET[Number((value >> BigInt(5 * i)) & 31n)];
  return out;
}

/** The bytes, and whether the text was canonical (zero padding bits, no spare character). */
function b32decode(text: string): [Uint8Array, boolean] {
  // A small bit accumulator, not one BigInt for the whole text: that was quadratic, and a
  // pasted or linked code can be any length.
  const data = new Uint8Array(Math.floor((text.length * 5) / 8));
  let acc = 0;
  let have = 0; // bits in acc not yet written
  let at = 0;
  for (const ch of text) {
    acc = ((acc << 5) | (DECODE.get(ch) as number)) & 0xfff; // have <= 7 before: 12 bits suffice
    have += 5;
    if (have >= 8) {
      have -= 8;
      data[at++] = (acc >> have) & 0xff;
    }
  }
  // `have` is bits % 8: the padding, canonical when under 5 bits and all zero.
  return [data, have < 5 && (acc & ((1 << have) - 1)) === 0];
}

/** The code's characters, and whether they came after the `bangor:` prefix. */
function clean(text: string): [string, boolean] {
  const code = text.replace(/[\s-]+/g, "").toLowerCase();
  if (code.startsWith(INVITE_PREFIX)) return [code.slice(INVITE_PREFIX.length), true];
  // A valid code always starts with "0" (version 1), never "b": no ambiguity.
  if (code.startsWith(INVITE_PREFIX.slice(0, -1))) return [code.slice(INVITE_PREFIX.length - 1), true];
  return [code, false];
}

/** Whether a code that does not parse was meant as an invite (then it was cut short or
 * mistyped) rather than something else pasted (`hello`, a URL): every invite's first
 * character is "0", its version byte being below 32 (as invite.py). */
function looksLikeInvite(code: string, prefixed: boolean): boolean {
  return prefixed || DECODE.get(code[0] as string) === 0;
}

function checksum(body: Uint8Array): Uint8Array {
  return blake2s(concat(CHECKSUM_CONTEXT, body)).slice(0, CHECKSUM_SIZE);
}

// -- the invite -----------------------------------------------------------------------

export class Invite {
  readonly host: string;
  readonly port: number;
  readonly roomId: Uint8Array;
  /** The room secret: never sent to the server. */
  readonly secret: Uint8Array;
  /** Of the server's static key. */
  readonly fingerprint: Uint8Array;

  constructor(host: string, port: number, roomId: Uint8Array, secret: Uint8Array, fingerprint: Uint8Array) {
    this.host = normalizeHost(host);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InviteError(MSG_PORT);
    if (roomId.length !== ROOM_ID_SIZE) throw new InviteError(`invite room id must be ${ROOM_ID_SIZE} bytes`);
    if (secret.length !== SECRET_SIZE) throw new InviteError(`invite room secret must be ${SECRET_SIZE} bytes`);
    if (fingerprint.length !== FINGERPRINT_SIZE) throw new InviteError(`invite fingerprint must be ${FINGERPRINT_SIZE} bytes`);
    this.port = port;
    this.roomId = Uint8Array.from(roomId);
    this.secret = Uint8Array.from(secret);
    this.fingerprint = Uint8Array.from(fingerprint);
    Object.freeze(this);
  }

  /** The room id as the control messages carry it: 16 lowercase hex digits. */
  get roomIdHex(): string {
    return toHex(this.roomId);
  }

  toBytes(): Uint8Array {
    const host = utf8.encode(this.host); // ASCII after normalizeHost
    const body = concat(Uint8Array.of(INVITE_VERSION, host.length), host, u16(this.port), this.roomId, this.secret, this.fingerprint);
    return concat(body, checksum(body));
  }

  encode(): string {
    const code = b32encode(this.toBytes());
    const groups: string[] = [];
    for (let i = 0; i < code.length; i += GROUP_SIZE) groups.push(code.slice(i, i + GROUP_SIZE));
    return INVITE_PREFIX + groups.join("-");
  }

  /** The secret grants entry to the room: keep it out of logs. */
  toString(): string {
    return `Invite(host=${this.host}, port=${this.port}, room_id=${this.roomIdHex}, fingerprint=${toHex(this.fingerprint)})`;
  }

  /** Parses a typed or pasted code; InviteError with PROTOCOL.md 7.4's messages, in its order. */
  static parse(text: string): Invite {
    const [code, prefixed] = clean(text);
    if (!code) throw new InviteError(MSG_EMPTY);
    const meant = looksLikeInvite(code, prefixed);
    for (const ch of code) if (!DECODE.has(ch)) throw new InviteError(meant ? MSG_CHARS : MSG_NOT_INVITE);
    const [data, cleanPad] = b32decode(code);
    if (data.length < 2) throw new InviteError(meant ? MSG_TRUNCATED : MSG_NOT_INVITE);
    const body = data.slice(0, -CHECKSUM_SIZE);
    const check = data.slice(-CHECKSUM_SIZE);
    const hostLen = data[1] as number;
    const declared = FIXED_SIZE + hostLen;
    // (Python slices: with fewer than 4 bytes the "check" is all of them and body empty.)
    const goodSum = data.length > CHECKSUM_SIZE ? equal(checksum(body), check) : equal(checksum(new Uint8Array(0)), data);
    if (!cleanPad || !goodSum) {
      if (!meant) throw new InviteError(MSG_NOT_INVITE);
      // Tell a cut-off code from a mistyped one by the length it claims.
      if (data.length < Math.max(MIN_SIZE, declared)) throw new InviteError(MSG_TRUNCATED);
      throw new InviteError(MSG_CHECKSUM);
    }
    // Checked before the layout: a newer version may lay things out differently.
    if (data[0] !== INVITE_VERSION) throw new InviteError(`unsupported invite version ${data[0]}`);
    if (data.length !== declared || hostLen === 0) throw new InviteError(MSG_MALFORMED);
    let pos = 2 + hostLen;
    const hostBytes = data.slice(2, pos);
    if (hostBytes.some((b) => b > 0x7f)) throw new InviteError(MSG_HOST);
    const host = String.fromCharCode(...hostBytes);
    const port = readU16(data, pos);
    pos += 2;
    const roomId = data.slice(pos, pos + ROOM_ID_SIZE);
    pos += ROOM_ID_SIZE;
    const secret = data.slice(pos, pos + SECRET_SIZE);
    pos += SECRET_SIZE;
    const fp = data.slice(pos, pos + FINGERPRINT_SIZE);
    return new Invite(host, port, roomId, secret, fp);
  }
}
