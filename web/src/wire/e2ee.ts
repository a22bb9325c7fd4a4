// End-to-end encryption of one member in one room, sans-I/O; mirrors src/bangor/wire/e2ee.py
// and PROTOCOL.md 8.3, 8.7 and 8.9.
//
// RoomCrypto ties the pieces together:
// - a PairChannel with every other member, relayed by the server as opaque `peer`
//   messages and authenticated by the room secret (Noise XXpsk3), which proves each
//   member's device identity key;
// - our own SFrame sender key (Outbound), sent to each member once it is verified;
// - one Inbound per other member, fed by the keys it sends us.
// Membership drives the key schedule: before a newcomer gets our key it ratchets one step;
// when someone who had our key leaves we make a fresh key (next generation) and send it to
// everyone left, at most once per rotationMinInterval. A member that cannot prove the room
// secret never gets a key and its frames never open. Problems with one member's messages
// are reported a few at a time, then counted.
//
// A browser member has no direct paths: a CLI member's `cand` message is checked and
// ignored, and we never send one.
//
// Inputs are the server's messages and `now` (seconds); outputs are pair messages to relay
// (peerMessagesToSend(), carried by the control session's `peer`), events (nextEvent())
// and the next timer (getTimer(), then handleTimer(now)). AES-GCM is WebCrypto (async), so
// the calls that open frames (peerReceived, openVoice, openChat) return promises and run
// one after the other in call order, which keeps chat order and key installs as in Python.

import { concat, u32, utf8 } from "./bytes.ts";
import { DecodeError, LocalProtocolError, PacketError, PeerAuthError, PeerError } from "./errors.ts";
import { MAX_CHAT_TEXT } from "./control.ts";
import { MpMap, MpWriter, typeName, unpack, type MpValue } from "./msgpack.ts";
import { identityFingerprint, identityPublicKey, safetyHalf } from "./identity.ts";
import {
  MessageKind,
  PairChannel,
  PeerMessage,
  PeerVerified,
  deriveJoinToken,
  deriveRoomPsk,
  pairPrologue,
} from "./pairwise.ts";
import {
  BASE_KEY_SIZE,
  GENERATION_LIMIT,
  Inbound,
  MAX_STEP,
  Outbound,
  PURPOSE_CHAT,
  PURPOSE_VOICE,
  SenderKey,
  freshSenderKey,
  randomBytes,
  type Purpose,
} from "./senderkeys.ts";

export const VOICE_LABEL = utf8.encode("bangor/1 voice ");
export const CHAT_LABEL = utf8.encode("bangor/1 chat ");
export const MAX_NAME = 64; // ShortText in e2ee.py
export const MAX_CHAT_SEQ = (1n << 63n) - 1n;
export const MAX_CANDIDATES = 16;
export const DIRECT_KEY_SIZE = 32;
/** A room secret, as in the invite (invite.SECRET_SIZE). */
export const ROOM_SECRET_SIZE = 16;
/** Accounts whose problem reports are counted (only a server inventing names fills this). */
export const MAX_REPORT_SOURCES = 64;
/** ReportLimiter.MAX_KINDS: distinct texts counted apart; the rest under OTHER_PROBLEMS. */
export const MAX_REPORT_KINDS = 4;
export const OTHER_PROBLEMS = "other problems";

/** The end-to-end part of ClientSettings (settings.py), same defaults. */
export interface E2EESettings {
  readonly peerVerifyTimeout: number;
  readonly oldKeyGrace: number;
  readonly maxPendingFrames: number;
  readonly maxPendingChat: number;
  readonly pendingTimeout: number;
  readonly maxRatchetAhead: number;
  readonly maxGenerationsAhead: number;
  readonly rotationMinInterval: number;
  readonly problemReportBurst: number;
  readonly problemReportInterval: number;
}

export const DEFAULT_E2EE_SETTINGS: E2EESettings = Object.freeze({
  peerVerifyTimeout: 10.0,
  oldKeyGrace: 2.0,
  maxPendingFrames: 50,
  maxPendingChat: 64,
  pendingTimeout: 5.0,
  maxRatchetAhead: 32,
  maxGenerationsAhead: 4,
  rotationMinInterval: 1.0,
  problemReportBurst: 5,
  problemReportInterval: 10.0,
});

// --- what members say to each other (inside pair channels and sealed chat) ---

export interface PeerHello {
  readonly user: string;
  readonly nick: string;
}
export interface KeyMessage {
  readonly t: "key";
  readonly generation: number;
  readonly step: number;
  readonly baseKey: Uint8Array;
}
export interface ReceptionReport {
  readonly t: "rr";
  readonly lossPermille: number;
  /** Mean loss burst in tenths of a packet; null from a peer that leaves it out. */
  readonly burstTenths: number | null;
}
/** A reported mean burst is capped at 6553.5 packets (e2ee.py's MAX_BURST_TENTHS). */
export const MAX_BURST_TENTHS = 65535;
export interface CandidatesMessage {
  readonly t: "cand";
  readonly key: Uint8Array;
  readonly candidates: readonly (readonly [string, string, number])[];
}
/**
 * The room's next secret, from a member rotating the room (its owner). Held until the
 * server announces the join token it derives (control message `token`): only then does it
 * replace the secret, so a member cannot move the others to a secret of its own, and a
 * rotation the server refused changes nothing.
 */
