// Noise protocol framework (revision 34) for the two handshakes Bangor uses:
// Noise_XX_25519_ChaChaPoly_BLAKE2s (control channel) and
// Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s (pair channels). Pure state machines, no I/O:
// the Python side uses the `noiseprotocol` package; this follows the spec's
// CipherState / SymmetricState / HandshakeState objects one to one so the two agree
// byte for byte (checked against the cacophony vectors and against Python).

import { x25519 } from "@noble/curves/ed25519.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { concat, utf8 } from "./bytes.ts";
import { HandshakeError, LocalProtocolError, RemoteProtocolError } from "./errors.ts";

export const PROTOCOL_XX = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
export const PROTOCOL_XXPSK3 = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/** The control channel's prologue (noise.py PROLOGUE): binds protocol and version. */
export const PROLOGUE = utf8.encode("bangor/1 " + PROTOCOL_XX);
export const KEY_SIZE = 32; // X25519 keys (DHLEN) and ChaChaPoly keys
export const HASH_SIZE = 32; // BLAKE2s-256 (HASHLEN)
export const TAG_SIZE = 16;
export const PSK_SIZE = 32;
/** Noise's limit on any message, handshake or transport. */
export const MAX_NOISE_MESSAGE = 65535;
// The spec reserves nonce 2**64-1; a JS number counts exactly only to 2**53-1, which no
// session reaches, so that is our ceiling.
const MAX_NONCE = Number.MAX_SAFE_INTEGER;

/** A transport message (or a handshake message after keys exist) failed its tag. */
export class NoiseAuthError extends RemoteProtocolError {}

export type Pattern = "XX" | "XXpsk3";
type Token = "e" | "s" | "ee" | "es" | "se" | "ss" | "psk";
const PATTERNS: Record<Pattern, { name: string; messages: Token[][] }> = {
  XX: { name: PROTOCOL_XX, messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]] },
  XXpsk3: { name: PROTOCOL_XXPSK3, messages: [["e"], ["e", "ee", "s", "es"], ["s", "se", "psk"]] },
};

export function generatePrivateKey(): Uint8Array {
  return randomBytes(KEY_SIZE);
}

export function publicKey(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_SIZE) throw new LocalProtocolError(`X25519 private key must be ${KEY_SIZE} bytes`);
  return x25519.getPublicKey(privateKey);
}

function dh(privateKey: Uint8Array, publicKey_: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(privateKey, publicKey_);
  } catch {
    // noble refuses an all-zero result (a low-order point from the peer), as Python does.
    throw new HandshakeError("noise handshake failed (bad message or wrong key)");
  }
}

export function hash(data: Uint8Array): Uint8Array {
  return blake2s(data);
}

export function hmacHash(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(blake2s, key, data);
}

/** Noise's HKDF (spec 4.3): two or three outputs from chaining key and input key material. */
export function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const tempKey = hmacHash(chainingKey, ikm);
  const out1 = hmacHash(tempKey, Uint8Array.of(1));
  const out2 = hmacHash(tempKey, concat(out1, Uint8Array.of(2)));
  if (outputs === 2) return [out1, out2];
  return [out1, out2, hmacHash(tempKey, concat(out2, Uint8Array.of(3)))];
}

function nonceBytes(n: number): Uint8Array {
  // 32 zero bits then the 64-bit counter, little-endian (ChaChaPoly in Noise).
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(n), true);
  return out;
}

export class CipherState {
  #key: Uint8Array | null;
  #nonce = 0;

  constructor(key: Uint8Array | null = null) {
    if (key !== null && key.length !== KEY_SIZE) throw new LocalProtocolError(`cipher key must be ${KEY_SIZE} bytes`);
    this.#key = key === null ? null : Uint8Array.from(key);
  }

  hasKey(): boolean {
    return this.#key !== null;
  }

  get nonce(): number {
    return this.#nonce;
  }

