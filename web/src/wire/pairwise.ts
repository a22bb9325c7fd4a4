// End-to-end pair channel between two members of a room (sans-I/O); mirrors
// src/bangor/wire/pairwise.py and PROTOCOL.md 8.2.
//
// The server relays pair messages as opaque bytes. It cannot join or sit in the middle
// of a channel because it lacks the room secret, which enters the handshake as a Noise
// PSK (Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s). Each member's device identity key is its
// Noise static key. Prologue: room id and both session ids (no splicing across pairs).
//
//   HS1    0x01 || Noise msg 1 (-> e)               48 bytes: e(32) tag(16)
//   HS2    0x02 || Noise msg 2 (<- e, ee, s, es)    96 bytes: e(32) s(32+16) tag(16)
//   HS3    0x03 || Noise msg 3 (-> s, se, psk)      s(32+16), then channel secret (32) ||
//                                                   initiator hello, + tag(16)
//   DATA   0x04 || counter (8, BE) || ChaCha20-Poly1305(payload) + tag(16)
//   REJECT 0x05                                      no body
//
// DATA keys come from the channel secret the initiator sends in HS3 (salted with the
// handshake hash), one per direction; the nonce is 4 zero bytes || counter, the AAD the
// first 9 bytes, and a replay window moves only after a tag verified. The responder's
// DATA 0 is its hello and the key confirmation: the initiator reports the peer verified
// only then. A handshake message that fails to decrypt fails the channel for good; any
// other bad input raises PeerError and changes nothing, so injected garbage cannot kill
// a working channel. Noise comes from ./noise.ts (h14-jswire), used as is.

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, readU64, u32, u64, utf8 } from "./bytes.ts";
import { LocalProtocolError, PeerAuthError, PeerError } from "./errors.ts";
import { HandshakeState, KEY_SIZE, TAG_SIZE } from "./noise.ts";
import { MAX_PEER_MESSAGE } from "./control.ts";
import { ReplayWindow } from "./replay.ts";

export const PAIR_PROTOCOL_NAME = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
export const CHANNEL_SECRET_SIZE = 32;
export const PSK_SIZE = 32;
export const DATA_KEY_SIZE = 32;
export const KIND_SIZE = 1;
export const COUNTER_SIZE = 8;
export const DATA_HEADER_SIZE = KIND_SIZE + COUNTER_SIZE;
/** settings.MAX_PEER_MESSAGE: the limit of peer.data. */
export const MAX_MESSAGE = MAX_PEER_MESSAGE;
export const MAX_DATA_PAYLOAD = MAX_MESSAGE - DATA_HEADER_SIZE - TAG_SIZE;
// HS3 is the tightest fit for a hello: kind, encrypted s, channel secret, tag.
export const MAX_HELLO = MAX_MESSAGE - KIND_SIZE - (KEY_SIZE + TAG_SIZE) - CHANNEL_SECRET_SIZE - TAG_SIZE;
export const MAX_COUNTER = (1n << 64n) - 1n;

export const ROOM_PSK_INFO = utf8.encode("bangor/1 room psk");
export const JOIN_TOKEN_INFO = utf8.encode("bangor/1 join token");
export const JOIN_TOKEN_SIZE = 32;
export const PAIR_PROLOGUE_PREFIX = utf8.encode("bangor/1 pair ");
export const PAIR_KDF_INFO_I2R = utf8.encode("bangor/1 pair i2r");
export const PAIR_KDF_INFO_R2I = utf8.encode("bangor/1 pair r2i");
const NONCE_PAD = new Uint8Array(4);

/** First byte of every pair message. */
export const MessageKind = { HS1: 1, HS2: 2, HS3: 3, DATA: 4, REJECT: 5 } as const;
export type MessageKind = (typeof MessageKind)[keyof typeof MessageKind];
const KIND_NAMES: Record<number, string> = { 1: "HS1", 2: "HS2", 3: "HS3", 4: "DATA", 5: "REJECT" };