export interface SecretMessage {
  readonly t: "secret";
  readonly secret: Uint8Array;
}
export type PeerPayload = KeyMessage | ReceptionReport | CandidatesMessage | SecretMessage;
export interface ChatBody {
  readonly seq: bigint;
  readonly text: string;
}

// Field order as msgspec writes it, so our bytes equal Python's (PROTOCOL 8.3.2/8.3.3/8.7);
// msgpack.ts's writer picks msgspec's forms, as for the control messages.
export function encodeHello(hello: PeerHello): Uint8Array {
  return new MpWriter().mapHeader(2).str("user").str(hello.user).str("nick").str(hello.nick).bytes();
}
export function encodeKeyMessage(key: SenderKey): Uint8Array {
  const w = new MpWriter().mapHeader(4).str("t").str("key");
  return w.str("generation").int(key.generation).str("step").int(key.step).str("base_key").bin(key.baseKey).bytes();
}
export function encodeReport(lossPermille: number, burstTenths: number): Uint8Array {
  const w = new MpWriter().mapHeader(3).str("t").str("rr").str("loss_permille").int(lossPermille);
  return w.str("burst_tenths").int(burstTenths).bytes();
}
export function encodeSecret(secret: Uint8Array): Uint8Array {
  return new MpWriter().mapHeader(2).str("t").str("secret").str("secret").bin(secret).bytes();
}
export function encodeChat(seq: number, text: string): Uint8Array {
  return new MpWriter().mapHeader(2).str("seq").int(seq).str("text").str(text).bytes();
}

class Malformed extends Error {}

function fail(message: string): never {
  throw new Malformed(message);
}

// Member messages are read with msgpack.ts's strict reader, so they are judged as msgspec
// judges them in Python: an int (bigint) is not a float (number), str is not bin, str must
// be valid UTF-8, nothing may follow the value. Only the top-level map's keys must be str
// (a msgspec Struct's); values of unknown fields are skipped whatever their keys, as msgspec
// skips them. msgspec nests until Python's recursion limit (~1000; e2ee.py turns the
// RecursionError into "nested too deeply"), deeper than control messages allow.
const MAX_DEPTH = 1000;

function decodeMap(data: Uint8Array): Map<string, MpValue> {
  let value: MpValue;
  try {
    // Keys as msgspec's Structs read them: one that is not UTF-8 is an unknown field.
    value = unpack(data, MAX_DEPTH, true);
  } catch (e) {
    if (e instanceof DecodeError) fail(e.message);
    throw e;
  }
  if (!(value instanceof MpMap)) fail(`Expected \`object\`, got \`${typeName(value)}\``);
  const out = new Map<string, MpValue>();
  for (const [key, v] of value.entries) {
    if (typeof key !== "string") fail(`Expected \`str\`, got \`${typeName(key)}\` - at \`key\` in \`$\``);
    out.set(key, v);
  }
  return out;
}


function field(map: Map<string, MpValue>, name: string): MpValue {
  const value = map.get(name);
  if (value === undefined) fail(`Object missing required field \`${name}\``);
  return value;
}

function checkInt(value: MpValue, name: string, min: bigint, max: bigint): bigint {
  if (typeof value !== "bigint") fail(`Expected \`int\`, got \`${typeName(value)}\` - at \`$.${name}\``);
  const v = value;
  if (v < min) fail(`Expected \`int\` >= ${min} - at \`$.${name}\``);
  if (v > max) fail(`Expected \`int\` <= ${max} - at \`$.${name}\``);
  return v;
}

/** Characters as Python counts them (code points). */
function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function checkStr(value: MpValue, name: string, min: number, max: number): string {
  if (typeof value !== "string") fail(`Expected \`str\`, got \`${typeName(value)}\` - at \`$.${name}\``);
  const n = codePoints(value);
  if (n < min) fail(`Expected \`str\` of length >= ${min} - at \`$.${name}\``);
  if (n > max) fail(`Expected \`str\` of length <= ${max} - at \`$.${name}\``);
  return value;
}

function checkBytes(value: MpValue, name: string, size: number): Uint8Array {
  if (!(value instanceof Uint8Array)) fail(`Expected \`bytes\`, got \`${typeName(value)}\` - at \`$.${name}\``);
  if (value.length !== size) fail(`Expected \`bytes\` of length ${size} - at \`$.${name}\``);
  return Uint8Array.from(value);
}

function decoded<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof Malformed) throw new PeerError(`malformed ${what}: ${e.message}`);
    throw e;
  }
}

