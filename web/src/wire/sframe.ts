// SFrame (RFC 9605) end-to-end media encryption, sans-I/O; mirrors src/bangor/wire/sframe.py.
//
// A frame is header || AEAD(plaintext). The header carries the key id (KID) and the
// per-key counter (CTR) in the variable-length form of RFC 9605 section 4.3:
//   config byte: X(1) K(3) Y(1) C(3); X=0: KID = K, X=1: KID in K+1 bytes (big-endian);
//   Y=0: CTR = C, Y=1: CTR in C+1 bytes.
// Keys come from a base key per KID (4.4.2): secret = HKDF-Extract("", base_key), then
// key and salt are HKDF-Expanded with labels binding the KID and the suite. Nonce = salt
// XOR CTR; AAD = header || metadata (4.4.3). Only AES_128_GCM_SHA256_128 (0x0004).
//
// KID and CTR are uint64 on the wire, so they are bigints here (exact, like Python's int).
// AES-GCM runs through WebCrypto, which is async: seal/open return promises. Each key is
// imported once, when its SFrameKey is built; everything before the AEAD call (CTR
// choice, header) happens synchronously so concurrent calls never share a CTR.

import { hmac } from "@noble/hashes/hmac.js";
import { expand } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equal, utf8 } from "./bytes.ts";
import { LocalProtocolError, PacketError } from "./errors.ts";
import { REPLAY_WINDOW, ReplayWindow } from "./replay.ts";

// --- wire limits (RFC 9605 section 4.3) ---
export const VALUE_LIMIT = 1n << 64n; // KID and CTR are uint64
export const MAX_VALUE_BYTES = 8;
export const INLINE_LIMIT = 8; // values below this live in the config byte itself
export const CONFIG_SIZE = 1;
export const MAX_HEADER_SIZE = CONFIG_SIZE + 2 * MAX_VALUE_BYTES;
const X_BIT = 0x80;
const Y_BIT = 0x08;
const K_SHIFT = 4;
const LOW3 = 0x07;

// --- key schedule labels (RFC 9605 sections 4.4.2 and 5.1) ---
export const KEY_LABEL = utf8.encode("SFrame 1.0 Secret key ");
export const SALT_LABEL = utf8.encode("SFrame 1.0 Secret salt ");
export const RATCHET_LABEL = utf8.encode("SFrame 1.0 Ratchet");
export const KID_LABEL_SIZE = 8;
export const SUITE_LABEL_SIZE = 2;
export const MIN_BASE_KEY_SIZE = 16;

// --- Bangor's KID layout: sender index | generation | ratchet step (sframe.py) ---
export const RATCHET_STEP_BITS = 8;
export const GENERATION_BITS = 8;
export const SENDER_INDEX_BITS = 64 - GENERATION_BITS - RATCHET_STEP_BITS;
const GENERATION_SHIFT = BigInt(RATCHET_STEP_BITS);
const SENDER_SHIFT = BigInt(GENERATION_BITS + RATCHET_STEP_BITS);

/** One row of the SFrame cipher suite registry (RFC 9605 section 4.5). */
export interface CipherSuite {
  readonly suiteId: number;
  readonly keySize: number; // Nk
  readonly nonceSize: number; // Nn
  readonly tagSize: number; // Nt
  readonly hashSize: number; // Nh
}

export const AES_128_GCM_SHA256_128: CipherSuite = Object.freeze({
  suiteId: 0x0004,
  keySize: 16,
  nonceSize: 12,
  tagSize: 16,
  hashSize: 32,
});
export const DEFAULT_SUITE = AES_128_GCM_SHA256_128;
export const TAG_SIZE = DEFAULT_SUITE.tagSize;

// --- big-endian bigint helpers ---

function bitLength(value: bigint): number {
  return value === 0n ? 0 : value.toString(2).length;
}

