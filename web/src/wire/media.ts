// Media datagrams and their hop crypto between one client and the server (PROTOCOL.md 4
// and 5, wire/media.py). Over WebTransport each datagram carries exactly one of these.
//
//   0 magic | 1 type | 2..5 session id | 6..13 counter | 14.. ChaCha20-Poly1305(payload)+tag
//
// The 14-byte header is the AEAD's associated data; the nonce is 4 zero bytes then the
// big-endian counter. Each direction has its own key (derived from welcome.media_secret),
// so the two never share a nonce. The payload is opaque here (an SFrame frame).

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, readU32, readU64, u32, u64, utf8 } from "./bytes.ts";
import { LocalProtocolError, PacketError } from "./errors.ts";
import { REPLAY_WINDOW, ReplayWindow } from "./replay.ts";

export const MEDIA_VERSION = 1;
export const MAGIC = 0xc0 | MEDIA_VERSION; // 0xC1: above any STUN first byte
export const HEADER_SIZE = 14;
export const TAG_SIZE = 16;
export const HOP_KEY_SIZE = 32;
export const MAX_DATAGRAM = 1400; // under common path MTUs without fragmentation
export const MIN_DATAGRAM = HEADER_SIZE + TAG_SIZE;
export const MAX_PAYLOAD = MAX_DATAGRAM - HEADER_SIZE - TAG_SIZE;
export const MAX_SESSION_ID = 2 ** 32 - 1;
/** The sealer stops one short of 2**64 - 1 so a counter can never wrap or repeat. */
export const MAX_COUNTER = 2n ** 64n - 2n;

export const MEDIA_SECRET_SIZE = 32;
export const MEDIA_KDF_SALT = utf8.encode("bangor media v1");
export const MEDIA_KDF_INFO_C2S = utf8.encode("c2s");
export const MEDIA_KDF_INFO_S2C = utf8.encode("s2c");

export const PacketType = {
  VOICE: 1,
  KEEPALIVE: 2,
  KEEPALIVE_ACK: 3,
  /** Client to server: voice for every other member except those listed. */
  VOICE_EXCEPT: 4,
  /** Member to member, on a direct path (not used over WebTransport). */
  PROBE: 5,
  PROBE_ACK: 6,
} as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];
const TYPES = new Set<number>(Object.values(PacketType));

export interface MediaHeader {
  readonly type: PacketType;
  readonly sessionId: number;
  readonly counter: bigint;
}

function checkSessionId(sessionId: number): void {
  if (!Number.isInteger(sessionId) || sessionId < 0 || sessionId > MAX_SESSION_ID) {
    throw new LocalProtocolError("session id out of range");
  }
}

export function serializeHeader(header: MediaHeader): Uint8Array {
  checkSessionId(header.sessionId);
  if (!TYPES.has(header.type) || header.counter < 0n || header.counter >= 2n ** 64n) {
    throw new LocalProtocolError("media header field out of range");
  }
  return concat(Uint8Array.of(MAGIC, header.type), u32(header.sessionId), u64(header.counter));
}

/** Parses the header at the start of `data` (the rest is ignored). */
export function parseHeader(data: Uint8Array): MediaHeader {
  if (data.length < HEADER_SIZE) throw new PacketError("datagram too short");
  if (data[0] !== MAGIC) throw new PacketError("bad magic byte");
  const type = data[1] as number;
  if (!TYPES.has(type)) throw new PacketError(`unknown packet type ${type}`);
  return Object.freeze({ type: type as PacketType, sessionId: readU32(data, 2), counter: readU64(data, 6) });
}

/** Session id of a media datagram, checked only for size and magic (for routing). */
export function peekSessionId(data: Uint8Array): number {
  if (data.length < MIN_DATAGRAM) throw new PacketError("datagram too short");
  if (data[0] !== MAGIC) throw new PacketError("bad magic byte");
  return readU32(data, 2);
}

export interface MediaKeys {
  readonly clientToServer: Uint8Array;
  readonly serverToClient: Uint8Array;
}