export function decodeHello(data: Uint8Array): PeerHello {
  return decoded("member hello", () => {
    const m = decodeMap(data);
    return Object.freeze({
      user: checkStr(field(m, "user"), "user", 0, MAX_NAME),
      nick: checkStr(field(m, "nick"), "nick", 0, MAX_NAME),
    });
  });
}

export function decodePayload(data: Uint8Array): PeerPayload {
  return decoded("member message", () => {
    const m = decodeMap(data);
    const t = field(m, "t");
    if (t === "key") {
      return Object.freeze({
        t,
        generation: Number(checkInt(field(m, "generation"), "generation", 0n, BigInt(GENERATION_LIMIT - 1))),
        step: Number(checkInt(field(m, "step"), "step", 0n, BigInt(MAX_STEP))),
        baseKey: checkBytes(field(m, "base_key"), "base_key", BASE_KEY_SIZE),
      });
    }
    if (t === "rr") {
      const lossPermille = Number(checkInt(field(m, "loss_permille"), "loss_permille", 0n, 1000n));
      // Optional (old peers leave it out), as msgspec's `int | None = None`.
      const raw = m.get("burst_tenths") ?? null;
      if (raw !== null && typeof raw !== "bigint") {
        fail(`Expected \`int | null\`, got \`${typeName(raw)}\` - at \`$.burst_tenths\``);
      }
      const burstTenths = raw === null ? null : Number(checkInt(raw, "burst_tenths", 0n, BigInt(MAX_BURST_TENTHS)));
      return Object.freeze({ t, lossPermille, burstTenths });
    }
    if (t === "cand") {
      const key = checkBytes(field(m, "key"), "key", DIRECT_KEY_SIZE);
      const list = field(m, "candidates");
      if (!Array.isArray(list)) fail("Expected `array` - at `$.candidates`");
      if (list.length > MAX_CANDIDATES) fail(`Expected \`array\` of length <= ${MAX_CANDIDATES} - at \`$.candidates\``);
      const candidates = list.map((c: MpValue, i) => {
        if (!Array.isArray(c) || c.length !== 3) fail(`Expected \`array\` of length 3 - at \`$.candidates[${i}]\``);
        return Object.freeze([
          checkStr(c[0] as MpValue, `candidates[${i}][0]`, 0, MAX_NAME),
          checkStr(c[1] as MpValue, `candidates[${i}][1]`, 0, MAX_NAME),
          Number(checkInt(c[2] as MpValue, `candidates[${i}][2]`, 1n, 65535n)),
        ] as const);
      });
      return Object.freeze({ t, key, candidates: Object.freeze(candidates) });
    }
    if (t === "secret") {
      const secret = field(m, "secret");
      if (!(secret instanceof Uint8Array)) fail(`Expected \`bytes\`, got \`${typeName(secret)}\` - at \`$.secret\``);
      // As msgspec words a min_length = max_length constraint.
      if (secret.length < ROOM_SECRET_SIZE) fail(`Expected \`bytes\` of length >= ${ROOM_SECRET_SIZE} - at \`$.secret\``);
      if (secret.length > ROOM_SECRET_SIZE) fail(`Expected \`bytes\` of length <= ${ROOM_SECRET_SIZE} - at \`$.secret\``);
      return Object.freeze({ t, secret: Uint8Array.from(secret) });
    }
    if (typeof t !== "string") fail("Expected `str` - at `$.t`");
    fail(`Invalid value '${t}' - at \`$.t\``);
  });
}

export function decodeChat(data: Uint8Array): ChatBody {
  return decoded("chat message", () => {
    const m = decodeMap(data);
    return Object.freeze({
      seq: checkInt(field(m, "seq"), "seq", 0n, MAX_CHAT_SEQ),
      text: checkStr(field(m, "text"), "text", 1, MAX_CHAT_TEXT),
    });
  });
}

// --- events ---

/** The member proved the room secret; `identity` is its device's public key. */
export interface MemberVerified {
  readonly type: "MemberVerified";
  readonly sessionId: number;
  readonly user: string;
  readonly identity: Uint8Array;
  /** Ours and its, as identity.safetyNumber gives them (PROTOCOL 8.8). */
  readonly safetyNumber: string;
  readonly fingerprint: string;
}
/** The member could not prove the room secret (or broke the handshake): no keys. */
export interface MemberRejected {
  readonly type: "MemberRejected";
  readonly sessionId: number;
  readonly user: string;
  readonly reason: string;
}
/** A bad end-to-end message from a member, dropped; `user` is "" if not in the room. */
export interface PeerProblem {
  readonly type: "PeerProblem";
  readonly sessionId: number;
  readonly message: string;
  readonly user: string;
}
/** A held voice frame that opened once its key arrived: to that sender's jitter buffer. */
export interface VoiceReleased {
  readonly type: "VoiceReleased";
  readonly sessionId: number;
  readonly payload: Uint8Array;
}
export interface ChatOpened {
  readonly type: "ChatOpened";
  readonly sessionId: number;
  readonly text: string;
}
/** The server withheld chat messages from this member (sequence numbers skipped). */
export interface ChatGap {
  readonly type: "ChatGap";
  readonly sessionId: number;
  readonly missing: bigint;
}
/** A verified member's reception report on our voice; loss 0..1. */
export interface ReportReceived {
  readonly type: "ReportReceived";
  readonly sessionId: number;
  readonly loss: number;
  /** Mean packets lost in a row (0: none); null from a member that reads no spread frames. */
  readonly burst: number | null;
}
export type E2EEEvent = MemberVerified | MemberRejected | PeerProblem | VoiceReleased | ChatOpened | ChatGap | ReportReceived;