/** `value` as exactly `size` big-endian bytes (the caller checked it fits). */
export function bigToBytes(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let v = value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

export function bytesToBig(data: Uint8Array): bigint {
  let v = 0n;
  for (const b of data) v = (v << 8n) | BigInt(b);
  return v;
}

function checkValue(name: string, value: bigint): void {
  if (typeof value !== "bigint" || value < 0n || value >= VALUE_LIMIT) {
    throw new LocalProtocolError(`SFrame ${name} ${String(value)} is outside 0..2**64-1`);
  }
}

/** Config-byte bits and extension bytes for one KID or CTR value. */
function encodeValue(value: bigint, shift: number, extBit: number): [number, Uint8Array] {
  if (value < BigInt(INLINE_LIMIT)) return [Number(value) << shift, new Uint8Array(0)];
  const size = (bitLength(value) + 7) >> 3;
  return [extBit | ((size - 1) << shift), bigToBytes(value, size)];
}

export interface ParsedHeader {
  readonly kid: bigint;
  readonly ctr: bigint;
  /** Header length in bytes. */
  readonly size: number;
}

/** KID, CTR and header length from the start of `data`; PacketError if malformed. */
export function parseHeader(data: Uint8Array): ParsedHeader {
  if (data.length === 0) throw new PacketError("truncated SFrame header: empty frame");
  const config = data[0] as number;
  let pos = CONFIG_SIZE;
  const k = (config >> K_SHIFT) & LOW3;
  let kid: bigint;
  if (config & X_BIT) {
    const end = pos + k + 1;
    if (data.length < end) throw new PacketError("truncated SFrame header: KID cut short");
    kid = bytesToBig(data.subarray(pos, end));
    // Only the minimal encoding is accepted, so each (KID, CTR) has one header.
    if (kid < BigInt(INLINE_LIMIT) || data[pos] === 0) {
      throw new PacketError("malformed SFrame header: KID not minimally encoded");
    }
    pos = end;
  } else {
    kid = BigInt(k);
  }
  const c = config & LOW3;
  let ctr: bigint;
  if (config & Y_BIT) {
    const end = pos + c + 1;
    if (data.length < end) throw new PacketError("truncated SFrame header: CTR cut short");
    ctr = bytesToBig(data.subarray(pos, end));
    if (ctr < BigInt(INLINE_LIMIT) || data[pos] === 0) {
      throw new PacketError("malformed SFrame header: CTR not minimally encoded");
    }
    pos = end;
  } else {
    ctr = BigInt(c);
  }
  return { kid, ctr, size: pos };
}

/** An SFrame header: key id and counter, both uint64. */
export class SFrameHeader {
  readonly kid: bigint;
  readonly ctr: bigint;

  constructor(kid: bigint, ctr: bigint) {
    checkValue("KID", kid);
    checkValue("CTR", ctr);
    this.kid = kid;
    this.ctr = ctr;
    Object.freeze(this);
  }

  serialize(): Uint8Array {
    const [kidBits, kidBytes] = encodeValue(this.kid, K_SHIFT, X_BIT);
    const [ctrBits, ctrBytes] = encodeValue(this.ctr, 0, Y_BIT);
    return concat(new Uint8Array([kidBits | ctrBits]), kidBytes, ctrBytes);
  }

  /** Header at the start of `data` and its length in bytes. */
  static parse(data: Uint8Array): [SFrameHeader, number] {
    const { kid, ctr, size } = parseHeader(data);
    return [new SFrameHeader(kid, ctr), size];
  }
}

// --- key schedule ---

/** HKDF-Extract with an empty salt: HMAC-SHA256 keyed with the empty string. */
export function extract(baseKey: Uint8Array): Uint8Array {
  return hmac(sha256, new Uint8Array(0), baseKey);
}

export function expandLabel(secret: Uint8Array, label: Uint8Array, length: number): Uint8Array {
  return expand(sha256, secret, label, length);
}

function suiteBytes(suite: CipherSuite): Uint8Array {
  return new Uint8Array([(suite.suiteId >> 8) & 0xff, suite.suiteId & 0xff]);
}

/** [sframe_key, sframe_salt] for `kid` per RFC 9605 section 4.4.2. */
export function deriveKeySalt(
  baseKey: Uint8Array,
  kid: bigint,
  suite: CipherSuite = DEFAULT_SUITE,
): [Uint8Array, Uint8Array] {
  checkValue("KID", kid);
  const secret = extract(baseKey);
  const context = concat(bigToBytes(kid, KID_LABEL_SIZE), suiteBytes(suite));
  const key = expandLabel(secret, concat(KEY_LABEL, context), suite.keySize);
  const salt = expandLabel(secret, concat(SALT_LABEL, context), suite.nonceSize);
  return [key, salt];
}

/** Next base key in a sender's hash ratchet (RFC 9605 section 5.1: extract, then expand to Nh). */
export function ratchet(baseKey: Uint8Array, suite: CipherSuite = DEFAULT_SUITE): Uint8Array {
  return expandLabel(extract(baseKey), RATCHET_LABEL, suite.hashSize);
}

// --- Bangor KID layout ---

/** KID = sender_index << 16 | generation << 8 | ratchet step. */
export function makeKid(senderIndex: bigint, generation: number, step: number): bigint {
  if (senderIndex < 0n || senderIndex >= 1n << BigInt(SENDER_INDEX_BITS)) {
    throw new LocalProtocolError(`sender index ${senderIndex} does not fit in a KID`);
  }
  if (!Number.isInteger(generation) || generation < 0 || generation >= 1 << GENERATION_BITS) {
    throw new LocalProtocolError(`key generation ${generation} does not fit in a KID`);
  }
  if (!Number.isInteger(step) || step < 0 || step >= 1 << RATCHET_STEP_BITS) {
    throw new LocalProtocolError(`ratchet step ${step} does not fit in a KID`);
  }
  return (senderIndex << SENDER_SHIFT) | (BigInt(generation) << GENERATION_SHIFT) | BigInt(step);
}

/** [sender index, generation, ratchet step] of a KID built by makeKid. */
export function splitKid(kid: bigint): [bigint, number, number] {
  checkValue("KID", kid);
  return [
    kid >> SENDER_SHIFT,
    Number((kid >> GENERATION_SHIFT) & BigInt((1 << GENERATION_BITS) - 1)),
    Number(kid & BigInt((1 << RATCHET_STEP_BITS) - 1)),
  ];
}

// --- per-key state ---

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (s === undefined) throw new LocalProtocolError("WebCrypto (crypto.subtle) is not available");
  return s;
}

