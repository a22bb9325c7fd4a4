// Per-member SFrame sender keys for a room: ratchet on join, rotate on leave, sans-I/O;
// mirrors src/bangor/wire/senderkeys.py and PROTOCOL.md 8.4 and 8.6.
//
// Every member seals its own voice frames and chat messages with its own sender key (a
// 32-byte base key); the keys reach the other members over pair channels. A receiver
// keeps one Inbound per remote sender, so the KID only names the key:
// KID = makeKid(0, generation % 256, step).
// - Join: every sender ratchets one step, so the newcomer (given only the new key) cannot
//   open anything older. Receivers derive the next steps themselves from a frame's KID
//   and commit a derived key only once the frame's tag verified.
// - Leave: every sender makes a fresh random key in the next generation and sends it to
//   the members that remain. Frames of the next generations that arrive before their key
//   are held (bounded) and released by install(). A replaced key opens late frames for a
//   grace period.
// - Step limit: a sender whose step would pass 255 rotates instead (ratchet() returns true).
// Voice and chat use independent keys derived from the base key, in separate SFrame
// contexts. AES-GCM is WebCrypto (async), so sealing and opening return promises; key
// state changes happen synchronously, and a derived key is committed after its trial
// open only if nothing changed meanwhile (else the frame is classified again).

import { randomBytes } from "@noble/hashes/utils.js";
import { concat, equal, utf8 } from "./bytes.ts";
import { LocalProtocolError, PacketError, PeerError } from "./errors.ts";
import {
  GENERATION_BITS,
  RATCHET_STEP_BITS,
  SFrameContext,
  SFrameKey,
  TAG_SIZE,
  expandLabel,
  extract,
  makeKid,
  parseHeader,
  ratchet,
  splitKid,
} from "./sframe.ts";

export type Purpose = "voice" | "chat";
export const PURPOSE_VOICE: Purpose = "voice";
export const PURPOSE_CHAT: Purpose = "chat";
export const PURPOSES: readonly Purpose[] = Object.freeze([PURPOSE_VOICE, PURPOSE_CHAT]);
export const PURPOSE_LABEL = utf8.encode("bangor/1 "); // HKDF info prefix of a purpose key
export const PURPOSE_KEY_SIZE = 32;

export const BASE_KEY_SIZE = 32;
export const MAX_STEP = (1 << RATCHET_STEP_BITS) - 1; // 255
export const GENERATION_LIMIT = 2 ** 32; // full generation counter; the KID carries it mod 256
export const KID_GENERATIONS = 1 << GENERATION_BITS; // 256
export const KID_SENDER_INDEX = 0n;
/** Replaced receive keys kept for late frames (caps a burst of joins/leaves). */
export const MAX_OLD_KEYS = 8;

const UNKNOWN = -1;
const HOLD = 0; // > 0: derive that many ratchet steps forward

export { randomBytes };

function checkPurpose(purpose: string): asserts purpose is Purpose {
  if (purpose !== PURPOSE_VOICE && purpose !== PURPOSE_CHAT) {
    throw new LocalProtocolError(`unknown key purpose ${JSON.stringify(purpose)}`);
  }
}

/** One sender key: generation, ratchet step and 32-byte base key (immutable). */
export class SenderKey {
  readonly generation: number; // 0..2**32-1 (the KID carries generation % 256)
  readonly step: number; // 0..255
  readonly baseKey: Uint8Array;
  readonly kid: bigint;

  constructor(generation: number, step: number, baseKey: Uint8Array) {
    if (!Number.isInteger(generation) || generation < 0 || generation >= GENERATION_LIMIT) {
      throw new LocalProtocolError(`key generation ${generation} is outside 0..2**32-1`);
    }
    if (!Number.isInteger(step) || step < 0 || step > MAX_STEP) {
      throw new LocalProtocolError(`ratchet step ${step} is outside 0..${MAX_STEP}`);
    }
    if (!(baseKey instanceof Uint8Array) || baseKey.length !== BASE_KEY_SIZE) {
      throw new LocalProtocolError(`a sender key must be ${BASE_KEY_SIZE} bytes`);
    }
    this.generation = generation;
    this.step = step;
    this.baseKey = Uint8Array.from(baseKey);
    this.kid = makeKid(KID_SENDER_INDEX, generation % KID_GENERATIONS, step);
    Object.freeze(this);
  }