// --- problem report limiting (ratelimit.py's TokenBucket and ReportLimiter) ---

class ReportLimiter {
  private tokens: number;
  private last: number;
  private readonly rate: number;
  private due: number | null = null;
  held = new Map<string, number>(); // reports held back, by text, in first-seen order

  constructor(
    private readonly burst: number,
    private readonly interval: number,
    now: number,
  ) {
    if (!(interval > 0 && Number.isFinite(interval))) throw new RangeError("interval must be a finite number > 0");
    if (!(burst >= 1 && Number.isFinite(burst))) throw new RangeError("burst must be a finite number >= 1");
    this.rate = 1 / interval;
    this.tokens = burst;
    this.last = now;
  }

  private take(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.rate);
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** True: show `report` now; false: it was counted instead. */
  allow(report: string, now: number): boolean {
    if (this.take(now)) return true;
    if (!this.held.has(report) && this.held.size >= MAX_REPORT_KINDS) report = OTHER_PROBLEMS;
    this.held.set(report, (this.held.get(report) ?? 0) + 1);
    if (this.due === null) this.due = now + this.interval;
    return false;
  }

  getTimer(): number | null {
    return this.due;
  }

  /** The reports held back if due (or forced), most common first; empty if nothing is due. */
  takeDue(now: number, force = false): [string, number][] {
    if (this.due === null || (now < this.due && !force)) return [];
    const held = [...this.held];
    this.held = new Map();
    this.due = null;
    // Counter.most_common: by count, ties in first-seen order (a stable sort).
    return held.sort((a, b) => b[1] - a[1]);
  }
}

// --- per-member state ---

interface Member {
  readonly sessionId: number;
  readonly user: string;
  readonly inbound: Inbound;
  readonly metadata: Readonly<Record<Purpose, Uint8Array>>;
  channel: PairChannel | null;
  deadline: number | null; // verify by then, or be rejected
  identity: Uint8Array | null;
  rejected: boolean;
  nextChatSeq: bigint | null;
  joinedAfterUs: boolean; // our key ratchets before it gets it
  hasKey: boolean; // it got a key of ours: when it leaves, we rotate
}

interface Reports {
  sessionId: number;
  readonly user: string;
  readonly limiter: ReportLimiter;
}

function frameMetadata(label: Uint8Array, roomId: Uint8Array, sender: number): Uint8Array {
  // Binds each frame to its room and sender: frames cannot move between rooms or senders.
  return concat(label, roomId, u32(sender));
}

export interface RoomCryptoOptions {
  /** The room id: the 8 raw bytes of the invite. */
  roomId: Uint8Array;
  /** The room secret from the invite (never sent to the server). */
  secret: Uint8Array;
  /** Our session id (welcome.session_id). */
  sessionId: number;
  /** Our user name and nick as the server gave them in joined.you. */
  user: string;
  nick: string;
  /** This device's X25519 identity private key (32 bytes). */
  identityPrivate: Uint8Array;
  settings?: Partial<E2EESettings>;
  /** Random bytes (tests make it deterministic). */
  token?: (n: number) => Uint8Array;
}