// Shortest Noise message each handshake step can produce (empty payload). Shorter ones
// are refused before they reach Noise, so they do not consume its state.
const NOISE_MIN: Record<number, number> = {
  [MessageKind.HS1]: KEY_SIZE + TAG_SIZE,
  [MessageKind.HS2]: KEY_SIZE + (KEY_SIZE + TAG_SIZE) + TAG_SIZE,
  [MessageKind.HS3]: KEY_SIZE + TAG_SIZE + TAG_SIZE,
};

/** The room's Noise PSK: HKDF-SHA256(ikm=secret, salt=room_id, info="bangor/1 room psk"). */
export function deriveRoomPsk(secret: Uint8Array, roomId: Uint8Array): Uint8Array {
  if (secret.length === 0) throw new LocalProtocolError("room secret is empty");
  return hkdf(sha256, secret, roomId, ROOM_PSK_INFO, PSK_SIZE);
}

/**
 * What a joiner shows the server (PROTOCOL.md 3.15): HKDF-SHA256(ikm=secret, salt=room id,
 * info="bangor/1 join token"). One-way, under its own label: the server that checks it
 * learns neither the secret nor the PSK.
 */
export function deriveJoinToken(secret: Uint8Array, roomId: Uint8Array): Uint8Array {
  if (secret.length === 0) throw new LocalProtocolError("room secret is empty");
  return hkdf(sha256, secret, roomId, JOIN_TOKEN_INFO, JOIN_TOKEN_SIZE);
}

function checkSession(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new LocalProtocolError("session id out of range");
}

/** Noise prologue binding a channel to its room and to both members' sessions. */
export function pairPrologue(roomId: Uint8Array, initiatorSession: number, responderSession: number): Uint8Array {
  checkSession(initiatorSession);
  checkSession(responderSession);
  return concat(PAIR_PROLOGUE_PREFIX, roomId, u32(initiatorSession), u32(responderSession));
}

/** The peer proved the room secret and its identity key; `hello` is authenticated. */
export class PeerVerified {
  constructor(
    readonly remoteIdentity: Uint8Array,
    readonly hello: Uint8Array,
  ) {
    Object.freeze(this);
  }
}

/** One decrypted DATA message. */
export class PeerMessage {
  constructor(readonly payload: Uint8Array) {
    Object.freeze(this);
  }
}

export type PairEvent = PeerVerified | PeerMessage;

const State = {
  IDLE: "IDLE", // initiator before start()
  AWAIT_HS1: "AWAIT_HS1", // responder
  AWAIT_HS2: "AWAIT_HS2", // initiator
  AWAIT_HS3: "AWAIT_HS3", // responder
  AWAIT_CONFIRM: "AWAIT_CONFIRM", // initiator: HS3 sent, waiting for the responder's DATA 0
  ESTABLISHED: "ESTABLISHED",
  FAILED: "FAILED",
} as const;
type State = (typeof State)[keyof typeof State];