  /** Keys never reach logs: only the public coordinates are shown. */
  toString(): string {
    return `SenderKey(generation=${this.generation}, step=${this.step}, baseKey=<hidden>)`;
  }

  /** Negative, 0 or positive as this key is earlier than, equal to or later than `other`. */
  compare(other: SenderKey): number {
    return this.generation - other.generation || this.step - other.step;
  }

  /** The key one ratchet step forward (after a join). */
  ratcheted(): SenderKey {
    if (this.step >= MAX_STEP) throw new LocalProtocolError("ratchet step limit reached: rotate the key instead");
    return new SenderKey(this.generation, this.step + 1, ratchet(this.baseKey));
  }

  /** SFrame base key for `purpose`, independent of the other purpose's. */
  purposeKey(purpose: Purpose): Uint8Array {
    checkPurpose(purpose);
    return expandLabel(extract(this.baseKey), concat(PURPOSE_LABEL, utf8.encode(purpose)), PURPOSE_KEY_SIZE);
  }
}

/** A new random key at `generation`, step 0. */
export function freshSenderKey(generation = 0, token: (n: number) => Uint8Array = randomBytes): SenderKey {
  return new SenderKey(generation, 0, token(BASE_KEY_SIZE));
}

// --- sending ---

/** My own sending keys (voice and chat). Never build two from the same key (nonce reuse). */
export class Outbound {
  private current: SenderKey;
  private contexts = new Map<Purpose, SFrameContext>();

  constructor(key: SenderKey) {
    this.current = key;
    this.newContexts(key);
  }

  get key(): SenderKey {
    return this.current;
  }

  private newContexts(key: SenderKey): void {
    // A fresh context per generation: KIDs repeat every 256 generations (under other
    // keys), and a context refuses a KID it once sent under.
    this.contexts = new Map(PURPOSES.map((p) => [p, new SFrameContext()]));
    for (const [purpose, context] of this.contexts) context.addSendKey(key.kid, key.purposeKey(purpose));
  }

  /** One step forward (someone joined). True if the step limit forced a rotation instead:
   * the caller must then send `key` to every member, as after a leave. */
  ratchet(token: (n: number) => Uint8Array = randomBytes): boolean {
    if (this.current.step >= MAX_STEP) {
      this.rotate(token);
      return true;
    }
    const next = this.current.ratcheted();
    for (const [purpose, context] of this.contexts) {
      // Drop the old key first: nothing sent from now on may be open-able by it.
      context.removeSendKey(this.current.kid);
      context.addSendKey(next.kid, next.purposeKey(purpose));
    }
    this.current = next;
    return false;
  }

  /** Fresh random key in the next generation (someone left); old keys forgotten. */
  rotate(token: (n: number) => Uint8Array = randomBytes): SenderKey {
    if (this.current.generation + 1 >= GENERATION_LIMIT) {
      throw new LocalProtocolError("key generations exhausted: start a new sender");
    }
    const next = freshSenderKey(this.current.generation + 1, token);
    this.newContexts(next);
    this.current = next;
    return next;
  }

  /** SFrame frame of `plaintext` under the current key for `purpose` (CTR taken now). */
  seal(purpose: Purpose, metadata: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    const context = this.contexts.get(purpose);
    if (context === undefined) throw new LocalProtocolError(`unknown key purpose ${JSON.stringify(purpose)}`);
    return context.encrypt(this.current.kid, metadata, plaintext);
  }
}

// --- receiving ---

/** A held frame that opened once its key arrived. */
export interface Released {
  readonly purpose: Purpose;
  readonly plaintext: Uint8Array;
}

interface Held {
  readonly seq: number; // arrival order across purposes
  readonly purpose: Purpose;
  readonly arrived: number;
  readonly frame: Uint8Array;
}