/** One member's end-to-end state for one room (sans-I/O). */
export class RoomCrypto {
  readonly roomId: Uint8Array;
  readonly sessionId: number;
  readonly user: string;
  readonly settings: E2EESettings;
  readonly identityPublic: Uint8Array;
  private readonly identityPrivate: Uint8Array;
  private psk: Uint8Array;
  // Next room secrets offered by members (and by us), by session id: see SecretMessage.
  private readonly offered = new Map<number, Uint8Array>();
  private readonly hello: Uint8Array;
  private readonly token: (n: number) => Uint8Array;
  private readonly outbound: Outbound;
  private readonly voiceMeta: Uint8Array;
  private readonly chatMeta: Uint8Array;
  private chatSeq = 0;
  private readonly members = new Map<number, Member>();
  private outgoing: [number, Uint8Array][] = [];
  private readonly events: E2EEEvent[] = [];
  private lastRotation = -Infinity;
  private rotateAt: number | null = null; // a rotation is owed, and due then
  // Per account name ("" for ids not in the room), so rejoining starts nothing afresh.
  private readonly reports = new Map<string, Reports>();
  private ourHalf: string | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: RoomCryptoOptions) {
    const { roomId, secret, sessionId, user, nick, identityPrivate, settings, token = randomBytes } = options;
    if (!Number.isInteger(sessionId) || sessionId < 0 || sessionId > 0xffffffff) {
      throw new LocalProtocolError("session id out of range");
    }
    this.roomId = Uint8Array.from(roomId);
    this.sessionId = sessionId;
    this.user = user;
    this.settings = Object.freeze({ ...DEFAULT_E2EE_SETTINGS, ...settings });
    this.identityPrivate = Uint8Array.from(identityPrivate);
    this.identityPublic = identityPublicKey(identityPrivate);
    this.psk = deriveRoomPsk(secret, roomId);
    this.hello = encodeHello({ user, nick });
    this.token = token;
    this.outbound = new Outbound(freshSenderKey(0, token));
    this.voiceMeta = frameMetadata(VOICE_LABEL, roomId, sessionId);
    this.chatMeta = frameMetadata(CHAT_LABEL, roomId, sessionId);
  }

  // --- queries ---

  get senderKey(): SenderKey {
    return this.outbound.key;
  }

  verified(sessionId: number): boolean {
    return this.members.get(sessionId)?.identity != null;
  }

  identityOf(sessionId: number): Uint8Array | null {
    return this.members.get(sessionId)?.identity ?? null;
  }

  /** [member session id, pair message] to relay in `peer` messages; clears the queue. */
  peerMessagesToSend(): [number, Uint8Array][] {
    const out = this.outgoing;
    this.outgoing = [];
    return out;
  }

  nextEvent(): E2EEEvent | null {
    return this.events.shift() ?? null;
  }

  /** A member who had our key left and the rotation waits for its interval. */
  get rotationPending(): boolean {
    return this.rotateAt !== null;
  }

  getTimer(): number | null {
    let t = Infinity;
    for (const m of this.members.values()) {
      if (m.deadline !== null) t = Math.min(t, m.deadline);
      const it = m.inbound.getTimer();
      if (it !== null) t = Math.min(t, it);
    }
    for (const r of this.reports.values()) {
      const rt = r.limiter.getTimer();
      if (rt !== null) t = Math.min(t, rt);
    }
    if (this.rotateAt !== null) t = Math.min(t, this.rotateAt);
    return t === Infinity ? null : t;
  }

  // --- membership (from the server's messages) ---

  /** We joined (`joined.members`): greet every member already in the room (we initiate). */
  start(members: Iterable<readonly [number, string]>, now: number): void {
    for (const [sessionId, user] of members) {
      // As e2ee.py: a member listed again is recorded afresh (a server that says we are
      // new when we are not makes both sides start; the lower session id wins, below).
      const member = this.addMember(sessionId, user, now);
      this.openChannel(member);
    }
  }

  /** Someone joined: it starts the handshake; we ratchet once it is verified. */
  memberJoined(sessionId: number, user: string, now: number): void {
    if (sessionId === this.sessionId || this.members.has(sessionId)) return;
    const member = this.addMember(sessionId, user, now); // its channel starts with its HS1
    member.joinedAfterUs = true;
  }

  /** Someone left: if it had our key, a fresh one, so nothing said later reaches it. */
  memberLeft(sessionId: number, now: number): void {
    const member = this.members.get(sessionId);
    this.offered.delete(sessionId);
    if (member === undefined) return;
    this.members.delete(sessionId);
    if (!member.hasKey) return; // it never could open our frames: nothing to take away
    if (now >= this.lastRotation + this.settings.rotationMinInterval) this.rotate(now);
    else if (this.rotateAt === null) this.rotateAt = this.lastRotation + this.settings.rotationMinInterval;
  }

  // --- pair messages ---

  /** A `peer_from` message: sender's session id and data. */
  peerReceived(sender: number, data: Uint8Array, now: number): Promise<void> {
    return this.serial(() => this.onPeer(sender, Uint8Array.from(data), now));
  }

  private async onPeer(sender: number, data: Uint8Array, now: number): Promise<void> {
    const member = this.members.get(sender);
    if (member === undefined) {
      this.problem(sender, "end-to-end message from someone not in the room", now);
      return;
    }
    if (member.rejected) return; // reported once already; nothing it says counts
    if (data[0] === MessageKind.HS1) {
      this.onHs1(member, data, now);
      return;
    }
    const channel = member.channel;
    if (channel === null) {
      this.problem(sender, "end-to-end message before a handshake", now);
      return;
    }
    let pairEvents;
    try {
      pairEvents = channel.receive(data);
    } catch (e) {
      if (e instanceof PeerAuthError) {
        this.flush(member);
        this.reject(member, e.message);
        return;
      }
      if (e instanceof PeerError) {
        this.flush(member);
        if (channel.failed) this.reject(member, e.message);
        else this.problem(sender, e.message, now);
        return;
      }
      throw e;
    }
    for (const event of pairEvents) {
      if (event instanceof PeerVerified) this.onVerified(member, event, now);
      else if (event instanceof PeerMessage) await this.onPayload(member, event.payload, now);
      if (member.rejected) break;
    }
    this.flush(member);
  }

  /** A member starts a handshake with us; settle who initiates if both did. */
  private onHs1(member: Member, data: Uint8Array, now: number): void {
    const channel = member.channel;
    if (channel !== null && channel.initiator && !channel.failed && this.sessionId < member.sessionId) {
      return; // ours stands; they will answer it
    }
    if (member.identity !== null || (channel !== null && !channel.initiator && !channel.failed)) {
      // One handshake per session; another HS1 is a replay or a forgery and must not
      // destroy the one under way.
      this.problem(member.sessionId, "second handshake start ignored", now);
      return;
    }
    // Try it on a new channel first, so a forged HS1 changes nothing.
    const candidate = this.newChannel(member, false);
    try {
      candidate.receive(data);
    } catch (e) {
      if (!(e instanceof PeerError)) throw e;
      this.problem(member.sessionId, `handshake start ignored: ${e.message}`, now);
      return;
    }
    member.channel = candidate;
    this.flush(member);
  }

  private onVerified(member: Member, event: PeerVerified, now: number): void {
    let hello: PeerHello;
    try {
      hello = decodeHello(event.hello);
    } catch (e) {
      if (!(e instanceof PeerError)) throw e;
      this.reject(member, e.message);
      return;
    }
    if (hello.user !== member.user) {
      // Whoever holds the secret could claim any name; the server's login is the other
      // witness, and both must agree.
      const responder = member.channel !== null && !member.channel.initiator;
      this.reject(member, `says it is ${pyRepr(hello.user)} but the server says ${pyRepr(member.user)}`);
      // Instead of our confirmation: they learn it now, not by timeout.
      if (responder) this.outgoing.push([member.sessionId, new Uint8Array([MessageKind.REJECT])]);
      return;
    }
    member.identity = event.remoteIdentity;
    member.deadline = null;
    this.ourHalf ??= safetyHalf(this.identityPublic);
    const safetyNumber = [this.ourHalf, safetyHalf(member.identity)].sort().join(" ");
    this.events.push(
      Object.freeze({
        type: "MemberVerified",
        sessionId: member.sessionId,
        user: member.user,
        identity: member.identity,
        safetyNumber,
        fingerprint: identityFingerprint(member.identity),
      }),
    );
    this.firstKey(member, now);
  }

  /** Give a member that just verified our key, never one it could open the past with. */
  private firstKey(member: Member, now: number): void {
    // While a rotation is owed, our key is one a departed member had: the rotation brings
    // a fresh one to everyone verified, this member too.
    if (this.rotateAt !== null) return;
    if (member.joinedAfterUs && this.outbound.ratchet(this.token)) {
      this.rotated(now); // the step limit forced a fresh key: everyone needs it
      return;
    }
    this.sendKey(member);
  }

  private async onPayload(member: Member, payload: Uint8Array, now: number): Promise<void> {
    let released;
    try {
      const message = decodePayload(payload);
      if (message.t === "rr") {
        const burst = message.burstTenths === null ? null : message.burstTenths / 10;
        this.events.push(
          Object.freeze({ type: "ReportReceived", sessionId: member.sessionId, loss: message.lossPermille / 1000, burst }),
        );
        return;
      }
      if (message.t === "cand") return; // a browser has no direct paths: checked, ignored
      if (message.t === "secret") {
        this.offered.set(member.sessionId, message.secret);
        return;
      }
      const key = new SenderKey(message.generation, message.step, message.baseKey);
      released = member.inbound.install(key, (p) => member.metadata[p], now);
    } catch (e) {
      if (!(e instanceof PeerError)) throw e;
      this.problem(member.sessionId, e.message, now);
      return;
    }
    for (const item of await released) {
      if (item.purpose === PURPOSE_VOICE) {
        // It left while the frames opened: its voice has no stream to go to any more.
        if (this.members.get(member.sessionId) !== member) continue;
        this.events.push(Object.freeze({ type: "VoiceReleased", sessionId: member.sessionId, payload: item.plaintext }));
      } else {
        this.chatPlaintext(member, item.plaintext, now);
      }
    }
  }

  /**
   * Tell a verified member how its voice reaches us, loss 0..1 and the mean packets lost
   * in a row (dropped if not verified).
   */
  sendReport(sessionId: number, loss: number, burst = 0): void {
    const permille = Math.min(Math.max(Math.round(loss * 1000), 0), 1000);
    const tenths = Math.min(Math.max(Math.round(burst * 10), 0), MAX_BURST_TENTHS);
    const safe = (n: number): number => (Number.isFinite(n) ? n : 0);
    this.sendPayload(sessionId, encodeReport(safe(permille), safe(tenths)));
  }

  // --- rotating the room secret (PROTOCOL.md 3.15) ---

  /**
   * Send the room's next secret to every verified member; the members it went to.
   * Nothing changes until tokenChanged (the server took the rotation).
   */
  offerSecret(secret: Uint8Array): number[] {
    if (secret.length !== ROOM_SECRET_SIZE) throw new LocalProtocolError(`a room secret is ${ROOM_SECRET_SIZE} bytes`);
    this.offered.set(this.sessionId, Uint8Array.from(secret));
    const sent: number[] = [];
    for (const member of this.members.values()) {
      if (member.identity !== null && !member.rejected) {
        this.sendPayload(member.sessionId, encodeSecret(secret));
        sent.push(member.sessionId);
      }
    }
    return sent;
  }

  /**
   * The server says the room's join token is now `token`: the offered secret that derives
   * it becomes the room secret (pair handshakes from now on use it) and is returned; null
   * if no offer fits (we missed the rotation). Runs after the pair messages received
   * before it, as the server sent them.
   */
  tokenChanged(token: Uint8Array): Promise<Uint8Array | null> {
    return this.serial(async () => {
      for (const secret of this.offered.values()) {
        if (sameBytes(deriveJoinToken(secret, this.roomId), token)) {
          this.psk = deriveRoomPsk(secret, this.roomId);
          this.offered.clear();
          return secret;
        }
      }
      return null;
    });
  }

  private sendPayload(sessionId: number, payload: Uint8Array): void {
    const member = this.members.get(sessionId);
    if (member === undefined || member.rejected || member.identity === null) return;
    const channel = member.channel;
    if (channel === null || !channel.established) return;
    channel.send(payload);
    this.flush(member);
  }

  // --- voice ---

  /** SFrame frame of a VoiceFrame under our current key (`now` is unused: keys change on events). */
  sealVoice(plain: Uint8Array, _now?: number): Promise<Uint8Array> {
    return this.outbound.seal(PURPOSE_VOICE, this.voiceMeta, plain);
  }

  /** Plaintext of a member's voice frame, null if held for its key; rejects with PacketError if bad. */
  openVoice(senderSessionId: number, payload: Uint8Array, now: number): Promise<Uint8Array | null> {
    return this.serial(async () => {
      const member = this.members.get(senderSessionId);
      if (member === undefined || member.rejected) throw new PacketError("voice from a member without keys");
      return member.inbound.open(PURPOSE_VOICE, member.metadata.voice, payload, now);
    });
  }

  // --- chat ---

  /** Sealed chat message for `say.data`. */
  sealChat(text: string): Promise<Uint8Array> {
    const n = codePoints(text);
    if (!(n > 0 && n <= MAX_CHAT_TEXT)) throw new LocalProtocolError(`chat text must be 1..${MAX_CHAT_TEXT} characters`);
    if (/\p{Cs}/u.test(text)) throw new LocalProtocolError("chat text has a lone surrogate (not UTF-8 encodable)");
    const body = encodeChat(this.chatSeq, text);
    this.chatSeq += 1;
    return this.outbound.seal(PURPOSE_CHAT, this.chatMeta, body);
  }

  /** A sealed chat message from the server (`chat.sender`, `chat.data`); results arrive as events. */
  openChat(sender: number, data: Uint8Array, now: number): Promise<void> {
    return this.serial(async () => {
      const member = this.members.get(sender);
      if (member === undefined || member.rejected) {
        this.problem(sender, "chat from a member without keys dropped", now);
        return;
      }
      let plaintext: Uint8Array | null;
      try {
        plaintext = await member.inbound.open(PURPOSE_CHAT, member.metadata.chat, data, now);
      } catch (e) {
        if (!(e instanceof PacketError)) throw e;
        this.problem(sender, `chat message dropped: ${e.message}`, now);
        return;
      }
      if (plaintext !== null) this.chatPlaintext(member, plaintext, now);
    });
  }

  private chatPlaintext(member: Member, plaintext: Uint8Array, now: number): void {
    let body: ChatBody;
    try {
      body = decodeChat(plaintext);
    } catch (e) {
      if (!(e instanceof PeerError)) throw e;
      this.problem(member.sessionId, e.message, now);
      return;
    }
    const expected = member.nextChatSeq;
    if (expected !== null && body.seq > expected) {
      this.events.push(Object.freeze({ type: "ChatGap", sessionId: member.sessionId, missing: body.seq - expected }));
    } else if (expected !== null && body.seq < expected) {
      this.problem(member.sessionId, "chat message out of order dropped", now);
      return;
    }
    member.nextChatSeq = body.seq + 1n;
    this.events.push(Object.freeze({ type: "ChatOpened", sessionId: member.sessionId, text: body.text }));
  }

  // --- timers ---

  handleTimer(now: number): void {
    if (this.rotateAt !== null && now >= this.rotateAt) this.rotate(now);
    for (const reports of this.reports.values()) this.summarise(reports, now);
    for (const member of [...this.members.values()]) {
      if (member.deadline !== null && now >= member.deadline && member.identity === null) {
        this.reject(member, `did not prove the room secret within ${pyG(this.settings.peerVerifyTimeout)} s`);
      }
      const dropped = member.inbound.expire(now);
      if (dropped) this.problem(member.sessionId, `${dropped} frame(s) never got a key and were dropped`, now);
    }
  }

  /** Report every count of problems held back now (we are leaving: nothing lost). */
  reportHeldProblems(now: number): void {
    for (const reports of this.reports.values()) this.summarise(reports, now, true);
  }

  // --- internals ---

  /** Runs `fn` after every earlier queued call finished (WebCrypto awaits must not interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private addMember(sessionId: number, user: string, now: number): Member {
    const s = this.settings;
    const member: Member = {
      sessionId,
      user,
      inbound: new Inbound({
        grace: s.oldKeyGrace,
        maxRatchetAhead: s.maxRatchetAhead,
        maxPending: { voice: s.maxPendingFrames, chat: s.maxPendingChat },
        pendingTimeout: s.pendingTimeout,
        maxGenerationsAhead: s.maxGenerationsAhead,
      }),
      metadata: Object.freeze({
        voice: frameMetadata(VOICE_LABEL, this.roomId, sessionId),
        chat: frameMetadata(CHAT_LABEL, this.roomId, sessionId),
      }),
      channel: null,
      deadline: now + s.peerVerifyTimeout,
      identity: null,
      rejected: false,
      nextChatSeq: null,
      joinedAfterUs: false,
      hasKey: false,
    };
    this.members.set(sessionId, member);
    return member;
  }

  private newChannel(member: Member, initiator: boolean): PairChannel {
    const [first, second] = initiator ? [this.sessionId, member.sessionId] : [member.sessionId, this.sessionId];
    return new PairChannel({
      initiator,
      identityPrivate: this.identityPrivate,
      psk: this.psk,
      prologue: pairPrologue(this.roomId, first, second),
      hello: this.hello,
    });
  }

  /** We start the handshake (we are the newcomer). */
  private openChannel(member: Member): void {
    member.channel = this.newChannel(member, true);
    member.channel.start();
    this.flush(member);
  }

  private flush(member: Member): void {
    if (member.channel === null) return;
    for (const data of member.channel.messagesToSend()) this.outgoing.push([member.sessionId, data]);
  }

  private sendKey(member: Member): void {
    const channel = member.channel;
    if (channel === null || !channel.established) return;
    channel.send(encodeKeyMessage(this.outbound.key));
    member.hasKey = true;
    this.flush(member);
  }

  private rotate(now: number): void {
    this.outbound.rotate(this.token);
    this.rotated(now);
  }

  /** Our key was replaced by a fresh one: every verified member gets it. */
  private rotated(now: number): void {
    this.lastRotation = now;
    this.rotateAt = null;
    for (const member of this.members.values()) {
      if (member.identity !== null && !member.rejected) this.sendKey(member);
    }
  }

  private reject(member: Member, reason: string): void {
    if (member.rejected) return;
    member.rejected = true;
    member.deadline = null;
    member.identity = null;
    member.channel = null;
    this.events.push(Object.freeze({ type: "MemberRejected", sessionId: member.sessionId, user: member.user, reason }));
  }

  /** Report a bad message, unless this account's reports are being counted instead. */
  private problem(sessionId: number, message: string, now: number): void {
    const user = this.members.get(sessionId)?.user ?? ""; // strangers share one count
    let reports = this.reports.get(user);
    if (reports === undefined) {
      const limiter = new ReportLimiter(this.settings.problemReportBurst, this.settings.problemReportInterval, now);
      reports = { sessionId, user, limiter };
      this.reports.set(user, reports);
      while (this.reports.size > MAX_REPORT_SOURCES) {
        // Only a lying server gets here: the oldest count is reported at once.
        const [oldestUser, oldest] = this.reports.entries().next().value as [string, Reports];
        this.reports.delete(oldestUser);
        this.summarise(oldest, now, true);
      }
    } else {
      this.reports.delete(user); // move to the end: most recently active
      this.reports.set(user, reports);
    }
    reports.sessionId = sessionId;
    if (reports.limiter.allow(message, now)) {
      this.events.push(Object.freeze({ type: "PeerProblem", sessionId, message, user }));
    }
  }

  /** One report for the problems counted instead of reported, when it is due. */
  private summarise(reports: Reports, now: number, force = false): void {
    const held = reports.limiter.takeDue(now, force);
    if (!held.length) return;
    const kinds = held.map(([text, count]) => `${text} (x${count})`).join(", ");
    const total = held.reduce((n, [, count]) => n + count, 0);
    this.events.push(
      Object.freeze({
        type: "PeerProblem",
        sessionId: reports.sessionId,
        message: `${total} more problem(s) not shown: ${kinds}`,
        user: reports.user,
      }),
    );
  }
}

/** Equal length and every byte equal (secrecy needs no constant time here: the token is
 * what every member and the server see). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/** Python's repr of a str, as the Python side words the name-check reason. */
function pyRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === "\\") out += "\\\\";
    else if (ch === quote) out += "\\" + quote;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else out += ch;
  }
  return quote + out + quote;
}

/** Python's `{x:g}` for the small positive numbers settings hold (10.0 -> "10", 2.5 -> "2.5"). */
function pyG(x: number): string {
  return String(Number(x.toPrecision(6)));
}
