// The control session's state machine, client role (sans-I/O), mirroring
// src/bangor/wire/session.py's ControlSession (PROTOCOL.md 2 and 3.5-3.9).
//
// Bytes in (receiveData / receiveEof), bytes out (dataToSend), events out (nextEvent),
// timers (getTimer / handleTimer). Underneath: Noise XX as initiator in 2-byte frames;
// on top: the control messages. The session owns the state, the table of what the
// server may send in each state, pings and the dead-server check, and the matching of
// answers to requests. Anything the server sends out of place is a RemoteProtocolError
// that names the message and the state; what this side tries out of place is a
// LocalProtocolError. Received messages are judged one at a time as nextEvent reaches
// them, so each is judged in the state its predecessors left.

import { concat } from "./bytes.ts";
import {
  decodeServerMessage,
  encode,
  msg,
  TYPE_NAMES,
  type ClientMessage,
  type ErrorMessage,
  type ServerMessage,
  type ServerTag,
} from "./control.ts";
import { DecodeError, HandshakeError, LocalProtocolError, RemoteProtocolError } from "./errors.ts";
import { FrameDecoder, MAX_FRAME_SIZE, encodeFrame } from "./framing.ts";
import { HandshakeState, NoiseAuthError, PROLOGUE, TAG_SIZE, generatePrivateKey, type CipherState } from "./noise.ts";

export const MAX_PLAINTEXT = MAX_FRAME_SIZE - TAG_SIZE;
export const PING_INTERVAL = 2.0; // client: a ping this often after welcome
export const DEAD_AFTER = 6.0; // client: nothing heard this long at a ping: the server is gone

export const State = {
  HANDSHAKE: "HANDSHAKE", // the Noise handshake is under way
  HELLO: "HELLO", // handshake done; our hello and the server's welcome are due
  LOGGED_IN: "LOGGED_IN", // welcome received; in no room
  IN_ROOM: "IN_ROOM", // joined received; until left
  CLOSING: "CLOSING", // over: write what dataToSend() holds (our bye), then close
  CLOSED: "CLOSED", // over, nothing to write
} as const;
export type State = (typeof State)[keyof typeof State];
const STATE_WORDS: Record<State, string> = {
  HANDSHAKE: "handshake",
  HELLO: "hello",
  LOGGED_IN: "logged in",
  IN_ROOM: "in room",
  CLOSING: "closing",
  CLOSED: "closed",
};
const ended = (s: State): boolean => s === State.CLOSING || s === State.CLOSED;

export type EndReason = "bye" | "error" | "timeout" | "eof";

type ClientTag = ClientMessage["t"];
const LOGGED_IN_SENDS: ReadonlySet<ClientTag> = new Set<ClientTag>([
  "ping",
  "create",
  "join",
  "leave",
  "say",
  "peer",
  "bye",
  "list",
  "rotate",
  "delete",
  "kick",
  "unban",
  "list_bans",
]);
/** What a client may send in each state (PROTOCOL.md 3.5). */
export const CLIENT_SENDS: Readonly<Partial<Record<State, ReadonlySet<ClientTag>>>> = {
  HELLO: new Set<ClientTag>(["hello"]),
  LOGGED_IN: LOGGED_IN_SENDS,
  IN_ROOM: LOGGED_IN_SENDS,
};
const ANSWERS: ServerTag[] = ["created", "joined", "pong", "error", "rooms", "rotated", "deleted", "kicked", "unbanned", "bans"];
/** What a server may send in each state; the client holds it to this. */
export const SERVER_SENDS: Readonly<Partial<Record<State, ReadonlySet<ServerTag>>>> = {
  HELLO: new Set<ServerTag>(["welcome", "error"]),
  LOGGED_IN: new Set<ServerTag>(ANSWERS),
  IN_ROOM: new Set<ServerTag>([...ANSWERS, "left", "member_joined", "member_left", "chat", "peer_from", "token"]),
};
/** The request each reply answers, and the state it leads to (null: the state stays). */
export const REPLIES: Readonly<Partial<Record<ServerTag, readonly [ClientTag, State | null]>>> = {
  welcome: ["hello", State.LOGGED_IN],
  created: ["create", null],
  joined: ["join", State.IN_ROOM],
  left: ["leave", State.LOGGED_IN],
  pong: ["ping", null],
  rooms: ["list", null],
  rotated: ["rotate", null],
  deleted: ["delete", null],
  kicked: ["kick", null],
  unbanned: ["unban", null],
  bans: ["list_bans", null],
};
// Requests kept until answered; the `ref` of a refusal names one of these.
export const TRACKED: ReadonlySet<string> = new Set(["hello", "create", "join", "leave", "list", "rotate", "delete", "kick", "unban", "list_bans"]);
// A leave outside a room gets no answer: the next answer to a later request shows it
// was taken without one.
const MAY_GO_UNANSWERED: ClientTag = "leave";