  setNonce(nonce: number): void {
    if (!Number.isSafeInteger(nonce) || nonce < 0) throw new LocalProtocolError("bad nonce");
    this.#nonce = nonce;
  }

  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#key === null) return Uint8Array.from(plaintext);
    if (this.#nonce >= MAX_NONCE) throw new LocalProtocolError("noise nonce exhausted");
    const out = chacha20poly1305(this.#key, nonceBytes(this.#nonce), ad).encrypt(plaintext);
    this.#nonce++;
    return out;
  }

  /** Throws NoiseAuthError on a bad tag; the nonce then does not move (spec 5.1). */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#key === null) return Uint8Array.from(ciphertext);
    if (this.#nonce >= MAX_NONCE) throw new LocalProtocolError("noise nonce exhausted");
    if (ciphertext.length < TAG_SIZE) throw new NoiseAuthError("noise message shorter than its tag");
    let out: Uint8Array;
    try {
      out = chacha20poly1305(this.#key, nonceBytes(this.#nonce), ad).decrypt(ciphertext);
    } catch {
      throw new NoiseAuthError("noise message failed authentication");
    }
    this.#nonce++;
    return out;
  }

  /** Transport helpers: no associated data, as the control channel uses them. */
  encrypt(plaintext: Uint8Array): Uint8Array {
    return this.encryptWithAd(new Uint8Array(0), plaintext);
  }

  decrypt(ciphertext: Uint8Array): Uint8Array {
    return this.decryptWithAd(new Uint8Array(0), ciphertext);
  }

  rekey(): void {
    if (this.#key === null) return;
    // REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, zerolen, 32 zeros) (spec 4.2).
    const max = new Uint8Array(12);
    max.fill(0xff, 4);
    this.#key = chacha20poly1305(this.#key, max, new Uint8Array(0)).encrypt(new Uint8Array(32)).slice(0, 32);
  }
}

export class SymmetricState {
  #cipher = new CipherState();
  #ck: Uint8Array;
  #h: Uint8Array;

  constructor(protocolName: string) {
    const name = utf8.encode(protocolName);
    if (name.length <= HASH_SIZE) {
      this.#h = new Uint8Array(HASH_SIZE);
      this.#h.set(name);
    } else {
      this.#h = hash(name);
    }
    this.#ck = Uint8Array.from(this.#h);
  }

  get handshakeHash(): Uint8Array {
    return Uint8Array.from(this.#h);
  }

  get cipher(): CipherState {
    return this.#cipher;
  }

  #setKey(key: Uint8Array): void {
    this.#cipher = new CipherState(key);
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = hkdf(this.#ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.#ck = ck;
    this.#setKey(tempK);
  }

  mixHash(data: Uint8Array): void {
    this.#h = hash(concat(this.#h, data));
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, tempK] = hkdf(this.#ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.#ck = ck;
    this.mixHash(tempH);
    this.#setKey(tempK);
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ct = this.cipher.encryptWithAd(this.#h, plaintext);
    this.mixHash(ct);
    return ct;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const pt = this.cipher.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return pt;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.#ck, new Uint8Array(0), 2) as [Uint8Array, Uint8Array];
    return [new CipherState(k1), new CipherState(k2)];
  }
}

export interface HandshakeOptions {
  pattern: Pattern;
  initiator: boolean;
  /** Our static X25519 private key. */
  staticPrivate: Uint8Array;
  prologue?: Uint8Array;
  /** Required for XXpsk3, refused for XX. */
  psk?: Uint8Array;
  /** Fixed ephemeral private key: test vectors only. */
  ephemeralPrivate?: Uint8Array;
}

/** Transport keys after the handshake, already oriented for this side. */
export interface TransportKeys {
  send: CipherState;
  receive: CipherState;
}

export class HandshakeState {
  readonly initiator: boolean;
  readonly pattern: Pattern;
  readonly #sym: SymmetricState;
  readonly #s: Uint8Array;
  readonly #sPub: Uint8Array;
  readonly #fixedE: Uint8Array | null;
  readonly #psk: Uint8Array | null;
  #e: Uint8Array | null = null;
  #re: Uint8Array | null = null;
  #rs: Uint8Array | null = null;
  #index = 0; // next message of the pattern
  #failed = false;
  #split: [CipherState, CipherState] | null = null;

  constructor(options: HandshakeOptions) {
    const { pattern, initiator, staticPrivate, prologue = new Uint8Array(0), psk, ephemeralPrivate } = options;
    this.pattern = pattern;
    this.initiator = initiator;
    if (pattern === "XXpsk3") {
      if (psk === undefined || psk.length !== PSK_SIZE) throw new LocalProtocolError(`psk must be ${PSK_SIZE} bytes`);
    } else if (psk !== undefined) {
      throw new LocalProtocolError(`${pattern} takes no psk`);
    }
    this.#psk = psk === undefined ? null : Uint8Array.from(psk);
    this.#s = Uint8Array.from(staticPrivate);
    this.#sPub = publicKey(staticPrivate);
    if (ephemeralPrivate !== undefined && ephemeralPrivate.length !== KEY_SIZE) {
      throw new LocalProtocolError(`ephemeral key must be ${KEY_SIZE} bytes`);
    }
    this.#fixedE = ephemeralPrivate === undefined ? null : Uint8Array.from(ephemeralPrivate);
    this.#sym = new SymmetricState(PATTERNS[pattern].name);
    this.#sym.mixHash(prologue);
    // XX has no pre-messages.
  }

  get protocolName(): string {
    return PATTERNS[this.pattern].name;
  }

  get localStatic(): Uint8Array {
    return Uint8Array.from(this.#sPub);
  }

  /** The peer's static public key once its "s" token was read (authenticated only at the end). */
  get remoteStatic(): Uint8Array | null {
    return this.#rs === null ? null : Uint8Array.from(this.#rs);
  }

  get isComplete(): boolean {
    return this.#split !== null;
  }

  get messagesDone(): number {
    return this.#index;
  }

  /** Whether the next handshake message is ours to write. */
  get isMyTurn(): boolean {
    return !this.isComplete && this.#index % 2 === (this.initiator ? 0 : 1);
  }

  /** Noise handshake hash h: unique per session, NOT secret. */
  getHandshakeHash(): Uint8Array {
    return this.#sym.handshakeHash;
  }

  /** [initiator->responder, responder->initiator] (Noise's Split); only after completion. */
  split(): [CipherState, CipherState] {
    if (this.#split === null) throw new LocalProtocolError("handshake not complete");
    return this.#split;
  }

  transport(): TransportKeys {
    const [c1, c2] = this.split();
    return this.initiator ? { send: c1, receive: c2 } : { send: c2, receive: c1 };
  }

  #check(writing: boolean): Token[] {
    if (this.#failed) throw new LocalProtocolError("noise handshake failed earlier");
    if (this.isComplete) throw new LocalProtocolError("handshake already complete");
    if (this.isMyTurn !== writing) {
      throw new LocalProtocolError(writing ? "not our turn to write" : "not our turn to read");
    }
    return PATTERNS[this.pattern].messages[this.#index] as Token[];
  }

  #dhToken(token: "ee" | "es" | "se" | "ss"): Uint8Array {
    const e = this.#e as Uint8Array;
    const re = this.#re;
    const rs = this.#rs;
    const need = (k: Uint8Array | null): Uint8Array => {
      if (k === null) throw new LocalProtocolError(`missing key for ${token}`);
      return k;
    };
    switch (token) {
      case "ee":
        return dh(e, need(re));
      case "ss":
        return dh(this.#s, need(rs));
      case "es":
        return this.initiator ? dh(e, need(rs)) : dh(this.#s, need(re));
      case "se":
        return this.initiator ? dh(this.#s, need(re)) : dh(e, need(rs));
    }
  }

  #finishStep(): void {
    this.#index++;
    if (this.#index === PATTERNS[this.pattern].messages.length) this.#split = this.#sym.split();
  }

  writeMessage(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const tokens = this.#check(true);
    const parts: Uint8Array[] = [];
    try {
      for (const token of tokens) {
        if (token === "e") {
          this.#e = this.#fixedE ?? generatePrivateKey();
          const pub = publicKey(this.#e);
          parts.push(pub);
          this.#sym.mixHash(pub);
          if (this.#psk !== null) this.#sym.mixKey(pub);
        } else if (token === "s") {
          parts.push(this.#sym.encryptAndHash(this.#sPub));
        } else if (token === "psk") {
          this.#sym.mixKeyAndHash(this.#psk as Uint8Array);
        } else {
          this.#sym.mixKey(this.#dhToken(token));
        }
      }
      parts.push(this.#sym.encryptAndHash(payload));
    } catch (err) {
      this.#failed = true;
      throw err;
    }
    const message = concat(...parts);
    if (message.length > MAX_NOISE_MESSAGE) {
      this.#failed = true;
      throw new LocalProtocolError(`noise message of ${message.length} bytes exceeds ${MAX_NOISE_MESSAGE}`);
    }
    this.#finishStep();
    return message;
  }

  /** Shortest valid form of the next message we read (empty payload). */
  #minLength(tokens: Token[]): number {
    let hasKey = this.#sym.cipher.hasKey();
    let n = 0;
    for (const token of tokens) {
      if (token === "e") {
        n += KEY_SIZE;
        if (this.#psk !== null) hasKey = true;
      } else if (token === "s") {
        n += KEY_SIZE + (hasKey ? TAG_SIZE : 0);
      } else {
        hasKey = true;
      }
    }
    return n + (hasKey ? TAG_SIZE : 0);
  }

  /**
   * Reads the peer's next handshake message and returns its payload. A message too short
   * or too long is refused before it touches the state; any later failure (bad tag, bad
   * key) is a HandshakeError and fails the handshake for good.
   */
  readMessage(message: Uint8Array): Uint8Array {
    const tokens = this.#check(false);
    const min = this.#minLength(tokens);
    if (message.length < min) {
      throw new HandshakeError(`noise handshake message of ${message.length} bytes is shorter than ${min}`);
    }
    if (message.length > MAX_NOISE_MESSAGE) {
      throw new HandshakeError(`noise handshake message of ${message.length} bytes exceeds ${MAX_NOISE_MESSAGE}`);
    }
    let at = 0;
    const take = (n: number): Uint8Array => {
      const out = message.slice(at, at + n);
      at += n;
      return out;
    };
    let payload: Uint8Array;
    try {
      for (const token of tokens) {
        if (token === "e") {
          this.#re = take(KEY_SIZE);
          this.#sym.mixHash(this.#re);
          if (this.#psk !== null) this.#sym.mixKey(this.#re);
        } else if (token === "s") {
          const n = KEY_SIZE + (this.#sym.cipher.hasKey() ? TAG_SIZE : 0);
          this.#rs = this.#sym.decryptAndHash(take(n));
        } else if (token === "psk") {
          this.#sym.mixKeyAndHash(this.#psk as Uint8Array);
        } else {
          this.#sym.mixKey(this.#dhToken(token));
        }
      }
      payload = this.#sym.decryptAndHash(message.slice(at));
    } catch (err) {
      this.#failed = true;
      if (err instanceof HandshakeError) throw err;
      throw new HandshakeError("noise handshake failed (bad message or wrong key)");
    }
    this.#finishStep();
    return payload;
  }
}