interface Aead {
  encrypt(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  decrypt(nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array;
}

function dataAead(channelSecret: Uint8Array, handshakeHash: Uint8Array, info: Uint8Array): Aead {
  const key = hkdf(sha256, channelSecret, handshakeHash, info, DATA_KEY_SIZE);
  return {
    encrypt: (nonce, plaintext, aad) => chacha20poly1305(key, nonce, aad).encrypt(plaintext),
    decrypt: (nonce, ciphertext, aad) => chacha20poly1305(key, nonce, aad).decrypt(ciphertext),
  };
}

function checkSize(name: string, value: Uint8Array, size: number): void {
  if (value.length !== size) throw new LocalProtocolError(`${name} must be ${size} bytes`);
}

export interface PairChannelOptions {
  initiator: boolean;
  identityPrivate: Uint8Array;
  psk: Uint8Array;
  prologue: Uint8Array;
  hello: Uint8Array;
  /** Tests only. */
  ephemeralPrivate?: Uint8Array;
  /** Initiator only; random if absent. */
  channelSecret?: Uint8Array;
}

/** One end of an end-to-end channel with another member of the room. */
export class PairChannel {
  readonly initiator: boolean;
  private readonly hello: Uint8Array;
  private state: State;
  private outgoing: Uint8Array[] = [];
  private channelSecret: Uint8Array;
  private remoteStatic: Uint8Array | null = null;
  private peerHello: Uint8Array = new Uint8Array(0);
  private handshakeHash: Uint8Array = new Uint8Array(0);
  private sendAead: Aead | null = null;
  private recvAead: Aead | null = null;
  private sendCounter = 0n;
  private readonly window = new ReplayWindow();
  private readonly hs: HandshakeState;

  constructor(options: PairChannelOptions) {
    const { initiator, identityPrivate, psk, prologue, hello, ephemeralPrivate, channelSecret } = options;
    checkSize("identity key", identityPrivate, KEY_SIZE);
    checkSize("room PSK", psk, PSK_SIZE);
    if (hello.length > MAX_HELLO) throw new LocalProtocolError(`hello of ${hello.length} bytes exceeds ${MAX_HELLO}`);
    if (channelSecret !== undefined) {
      if (!initiator) throw new LocalProtocolError("only the initiator chooses the channel secret");
      checkSize("channel secret", channelSecret, CHANNEL_SECRET_SIZE);
    }
    if (ephemeralPrivate !== undefined) checkSize("ephemeral key", ephemeralPrivate, KEY_SIZE);
    this.initiator = initiator;
    this.hello = Uint8Array.from(hello);
    this.state = initiator ? State.IDLE : State.AWAIT_HS1;
    // The initiator chooses the channel secret; the responder learns it from HS3.
    this.channelSecret = initiator
      ? Uint8Array.from(channelSecret ?? crypto.getRandomValues(new Uint8Array(CHANNEL_SECRET_SIZE)))
      : new Uint8Array(0);
    this.hs = new HandshakeState({
      pattern: "XXpsk3",
      initiator,
      staticPrivate: identityPrivate,
      prologue,
      psk,
      ...(ephemeralPrivate !== undefined ? { ephemeralPrivate } : {}),
    });
  }

  /** The peer is verified and we can send DATA. */
  get established(): boolean {
    return this.state === State.ESTABLISHED;
  }

  get failed(): boolean {
    return this.state === State.FAILED;
  }

  /** The peer's identity (static) public key, once it was verified. */
  get remoteIdentity(): Uint8Array | null {
    return this.established ? this.remoteStatic : null;
  }

  /** Initiator only: queue HS1. */
  start(): void {
    if (!this.initiator) throw new LocalProtocolError("only the initiator starts a pair handshake");
    if (this.state !== State.IDLE) throw new LocalProtocolError("pair handshake already started");
    this.writeHandshake(MessageKind.HS1);
    this.state = State.AWAIT_HS2;
  }

  /** Handle one whole pair message; returns its events (replies are queued). */
  receive(data: Uint8Array): PairEvent[] {
    const state = this.state;
    if (state === State.FAILED) throw new PeerError("channel failed");
    if (state === State.IDLE) throw new LocalProtocolError("call start() before receiving");
    data = Uint8Array.from(data);
    if (data.length === 0) throw new PeerError("empty pair message");
    if (data.length > MAX_MESSAGE) throw new PeerError("pair message too long");
    const kind = data[0] as number;
    const name = KIND_NAMES[kind];
    if (name === undefined) throw new PeerError(`unknown pair message kind ${kind}`);
    const body = data.subarray(KIND_SIZE);
    if (kind === MessageKind.DATA) return this.receiveData(data);
    if (kind === MessageKind.REJECT) this.receiveReject(body);
    const expected = { 1: State.AWAIT_HS1, 2: State.AWAIT_HS2, 3: State.AWAIT_HS3 }[kind as 1 | 2 | 3];
    if (state !== expected) throw new PeerError(`unexpected ${name} message`);
    if (body.length < (NOISE_MIN[kind] as number)) throw new PeerError(`truncated ${name} message`);
    if (kind === MessageKind.HS1) {
      this.receiveHs1(body);
      return [];
    }
    if (kind === MessageKind.HS2) {
      this.receiveHs2(body);
      return [];
    }
    return [this.receiveHs3(body)];
  }

  /** Queue `payload` as one DATA message. */
  send(payload: Uint8Array): void {
    if (this.state === State.FAILED) throw new LocalProtocolError("channel failed");
    if (!this.established) throw new LocalProtocolError("cannot send before the peer is verified");
    this.queueData(Uint8Array.from(payload));
  }

  /** Whole pair messages to relay to the peer; clears the queue. */
  messagesToSend(): Uint8Array[] {
    const out = this.outgoing;
    this.outgoing = [];
    return out;
  }

  // --- handshake ---

  private handshakePayload(kind: MessageKind): Uint8Array {
    return kind === MessageKind.HS3 ? concat(this.channelSecret, this.hello) : new Uint8Array(0);
  }

  private takeHandshakePayload(kind: MessageKind, payload: Uint8Array): void {
    try {
      if (kind === MessageKind.HS3) {
        if (payload.length < CHANNEL_SECRET_SIZE) throw new PeerError("HS3 carries no channel secret");
        this.channelSecret = payload.slice(0, CHANNEL_SECRET_SIZE);
        this.peerHello = payload.slice(CHANNEL_SECRET_SIZE);
      } else if (payload.length) {
        throw new PeerError(`unexpected payload in ${KIND_NAMES[kind]}`);
      }
    } catch (e) {
      this.state = State.FAILED;
      throw e;
    }
  }

  private writeHandshake(kind: MessageKind): void {
    let message: Uint8Array;
    try {
      message = this.hs.writeMessage(this.handshakePayload(kind));
    } catch {
      // e.g. the peer's ephemeral was a low-order point and a DH gave zero.
      this.state = State.FAILED;
      throw new PeerError(`pair handshake failed writing ${KIND_NAMES[kind]} (bad peer key)`);
    }
    this.outgoing.push(concat(new Uint8Array([kind]), message));
    this.afterHandshakeStep();
  }

  /** Noise payload of `body`, or null if it did not decrypt (the channel failed). */
  private readHandshake(body: Uint8Array): Uint8Array | null {
    let payload: Uint8Array;
    try {
      payload = this.hs.readMessage(body);
    } catch {
      this.state = State.FAILED;
      return null;
    }
    this.afterHandshakeStep();
    return payload;
  }

  private afterHandshakeStep(): void {
    const rs = this.hs.remoteStatic;
    if (rs !== null) this.remoteStatic = rs;
    if (this.hs.isComplete) this.handshakeHash = this.hs.getHandshakeHash();
  }

  private receiveHs1(body: Uint8Array): void {
    const payload = this.readHandshake(body);
    if (payload === null) throw new PeerError("HS1 did not verify (tampered, or meant for another pair or room)");
    this.takeHandshakePayload(MessageKind.HS1, payload);
    this.writeHandshake(MessageKind.HS2);
    this.state = State.AWAIT_HS3;
  }

  private receiveHs2(body: Uint8Array): void {
    const payload = this.readHandshake(body);
    if (payload === null) throw new PeerError("HS2 did not verify (tampered, or meant for another pair or room)");
    this.takeHandshakePayload(MessageKind.HS2, payload);
    this.writeHandshake(MessageKind.HS3);
    this.deriveKeys();
    // We can encrypt now, but the peer has not proved the room secret yet.
    this.state = State.AWAIT_CONFIRM;
  }

  private receiveHs3(body: Uint8Array): PeerVerified {
    const payload = this.readHandshake(body);
    if (payload === null) {
      // A wrong PSK looks exactly like tampering here; tell the initiator either way.
      this.outgoing.push(new Uint8Array([MessageKind.REJECT]));
      throw new PeerAuthError("the member could not prove the room secret");
    }
    this.takeHandshakePayload(MessageKind.HS3, payload);
    if (this.remoteStatic === null) {
      this.state = State.FAILED;
      throw new PeerError("peer sent no identity key");
    }
    this.deriveKeys();
    this.state = State.ESTABLISHED;
    // Our first DATA message is the key confirmation the initiator waits for.
    this.queueData(this.hello);
    return new PeerVerified(this.remoteStatic, this.peerHello);
  }

  private receiveReject(body: Uint8Array): never {
    if (body.length) throw new PeerError("malformed REJECT message");
    // Only a responder rejects, and only HS3; once verified the peer cannot mean it.
    if (this.state !== State.AWAIT_CONFIRM) throw new PeerError("unexpected REJECT message");
    this.state = State.FAILED;
    throw new PeerAuthError("the member rejected our handshake: different room secret?");
  }

  private deriveKeys(): void {
    const i2r = dataAead(this.channelSecret, this.handshakeHash, PAIR_KDF_INFO_I2R);
    const r2i = dataAead(this.channelSecret, this.handshakeHash, PAIR_KDF_INFO_R2I);
    [this.sendAead, this.recvAead] = this.initiator ? [i2r, r2i] : [r2i, i2r];
  }

  // --- DATA ---

  private queueData(payload: Uint8Array): void {
    const aead = this.sendAead;
    if (aead === null) throw new LocalProtocolError("no DATA keys yet");
    if (payload.length > MAX_DATA_PAYLOAD) {
      throw new LocalProtocolError(`payload of ${payload.length} bytes exceeds ${MAX_DATA_PAYLOAD}`);
    }
    const counter = this.sendCounter;
    if (counter > MAX_COUNTER) throw new LocalProtocolError("pair counter exhausted; start a new channel");
    this.sendCounter = counter + 1n;
    const header = concat(new Uint8Array([MessageKind.DATA]), u64(counter));
    const nonce = concat(NONCE_PAD, header.subarray(KIND_SIZE));
    this.outgoing.push(concat(header, aead.encrypt(nonce, payload, header)));
  }

  private receiveData(data: Uint8Array): PairEvent[] {
    const aead = this.recvAead;
    if (aead === null || (this.state !== State.AWAIT_CONFIRM && this.state !== State.ESTABLISHED)) {
      throw new PeerError("DATA before the handshake completed");
    }
    if (data.length < DATA_HEADER_SIZE + TAG_SIZE) throw new PeerError("truncated DATA message");
    const header = data.subarray(0, DATA_HEADER_SIZE);
    const counter = readU64(data, KIND_SIZE);
    let payload: Uint8Array;
    try {
      payload = aead.decrypt(concat(NONCE_PAD, header.subarray(KIND_SIZE)), data.subarray(DATA_HEADER_SIZE), header);
    } catch {
      throw new PeerError("DATA failed authentication");
    }
    if (this.state === State.AWAIT_CONFIRM && counter !== 0n) {
      // The responder's hello is its DATA 0; leave the window alone so a later copy of
      // this message still counts once the hello arrived.
      throw new PeerError("DATA before the member's hello");
    }
    // Only now, with the tag verified, may the counter touch the window.
    if (!this.window.accept(counter)) throw new PeerError("replayed DATA message");
    if (this.state === State.AWAIT_CONFIRM) {
      if (this.remoteStatic === null) throw new PeerError("peer sent no identity key");
      this.state = State.ESTABLISHED;
      return [new PeerVerified(this.remoteStatic, payload)];
    }
    return [new PeerMessage(payload)];
  }
}