/** HKDF-SHA256 of the session's media secret (from `welcome`) into the two hop keys. */
export function deriveMediaKeys(mediaSecret: Uint8Array): MediaKeys {
  if (mediaSecret.length !== MEDIA_SECRET_SIZE) {
    throw new LocalProtocolError(`media secret must be ${MEDIA_SECRET_SIZE} bytes`);
  }
  return Object.freeze({
    clientToServer: hkdf(sha256, mediaSecret, MEDIA_KDF_SALT, MEDIA_KDF_INFO_C2S, HOP_KEY_SIZE),
    serverToClient: hkdf(sha256, mediaSecret, MEDIA_KDF_SALT, MEDIA_KDF_INFO_S2C, HOP_KEY_SIZE),
  });
}

function checkKey(key: Uint8Array): Uint8Array {
  if (key.length !== HOP_KEY_SIZE) throw new LocalProtocolError(`media key must be ${HOP_KEY_SIZE} bytes`);
  return Uint8Array.from(key);
}

function nonceOf(header: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(12);
  nonce.set(header.subarray(6, HEADER_SIZE), 4);
  return nonce;
}

/** Seals outgoing datagrams of one direction of one session (the client: K_c2s). */
export class HopSealer {
  readonly #key: Uint8Array;
  readonly #sessionId: number;
  #counter = 0n;

  /** `counter`: where to start (tests; a session always starts at 0). */
  constructor(key: Uint8Array, sessionId: number, counter = 0n) {
    checkSessionId(sessionId);
    this.#key = checkKey(key);
    this.#sessionId = sessionId;
    this.#counter = counter;
  }

  /** The counter the next sealed packet will carry. */
  get counter(): bigint {
    return this.#counter;
  }

  seal(type: PacketType, payload: Uint8Array): Uint8Array {
    const counter = this.#counter;
    if (counter > MAX_COUNTER) throw new LocalProtocolError("media counter exhausted; rekey the session");
    if (payload.length > MAX_PAYLOAD) {
      throw new LocalProtocolError(`media payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
    }
    const header = serializeHeader({ type, sessionId: this.#sessionId, counter });
    this.#counter = counter + 1n;
    return concat(header, chacha20poly1305(this.#key, nonceOf(header), header).encrypt(payload));
  }
}

export interface OpenedPacket {
  readonly header: MediaHeader;
  readonly payload: Uint8Array;
}

/** Authenticates, decrypts and replay-checks incoming datagrams of one session (K_s2c). */
export class HopOpener {
  readonly #key: Uint8Array;
  readonly #sessionId: number;
  readonly #window: ReplayWindow;

  constructor(key: Uint8Array, sessionId: number, windowSize: number = REPLAY_WINDOW) {
    checkSessionId(sessionId);
    this.#key = checkKey(key);
    this.#sessionId = sessionId;
    this.#window = new ReplayWindow(windowSize);
  }

  /** Highest counter accepted so far (-1n before the first packet). */
  get highest(): bigint {
    return this.#window.highest;
  }

  /** Raises PacketError, in PROTOCOL.md 5.5's order; the window moves only after the tag verified. */
  open(data: Uint8Array): OpenedPacket {
    if (data.length < MIN_DATAGRAM) throw new PacketError("datagram too short");
    if (data.length > MAX_DATAGRAM) throw new PacketError("datagram too long");
    const header = parseHeader(data);
    if (header.sessionId !== this.#sessionId) throw new PacketError("wrong session id");
    const aad = data.subarray(0, HEADER_SIZE);
    let payload: Uint8Array;
    try {
      payload = chacha20poly1305(this.#key, nonceOf(aad), aad).decrypt(data.subarray(HEADER_SIZE));
    } catch {
      throw new PacketError("authentication failed");
    }
    if (!this.#window.accept(header.counter)) throw new PacketError("replayed");
    return Object.freeze({ header, payload });
  }
}

/** The client's pair for its session: seal with K_c2s, open with K_s2c. */
export function clientHop(mediaSecret: Uint8Array, sessionId: number): { sealer: HopSealer; opener: HopOpener } {
  const keys = deriveMediaKeys(mediaSecret);
  return { sealer: new HopSealer(keys.clientToServer, sessionId), opener: new HopOpener(keys.serverToClient, sessionId) };
}