/** A request this session sent; compared by identity. */
export interface Request {
  readonly id: number;
  readonly message: ClientMessage;
  readonly tag: ClientTag;
}

export interface HandshakeDone {
  readonly type: "handshake_done";
  /** The server's static public key (it proved it holds the private key). */
  readonly remoteStatic: Uint8Array;
  /** Unique per session but not secret: never a source of keys. */
  readonly handshakeHash: Uint8Array;
}
/** `request` was answered with `reply`, or taken without an answer (null: a leave outside a room). */
export interface RequestDone {
  readonly type: "request_done";
  readonly request: Request;
  readonly reply: ServerMessage | null;
}
/** `request` was refused with a non-fatal error; the session goes on. */
export interface RequestFailed {
  readonly type: "request_failed";
  readonly request: Request;
  readonly error: ErrorMessage;
}
/** A non-fatal error that answers no pending request (a refused say). */
export interface Refused {
  readonly type: "refused";
  readonly error: ErrorMessage;
}
/** A message the server pushed: member_joined, member_left, chat, peer_from, token. */
export interface Pushed {
  readonly type: "pushed";
  readonly message: ServerMessage;
}
/** The session ended by itself; `unanswered`: our requests left pending. */
export interface SessionEnded {
  readonly type: "session_ended";
  readonly reason: EndReason;
  readonly error: ErrorMessage | null;
  readonly unanswered: readonly Request[];
}
export type SessionEvent = HandshakeDone | RequestDone | RequestFailed | Refused | Pushed | SessionEnded;

export interface SessionOptions {
  /** Our Noise static key: a fresh random one per connection unless given (PROTOCOL.md 2.3). */
  staticPrivate?: Uint8Array;
  /** Defaults to "bangor/1 Noise_XX_25519_ChaChaPoly_BLAKE2s". */
  prologue?: Uint8Array;
  pingInterval?: number;
  deadAfter?: number;
  /**
   * Called with the server's static key once handshake message 2 proved it, before we
   * answer with message 3 (and so before any hello): throw (e.g. KeyPinError, see
   * fingerprint.checkPinnedKey) to refuse the server; the session is then CLOSED and
   * receiveData rethrows it.
   */
  checkServerKey?: (remoteStatic: Uint8Array) => void;
  /** Fixed ephemeral key: tests only. */
  ephemeralPrivate?: Uint8Array;
}

const freeze = <T extends object>(o: T): T => Object.freeze(o);

export class ControlSession {
  readonly #hs: HandshakeState;
  readonly #decoder = new FrameDecoder();
  readonly #checkServerKey: ((remoteStatic: Uint8Array) => void) | undefined;
  readonly #pingInterval: number;
  readonly #deadAfter: number;
  #transport: { send: CipherState; receive: CipherState } | null = null;
  #handshakeHash: Uint8Array | null = null;
  #remoteStatic: Uint8Array | null = null;
  #state: State = State.HANDSHAKE;
  #out: Uint8Array[] = [];
  #events: SessionEvent[] = [];
  // Decrypted payloads (null: the peer closed) with their arrival time.
  #inbox: Array<[Uint8Array | null, number]> = [];
  // Requests and pings awaiting their answer, oldest first, with the time they went.
  #pending: Array<[Request, number]> = [];
  #lastHeard = 0;
  #nextId = 0;
  #nextNonce = 0;
  #nextPing: number | null = null;
  /** The control channel's last measured round-trip time, seconds. */
  rtt: number | null = null;