export interface InboundSettings {
  /** Seconds a replaced receive key still opens late frames (old_key_grace). */
  readonly grace: number;
  readonly maxRatchetAhead: number;
  /** Held-frame bound per purpose. */
  readonly maxPending: Readonly<Record<Purpose, number>>;
  readonly pendingTimeout: number;
  readonly maxGenerationsAhead: number;
}

/** One remote sender's keys, as a receiver. */
export class Inbound {
  private readonly grace: number;
  private readonly maxAhead: number;
  private readonly maxPending: Readonly<Record<Purpose, number>>;
  private readonly pendingTimeout: number;
  private readonly maxGenerations: number;
  private readonly contexts = new Map<Purpose, SFrameContext>(PURPOSES.map((p) => [p, new SFrameContext()]));
  private currentKey: SenderKey | null = null;
  private currentKid = -1n;
  // Replaced keys still open for late frames: KID -> [key, deadline], oldest first.
  private readonly old = new Map<bigint, [SenderKey, number]>();
  private keyDeadline = Infinity; // earliest deadline in `old`
  private readonly held: Record<Purpose, Held[]> = { voice: [], chat: [] };
  private seq = 0;
  private droppedCount = 0;
  // Keys ahead of the current one and trial SFrame keys, cached so forged far-ahead KIDs
  // cost one AEAD check each. Both derive from the current key: caching gives nothing away.
  private readonly ahead: SenderKey[] = [];
  private readonly trial = new Map<string, SFrameKey>();

  constructor(settings: InboundSettings) {
    const { grace, maxRatchetAhead, maxPending, pendingTimeout, maxGenerationsAhead } = settings;
    if (!(grace >= 0) || !(pendingTimeout >= 0)) throw new LocalProtocolError("grace and pending timeout must be >= 0");
    if (!Number.isInteger(maxRatchetAhead) || maxRatchetAhead < 0 || maxRatchetAhead > MAX_STEP) {
      throw new LocalProtocolError(`max_ratchet_ahead must be 0..${MAX_STEP}`);
    }
    if (!PURPOSES.every((p) => Number.isInteger(maxPending[p]) && maxPending[p] >= 0)) {
      throw new LocalProtocolError("max_pending needs a bound >= 0 for voice and for chat");
    }
    if (!Number.isInteger(maxGenerationsAhead) || maxGenerationsAhead < 0 || maxGenerationsAhead >= KID_GENERATIONS / 2) {
      // Past half the KID's generation space "ahead" could not be told from "old".
      throw new LocalProtocolError(`max_generations_ahead must be 0..${KID_GENERATIONS / 2 - 1}`);
    }
    this.grace = grace;
    this.maxAhead = maxRatchetAhead;
    this.maxPending = { ...maxPending };
    this.pendingTimeout = pendingTimeout;
    this.maxGenerations = maxGenerationsAhead;
  }

  get current(): SenderKey | null {
    return this.currentKey;
  }

  /** Held frames dropped so far (overflow, expiry, failed to open). */
  get dropped(): number {
    return this.droppedCount;
  }

  // --- key changes ---

  /**
   * Take `key` from this sender's key message. The key state changes at once (PeerError,
   * thrown synchronously, and no change if the key is older than or conflicts with ours);
   * the promise gives the held frames it opened. `metadataFor(purpose)`: the SFrame
   * metadata for that purpose.
   */
  install(key: SenderKey, metadataFor: (purpose: Purpose) => Uint8Array, now: number): Promise<Released[]> {
    const current = this.currentKey;
    let skipped: SenderKey[] = [];
    if (current !== null) {
      const order = key.compare(current);
      if (order === 0) {
        if (equal(key.baseKey, current.baseKey)) return Promise.resolve([]); // a duplicate
        throw new PeerError(
          `conflicting key: generation ${key.generation} step ${key.step} differs from the one installed`,
        );
      }
      if (order < 0) {
        throw new PeerError(
          `stale key: generation ${key.generation} step ${key.step}, have ${current.generation} ${current.step}`,
        );
      }
      if (key.generation === current.generation) {
        // Within a generation only the ratchet leads forward.
        const chain = this.chain(key.step - current.step);
        if (!equal((chain[chain.length - 1] as SenderKey).baseKey, key.baseKey)) {
          throw new PeerError(
            `conflicting key: generation ${key.generation} step ${key.step} does not follow from step ${current.step}`,
          );
        }
        skipped = chain.slice(0, -1);
      }
    }
    // Ask for metadata before changing anything, so a failing callback leaves no trace.
    const metadata = new Map<Purpose, Uint8Array>();
    for (const p of PURPOSES) if (this.held[p].length) metadata.set(p, metadataFor(p));
    this.advance(key, skipped, now);
    return this.release(metadata, now);
  }