/** Derived key material for one KID; the AES key is imported into WebCrypto once. */
export class SFrameKey {
  readonly kid: bigint;
  readonly suite: CipherSuite;
  private readonly cryptoKey: Promise<CryptoKey>;
  private readonly salt: Uint8Array;
  private readonly kidBits: number;
  private readonly kidBytes: Uint8Array;

  constructor(kid: bigint, baseKey: Uint8Array, suite: CipherSuite = DEFAULT_SUITE) {
    if (baseKey.length < MIN_BASE_KEY_SIZE) {
      throw new LocalProtocolError(`SFrame base key must be at least ${MIN_BASE_KEY_SIZE} bytes`);
    }
    const [key, salt] = deriveKeySalt(baseKey, kid, suite);
    this.kid = kid;
    this.suite = suite;
    this.salt = salt;
    [this.kidBits, this.kidBytes] = encodeValue(kid, K_SHIFT, X_BIT);
    this.cryptoKey = subtle().importKey("raw", key as BufferSource, { name: "AES-GCM" }, false, [
      "encrypt",
      "decrypt",
    ]);
    // Awaited by seal/open; a key that is never used must not leave an unhandled rejection.
    this.cryptoKey.catch(() => undefined);
  }

  /** salt XOR CTR (left-padded to the nonce size), RFC 9605 section 4.4.3. */
  nonce(ctr: bigint): Uint8Array {
    const out = Uint8Array.from(this.salt);
    const c = bigToBytes(ctr, MAX_VALUE_BYTES);
    const off = out.length - MAX_VALUE_BYTES;
    for (let i = 0; i < MAX_VALUE_BYTES; i++) out[off + i] = (out[off + i] as number) ^ (c[i] as number);
    return out;
  }

  /** Encoded header for this KID and `ctr` (same bytes as SFrameHeader.serialize). */
  header(ctr: bigint): Uint8Array {
    if (ctr < BigInt(INLINE_LIMIT)) {
      return concat(new Uint8Array([this.kidBits | Number(ctr)]), this.kidBytes);
    }
    const size = (bitLength(ctr) + 7) >> 3;
    return concat(new Uint8Array([this.kidBits | Y_BIT | (size - 1)]), this.kidBytes, bigToBytes(ctr, size));
  }

  /** Complete frame: header || ciphertext || tag. The caller owns CTR uniqueness. */
  async seal(ctr: bigint, metadata: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    checkValue("CTR", ctr);
    const header = this.header(ctr);
    const sealed = await subtle().encrypt(
      { name: "AES-GCM", iv: this.nonce(ctr) as BufferSource, additionalData: concat(header, metadata) as BufferSource, tagLength: 128 },
      await this.cryptoKey,
      plaintext as BufferSource,
    );
    return concat(header, new Uint8Array(sealed));
  }