  constructor(options: SessionOptions = {}) {
    this.#hs = new HandshakeState({
      pattern: "XX",
      initiator: true,
      staticPrivate: options.staticPrivate ?? generatePrivateKey(),
      prologue: options.prologue ?? PROLOGUE,
      ...(options.ephemeralPrivate ? { ephemeralPrivate: options.ephemeralPrivate } : {}),
    });
    this.#checkServerKey = options.checkServerKey;
    this.#pingInterval = options.pingInterval ?? PING_INTERVAL;
    this.#deadAfter = options.deadAfter ?? DEAD_AFTER;
    // The client starts: message 1 waits in dataToSend().
    this.#out.push(encodeFrame(this.#hs.writeMessage()));
  }

  get state(): State {
    return this.#state;
  }

  /** The server's static public key, once the handshake completed. */
  get remoteStatic(): Uint8Array | null {
    return this.#handshakeHash === null ? null : this.#remoteStatic;
  }

  get handshakeHash(): Uint8Array | null {
    return this.#handshakeHash;
  }

  // -- input --------------------------------------------------------------------------

  /**
   * Feeds bytes from the stream. Throws on a bad frame (HandshakeError, FramingError,
   * RemoteProtocolError) or what checkServerKey throws; the session is then CLOSED with
   * nothing to send. Ignored once the session ended.
   */
  receiveData(data: Uint8Array, now: number): void {
    if (ended(this.#state)) return;
    this.#lastHeard = now;
    try {
      for (const frame of this.#decoder.feed(data)) {
        if (this.#transport === null) this.#readHandshake(frame);
        else this.#inbox.push([this.#decrypt(frame), now]);
      }
    } catch (err) {
      this.#end(State.CLOSED);
      throw err;
    }
  }

  /** The server closed the connection, after the bytes fed so far. */
  receiveEof(now: number): void {
    if (ended(this.#state)) this.#state = State.CLOSED;
    else this.#inbox.push([null, now]);
  }

  /** Runs what getTimer asked for, if due at `now`: the dead-server check, then a ping. */
  handleTimer(now: number): void {
    const when = this.getTimer();
    if (when === null || now < when) return;
    if (now - this.#lastHeard > this.#deadAfter) {
      const unanswered = this.#end(State.CLOSED);
      this.#events.push(freeze({ type: "session_ended", reason: "timeout", error: null, unanswered }));
      return;
    }
    const ping = msg.ping(this.#nextNonce++);
    this.#write(ping);
    this.#pending.push([this.#request(ping), now]);
    this.#nextPing = now + this.#pingInterval;
  }

  // -- output -------------------------------------------------------------------------

  /** Bytes to write to the stream; clears the queue. */
  dataToSend(): Uint8Array {
    const out = concat(...this.#out);
    this.#out = [];
    return out;
  }

  /**
   * The next event, or null. Judges received messages one at a time; throws DecodeError
   * or RemoteProtocolError for one that is malformed or out of place ("server sent
   * garbage"): the session is then CLOSED.
   */
  nextEvent(): SessionEvent | null {
    while (this.#events.length === 0 && this.#inbox.length > 0) {
      const [payload, now] = this.#inbox.shift() as [Uint8Array | null, number];
      if (payload === null) {
        const unanswered = this.#end(State.CLOSED);
        this.#events.push(freeze({ type: "session_ended", reason: "eof", error: null, unanswered }));
      } else {
        this.#received(payload, now);
      }
    }
    return this.#events.shift() ?? null;
  }

  /** When handleTimer has something to do: the next ping; null before login and after the end. */
  getTimer(): number | null {
    if (this.#state !== State.LOGGED_IN && this.#state !== State.IN_ROOM) return null;
    return this.#nextPing;
  }

  // -- sending ------------------------------------------------------------------------

  /**
   * Sends `message` if the table allows it in this state (else LocalProtocolError).
   * Returns the Request an answer will settle (hello, create, join, leave; list, rotate,
   * delete, kick), else null.
   */
  send(message: ClientMessage): Request | null {
    const name = TYPE_NAMES[message.t];
    if (ended(this.#state)) throw new LocalProtocolError(`cannot send ${name}: the session is ${STATE_WORDS[this.#state]}`);
    if (!CLIENT_SENDS[this.#state]?.has(message.t)) throw new LocalProtocolError(`cannot send ${name} in state ${this.#state}`);
    if (message.t === "ping") throw new LocalProtocolError("the session sends its own pings");
    if (message.t === "hello" && this.#pending.length > 0) throw new LocalProtocolError("hello was sent already");
    this.#write(message);
    if (message.t === "bye") {
      this.#end(State.CLOSING);
      return null;
    }
    if (!TRACKED.has(message.t)) return null;
    const request = this.#request(message);
    this.#pending.push([request, 0]); // a request's time is not needed
    return request;
  }

  hello(user: string, password: string, nick = ""): Request {
    return this.send(msg.hello(user, password, nick)) as Request;
  }

  createRoom(name: string, maxBitrate = 0): Request {
    return this.send(msg.create(name, maxBitrate)) as Request;
  }

  /** `token`: the invite's join token (pairwise.deriveJoinToken); empty for a room without one. */
  joinRoom(roomId: string, token: Uint8Array = new Uint8Array(0)): Request {
    return this.send(msg.join(roomId, token)) as Request;
  }

  leaveRoom(): Request {
    return this.send(msg.leave()) as Request;
  }

  sendChat(sealed: Uint8Array): void {
    this.send(msg.say(sealed));
  }

  sendPeer(to: number, data: Uint8Array): void {
    this.send(msg.peer(to, data));
  }

  /** Says goodbye: the session is CLOSING; write the bytes, then close. */
  bye(): void {
    this.send(msg.bye());
  }

  /** Ends the session without a word; the shell drops the connection. */
  close(): void {
    this.#end(State.CLOSED);
  }

  // -- internals: Noise ----------------------------------------------------------------

  #readHandshake(frame: Uint8Array): void {
    const payload = this.#hs.readMessage(frame);
    if (payload.length > 0) throw new HandshakeError("unexpected payload in handshake message");
    // XX as initiator: we read message 2 only, which carried the server's static key.
    const remote = this.#hs.remoteStatic;
    if (remote === null) throw new HandshakeError("peer did not send a static key");
    this.#remoteStatic = remote;
    this.#checkServerKey?.(remote);
    this.#out.push(encodeFrame(this.#hs.writeMessage()));
    this.#transport = this.#hs.transport();
    this.#handshakeHash = this.#hs.getHandshakeHash();
    this.#state = State.HELLO;
    this.#events.push(freeze({ type: "handshake_done", remoteStatic: remote, handshakeHash: this.#handshakeHash }));
  }

  #decrypt(frame: Uint8Array): Uint8Array {
    try {
      return (this.#transport as { receive: CipherState }).receive.decrypt(frame);
    } catch (err) {
      if (err instanceof NoiseAuthError) throw new RemoteProtocolError("noise transport message failed authentication");
      throw err;
    }
  }

  #write(message: ClientMessage): void {
    const plain = encode(message);
    if (plain.length > MAX_PLAINTEXT) throw new LocalProtocolError(`message of ${plain.length} bytes exceeds ${MAX_PLAINTEXT}`);
    const transport = this.#transport;
    if (transport === null) throw new LocalProtocolError("cannot send before the handshake completes");
    this.#out.push(encodeFrame(transport.send.encrypt(plain)));
  }

  // -- internals: messages -------------------------------------------------------------

  #request(message: ClientMessage): Request {
    return freeze({ id: this.#nextId++, message, tag: message.t });
  }

  #received(payload: Uint8Array, now: number): void {
    let message: ServerMessage;
    try {
      message = decodeServerMessage(payload);
    } catch (err) {
      if (err instanceof DecodeError) this.#end(State.CLOSED);
      throw err;
    }
    const name = TYPE_NAMES[message.t];
    if (!SERVER_SENDS[this.#state]?.has(message.t)) this.#violation(`unexpected ${name} in state ${this.#state}`);
    if (message.t === "error") {
      this.#errorReceived(message);
      return;
    }
    const reply = REPLIES[message.t];
    if (reply === undefined) {
      this.#events.push(freeze({ type: "pushed", message }));
      return;
    }
    const [requestTag, nextState] = reply;
    const found = this.#answered(requestTag, message.t === "pong" ? message.nonce : null);
    if (found === null) this.#violation(`unexpected ${name} in state ${this.#state}: it answers no pending request`);
    const [request, sentAt] = found;
    if (nextState !== null) this.#state = nextState;
    if (message.t === "pong") {
      this.rtt = now - sentAt;
      return;
    }
    if (message.t === "welcome") this.#nextPing = now + this.#pingInterval;
    this.#events.push(freeze({ type: "request_done", request, reply: message }));
  }

  #errorReceived(error: ErrorMessage): void {
    if (error.fatal) {
      const unanswered = this.#end(State.CLOSED);
      this.#events.push(freeze({ type: "session_ended", reason: "error", error, unanswered }));
      return;
    }
    const found = TRACKED.has(error.ref) ? this.#answered(error.ref as ClientTag, null) : null;
    if (found === null) this.#events.push(freeze({ type: "refused", error }));
    else this.#events.push(freeze({ type: "request_failed", request: found[0], error }));
  }

  /**
   * Takes the pending request an answer of `tag` is for: the oldest of that tag (for a
   * pong, with that nonce). The server answers in order, so only requests that may go
   * unanswered can come before it; they are settled as taken without an answer.
   */
  #answered(tag: ClientTag, nonce: number | null): [Request, number] | null {
    let position = -1;
    for (const [index, [request]] of this.#pending.entries()) {
      const m = request.message;
      if (m.t === tag && (nonce === null || (m.t === "ping" && m.nonce === nonce))) {
        position = index;
        break;
      }
      if (m.t !== MAY_GO_UNANSWERED) break;
    }
    if (position < 0) return null;
    for (const [skipped] of this.#pending.splice(0, position)) {
      this.#events.push(freeze({ type: "request_done", request: skipped, reply: null }));
    }
    return this.#pending.shift() as [Request, number];
  }

  #violation(text: string): never {
    this.#end(State.CLOSED);
    throw new RemoteProtocolError(text);
  }

  #end(state: State): readonly Request[] {
    const unanswered = freeze(this.#pending.filter(([r]) => r.tag !== "ping").map(([r]) => r));
    this.#state = state;
    this.#inbox = [];
    this.#pending = [];
    this.#nextPing = null;
    return unanswered;
  }
}