  private advance(key: SenderKey, skipped: SenderKey[], now: number): void {
    const deadline = now + this.grace;
    if (this.currentKey !== null) this.retire(this.currentKey, deadline);
    for (const old of skipped.slice(-(MAX_OLD_KEYS - 1))) {
      this.addToContexts(old);
      this.retire(old, deadline);
    }
    this.addToContexts(key);
    this.currentKey = key;
    this.currentKid = key.kid;
    this.ahead.length = 0;
    this.trial.clear();
    while (this.old.size > MAX_OLD_KEYS) this.remove(this.old.keys().next().value as bigint);
    this.updateDeadline();
  }

  private addToContexts(key: SenderKey): void {
    // Same KID 256 generations apart: the newer key wins.
    if (this.old.has(key.kid)) this.remove(key.kid);
    for (const [purpose, context] of this.contexts) context.addReceiveKey(key.kid, key.purposeKey(purpose));
  }

  private retire(key: SenderKey, deadline: number): void {
    this.old.set(key.kid, [key, deadline]);
  }

  private remove(kid: bigint): void {
    this.old.delete(kid);
    for (const context of this.contexts.values()) context.removeReceiveKey(kid);
  }

  private updateDeadline(): void {
    let d = Infinity;
    for (const [, deadline] of this.old.values()) d = Math.min(d, deadline);
    this.keyDeadline = d;
  }

  private expireKeys(now: number): void {
    for (const [kid, [, deadline]] of [...this.old]) if (now >= deadline) this.remove(kid);
    this.updateDeadline();
  }

  /** The current key ratcheted 1..steps times (cached until the current key changes). */
  private chain(steps: number): SenderKey[] {
    const current = this.currentKey;
    if (current === null) throw new LocalProtocolError("no current key to ratchet");
    let key = this.ahead.length ? (this.ahead[this.ahead.length - 1] as SenderKey) : current;
    while (this.ahead.length < steps) {
      key = key.ratcheted();
      this.ahead.push(key);
    }
    return this.ahead.slice(0, steps);
  }

  // --- frames ---

  /** Plaintext of `frame`, or null if it is held until its key arrives.
   * Rejects with PacketError if malformed, forged, replayed or under a key we do not have. */
  async open(purpose: Purpose, metadata: Uint8Array, frame: Uint8Array, now: number): Promise<Uint8Array | null> {
    const plaintext = await this.tryOpen(purpose, metadata, frame, now);
    if (plaintext === null) this.hold(purpose, frame, now);
    return plaintext;
  }

  private async tryOpen(purpose: Purpose, metadata: Uint8Array, frame: Uint8Array, now: number): Promise<Uint8Array | null> {
    const context = this.contexts.get(purpose);
    if (context === undefined) throw new LocalProtocolError(`unknown key purpose ${JSON.stringify(purpose)}`);
    const { kid, ctr, size } = parseHeader(frame);
    if (frame.length - size < TAG_SIZE) {
      // Checked here too so a frame that can never open is not held.
      throw new PacketError("truncated SFrame frame: shorter than the tag");
    }
    for (;;) {
      if (now >= this.keyDeadline) this.expireKeys(now); // an old key past its grace must not open this
      if (kid === this.currentKid || this.old.has(kid)) return (await context.decrypt(metadata, frame))[1];
      const action = this.classify(kid);
      if (action === HOLD) return null;
      if (action === UNKNOWN) throw new PacketError(`unknown SFrame key id 0x${kid.toString(16)}`);
      // The sender ratcheted (someone joined): try the derived key, commit on success.
      const current = this.currentKey;
      const chain = this.chain(action);
      const target = chain[chain.length - 1] as SenderKey;
      const cacheKey = `${purpose}/${action}`;
      let trial = this.trial.get(cacheKey);
      if (trial === undefined) {
        trial = new SFrameKey(target.kid, target.purposeKey(purpose));
        this.trial.set(cacheKey, trial);
      }
      await trial.open(ctr, frame.subarray(0, size), metadata, frame.subarray(size)); // PacketError: no change
      if (this.currentKey !== current) continue; // keys changed while we waited: decide again
      this.advance(target, chain.slice(0, -1), now);
      // Open again through the context so the CTR lands in the new key's replay window.
      return (await context.decrypt(metadata, frame))[1];
    }
  }