  /** Plaintext of `ciphertext` (with tag); PacketError if it does not verify. */
  async open(ctr: bigint, header: Uint8Array, metadata: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
    if (ciphertext.length < this.suite.tagSize) {
      throw new PacketError("truncated SFrame frame: shorter than the tag");
    }
    let plain: ArrayBuffer;
    try {
      plain = await subtle().decrypt(
        { name: "AES-GCM", iv: this.nonce(ctr) as BufferSource, additionalData: concat(header, metadata) as BufferSource, tagLength: 128 },
        await this.cryptoKey,
        ciphertext as BufferSource,
      );
    } catch {
      throw new PacketError("SFrame authentication failed");
    }
    return new Uint8Array(plain);
  }
}

interface SendState {
  key: SFrameKey;
  ctr: bigint;
}

interface ReceiveState {
  key: SFrameKey;
  baseKey: Uint8Array;
  window: ReplayWindow;
}

/**
 * Send and receive keys of one participant, indexed by KID. A send key's CTR starts at 0
 * and never repeats, so a KID once used for sending can never be added again.
 */
export class SFrameContext {
  readonly suite: CipherSuite;
  private readonly sendLimit: bigint;
  private readonly replayWindow: number;
  private readonly send = new Map<bigint, SendState>();
  private readonly retiredSend = new Set<bigint>();
  private readonly receive = new Map<bigint, ReceiveState>();

  constructor(
    suite: CipherSuite = DEFAULT_SUITE,
    { sendLimit = VALUE_LIMIT, replayWindow = REPLAY_WINDOW }: { sendLimit?: bigint; replayWindow?: number } = {},
  ) {
    if (!(sendLimit > 0n && sendLimit <= VALUE_LIMIT)) {
      throw new LocalProtocolError("SFrame send limit must be in 1..2**64");
    }
    this.suite = suite;
    this.sendLimit = sendLimit;
    this.replayWindow = replayWindow;
  }

  addSendKey(kid: bigint, baseKey: Uint8Array): void {
    if (this.send.has(kid) || this.retiredSend.has(kid)) {
      throw new LocalProtocolError(`SFrame send key ${kid} was already used (nonce reuse)`);
    }
    this.send.set(kid, { key: new SFrameKey(kid, baseKey, this.suite), ctr: 0n });
  }

  /** Forget a send key (forward secrecy); its KID stays unusable for sending. */
  removeSendKey(kid: bigint): void {
    if (!this.send.delete(kid)) throw new LocalProtocolError(`no SFrame send key ${kid}`);
    this.retiredSend.add(kid);
  }

  /** Install a receive key; re-adding the same key keeps its replay window. */
  addReceiveKey(kid: bigint, baseKey: Uint8Array): void {
    const old = this.receive.get(kid);
    if (old !== undefined) {
      if (equal(old.baseKey, baseKey)) return;
      throw new LocalProtocolError(`SFrame receive key ${kid} exists with other key material`);
    }
    const key = new SFrameKey(kid, baseKey, this.suite);
    this.receive.set(kid, { key, baseKey: Uint8Array.from(baseKey), window: new ReplayWindow(this.replayWindow) });
  }

  removeReceiveKey(kid: bigint): void {
    if (!this.receive.delete(kid)) throw new LocalProtocolError(`no SFrame receive key ${kid}`);
  }

  hasReceiveKey(kid: bigint): boolean {
    return this.receive.has(kid);
  }

  /** Frame of `plaintext`; the CTR is taken synchronously, so concurrent calls never share one. */
  encrypt(kid: bigint, metadata: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    const state = this.send.get(kid);
    if (state === undefined) throw new LocalProtocolError(`no SFrame send key ${kid}`);
    const ctr = state.ctr;
    if (ctr >= this.sendLimit) throw new LocalProtocolError(`SFrame send key ${kid} is exhausted: add a new key`);
    state.ctr = ctr + 1n;
    return state.key.seal(ctr, metadata, plaintext);
  }

  /** [KID, plaintext] of `frame`; PacketError if unknown, forged or replayed. */
  async decrypt(metadata: Uint8Array, frame: Uint8Array): Promise<[bigint, Uint8Array]> {
    const { kid, ctr, size } = parseHeader(frame);
    const state = this.receive.get(kid);
    if (state === undefined) throw new PacketError("unknown SFrame key id");
    const plaintext = await state.key.open(ctr, frame.subarray(0, size), metadata, frame.subarray(size));
    // Only after the tag verified, so forgeries cannot move the window.
    if (!state.window.accept(ctr)) throw new PacketError("replayed SFrame counter");
    return [kid, plaintext];
  }
}