  /** HOLD, UNKNOWN or the number of ratchet steps `kid` is ahead of ours. */
  private classify(kid: bigint): number {
    const [sender, generation, step] = splitKid(kid);
    const current = this.currentKey;
    if (sender !== KID_SENDER_INDEX) return UNKNOWN;
    if (current === null) return HOLD; // its key message is on the way
    if (generation === current.generation % KID_GENERATIONS) {
      const ahead = step - current.step;
      return ahead >= 1 && ahead <= this.maxAhead ? ahead : UNKNOWN;
    }
    const gens = (((generation - current.generation) % KID_GENERATIONS) + KID_GENERATIONS) % KID_GENERATIONS;
    if (gens >= 1 && gens <= this.maxGenerations) return HOLD; // it rotated; its key is on the way
    return UNKNOWN;
  }

  private hold(purpose: Purpose, frame: Uint8Array, now: number): void {
    const held = this.held[purpose];
    const limit = this.maxPending[purpose];
    // Nothing can be verified before the key arrives, so anyone on the path can fill
    // this; the bound caps what that costs, dropping the oldest first.
    if (limit === 0) {
      this.droppedCount += 1;
      return;
    }
    if (held.length >= limit) {
      held.shift();
      this.droppedCount += 1;
    }
    held.push({ seq: this.seq++, purpose, arrived: now, frame: Uint8Array.from(frame) });
  }

  /** Retry every held frame in arrival order after a key change. */
  private async release(metadata: Map<Purpose, Uint8Array>, now: number): Promise<Released[]> {
    const entries = [...this.held.voice, ...this.held.chat].sort((a, b) => a.seq - b.seq);
    this.held.voice = [];
    this.held.chat = [];
    const released: Released[] = [];
    for (const entry of entries) {
      if (now >= entry.arrived + this.pendingTimeout) {
        this.droppedCount += 1;
        continue;
      }
      let plaintext: Uint8Array | null;
      try {
        plaintext = await this.tryOpen(entry.purpose, metadata.get(entry.purpose) as Uint8Array, entry.frame, now);
      } catch (e) {
        if (!(e instanceof PacketError)) throw e;
        this.droppedCount += 1;
        continue;
      }
      if (plaintext === null) {
        // Still a generation ahead: keep waiting, in the same order.
        this.held[entry.purpose].push(entry);
      } else {
        released.push(Object.freeze({ purpose: entry.purpose, plaintext }));
      }
    }
    return released;
  }

  // --- timers ---

  /** Forget keys past their grace and held frames past the pending timeout; returns how
   * many held frames were dropped. */
  expire(now: number): number {
    if (now >= this.keyDeadline) this.expireKeys(now);
    let dropped = 0;
    for (const p of PURPOSES) {
      const held = this.held[p];
      // The same sum getTimer() gives: `now - arrived >= timeout` can be false at that
      // time (rounding), and the timer would come back due without anything to do.
      while (held.length && now >= (held[0] as Held).arrived + this.pendingTimeout) {
        held.shift();
        dropped += 1;
      }
    }
    this.droppedCount += dropped;
    return dropped;
  }

  /** Earliest time expire() has work, or null. */
  getTimer(): number | null {
    const times: number[] = [];
    for (const p of PURPOSES) {
      const first = this.held[p][0];
      if (first !== undefined) times.push(first.arrived + this.pendingTimeout);
    }
    if (this.old.size) times.push(this.keyDeadline);
    return times.length ? Math.min(...times) : null;
  }
}
