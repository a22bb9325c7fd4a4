// One browser member's media for one call, sans-I/O: a relay-only form of
// src/bangor/media/session.py (a browser has no direct paths). Codec, crypto and network
// stay outside: the core takes this tick's Opus packet and the datagrams that came, and
// gives the datagrams to send, one play-out decision per sender per tick, the reception
// reports for RoomCrypto to send as `rr` messages, events and timers.
//
// The frame path: Opus packet -> VoiceFrame (seq, packet, copies) -> SFrame (async,
// WebCrypto) -> hop seal -> datagram; datagram -> hop open -> relayed prefix -> SFrame
// open -> VoiceFrame -> the sender's jitter buffer -> decision.

import { PacketError } from "../wire/errors.ts";
import { readU64, u64 } from "../wire/bytes.ts";
import { PacketType } from "../wire/media.ts";
import { unpackRelayed } from "../wire/voice.ts";
import type { Decision, JitterStats } from "./jitter.ts";
import { Sender, type EncoderHint } from "./sender.ts";
import { DEFAULT_SETTINGS, type MediaSettings } from "./settings.ts";
import { Streams, type TickDecision } from "./streams.ts";

export { PacketType };

/** Look at the send plan again this often even without reports (old ones expire). */
export const PLAN_INTERVAL = 1.0;
const STAMP = 8; // keepalive payload: our clock in ns, uint64 BE, echoed by the server

/** The hop layer (wire/media.ts): seal to the server, open from it; PacketError if it does not open. */
export interface HopCodec {
  seal(type: number, payload: Uint8Array): Uint8Array;
  open(datagram: Uint8Array): { type: number; payload: Uint8Array };
}

/**
 * End-to-end voice crypto (RoomCrypto in wire/e2ee.ts). openVoice: the VoiceFrame bytes;
 * null when the frame is held until its key arrives (RoomCrypto releases it later: give
 * it to pushReleased); PacketError when it cannot be opened (no member, forged, replayed).
 */
export interface VoiceCrypto {
  sealVoice(plain: Uint8Array, now: number): Promise<Uint8Array>;
  openVoice(sender: number, payload: Uint8Array, now: number): Promise<Uint8Array | null>;
}

export interface MediaSessionOptions {
  sessionId: number;
  hop: HopCodec;
  crypto: VoiceCrypto;
  frameMs?: number;
  settings?: Partial<MediaSettings>;
}

export interface SenderStats {
  readonly sessionId: number;
  readonly jitter: JitterStats;
  /** Packets the network lost since the start, 0..1. */
  readonly loss: number;
  readonly frameMs: number;
  readonly speaking: boolean;
}

export interface MediaStats {
  /** Voice frames we sent; window.bangor.state().sent_frames. */
  readonly sentFrames: number;
  /** Ticks with no frame (voice gate, mute). */
  readonly suppressed: number;
  /** Voice frames that opened end to end and parsed; window.bangor.state().received_frames. */
  readonly receivedFrames: number;
  /** Relayed voice packets that opened at the hop (before end-to-end checks). */
  readonly received: number;
  /** Datagrams that failed to open at the hop, or were malformed there. */
  readonly dropped: number;
  /** Voice that failed end to end (no key, forged, replayed, malformed VoiceFrame). */
  readonly undecryptable: number;
  /** Seconds, to the server by keepalives; null before the first ack. */
  readonly rtt: number | null;
  readonly relayUp: boolean;
  readonly bitrate: number;
  readonly redundancy: number;
  readonly fecLossPct: number;
  /** The worst loss listeners report on our voice now, 0..1. */
  readonly reportedLoss: number;
  /** Loss over all senders we hear since the start, 0..1. */
  readonly loss: number;
  /** The highest p95 jitter of the senders we hear, ms. */
  readonly jitterMs: number;
  readonly senders: readonly SenderStats[];
}

export type MediaEvent =
  /** The server answered our first keepalive: voice flows through the relay. */
  | { readonly type: "relay_up" }
  | { readonly type: "speaking_started"; readonly sessionId: number }
  | { readonly type: "speaking_stopped"; readonly sessionId: number }
  /** Reconfigure the Opus encoder (bit rate, FEC loss percentage). */
  | { readonly type: "encoder"; readonly hint: EncoderHint }
  /** A snapshot, once per report interval. */
  | { readonly type: "stats"; readonly stats: MediaStats };

/** Events are few per tick; this bounds them if the app never reads them. */
export const MAX_EVENTS = 1024;
/** Datagrams queued and not taken: bounds memory if the app stops sending. */
export const MAX_QUEUED_DATAGRAMS = 256;

export class MediaSession {
  readonly sessionId: number;
  readonly settings: MediaSettings;
  readonly sender: Sender;
  readonly streams: Streams;
  private readonly hop: HopCodec;
  private readonly crypto: VoiceCrypto;
  private out: Uint8Array[] = [];
  private reports: { to: number; loss: number; burst: number }[] = [];
  private readonly events: MediaEvent[] = [];
  private rtt: number | null = null;
  private relayUp = false;
  private received = 0;
  private receivedFrames = 0;
  private dropped = 0;
  private undecryptable = 0;
  private nextKeepalive: number | null = null;
  private nextReport: number | null = null;
  private nextPlan: number | null = null;
  private sending: Promise<void> = Promise.resolve(); // the last sendFrame's, for order
  private leaves = 0; // memberLeft calls so far: tells an open that spanned one

  constructor(options: MediaSessionOptions) {
    this.sessionId = options.sessionId;
    this.hop = options.hop;
    this.crypto = options.crypto;
    this.settings = Object.freeze({
      ...DEFAULT_SETTINGS,
      ...options.settings,
      ...(options.frameMs !== undefined ? { frameMs: options.frameMs } : {}),
    });
    this.sender = new Sender(this.settings);
    this.streams = new Streams(this.settings);
  }

  /** We joined: say hello to the relay (a keepalive) and start the timers. Idempotent. */
  start(now: number): void {
    if (this.nextKeepalive !== null) return;
    this.keepalive(now);
    this.nextReport = now + this.settings.reportInterval;
    this.nextPlan = now + PLAN_INTERVAL;
    this.sender.updatePlan(now);
    this.emit({ type: "encoder", hint: this.sender.encoderHint() });
  }

  /** A member joined: our copies stay consecutive until its reports show it reads spread ones. */
  memberJoined(sessionId: number): void {
    this.sender.adapter.joined(sessionId);
  }

  /** A member left: forget its stream and its reports on our voice. */
  memberLeft(sessionId: number, now: number): void {
    if (this.streams.streams.get(sessionId)?.speaking) this.emit({ type: "speaking_stopped", sessionId });
    this.leaves += 1;
    this.streams.forget(sessionId);
    this.sender.forget(sessionId);
    this.updatePlan(now);
  }

  /** The room's bit rate cap from the server (null or 0: none). */
  setMaxBitrate(maxBitrate: number | null, now: number): void {
    if (this.sender.setMaxBitrate(maxBitrate, now)) this.emit({ type: "encoder", hint: this.sender.encoderHint() });
  }

  encoderHint(): EncoderHint {
    return this.sender.encoderHint();
  }

  // --- sending -------------------------------------------------------------------------

  /**
   * This tick's Opus packet, or null when not sending this tick (voice gate, mute): the
   * tick still counts. Call once per tick (this or sendFrames); seq is taken at the call,
   * and the datagrams go out in call order even if the sealing promises settle out of order.
   */
  sendFrame(opus: Uint8Array | null, now: number): Promise<void> {
    return this.sendFrames(opus === null ? [] : [opus], now);
  }

  /**
   * This tick's Opus packets: consecutive ticks ending with this one, oldest first (the
   * voice gate's pre-roll, then the voiced frame), each numbered with its own tick's seq;
   * empty when not sending this tick.
   */
  async sendFrames(opus: readonly Uint8Array[], now: number): Promise<void> {
    this.start(now);
    const frames = this.sender.frames(opus);
    if (!frames.length) return;
    const sealing = frames.map((frame) => this.crypto.sealVoice(frame, now));
    const before = this.sending;
    const done = (async () => {
      await before;
      let failed: unknown = null;
      for (const sealed of sealing) {
        try {
          this.send(PacketType.VOICE, await sealed);
        } catch (e) {
          failed ??= e; // the others still go out, and none is left unhandled
        }
      }
      if (failed !== null) throw failed;
    })();
    this.sending = done.catch(() => undefined); // one failed seal does not block the next
    await done;
  }

  // --- receiving -----------------------------------------------------------------------

  /** A datagram from the WebTransport session. Whatever does not open is counted, never thrown. */
  async receiveDatagram(data: Uint8Array, now: number): Promise<void> {
    this.start(now);
    let sender: number;
    let inner: Uint8Array;
    try {
      const { type, payload } = this.hop.open(data);
      if (type === PacketType.KEEPALIVE_ACK) {
        this.onAck(payload, now);
        return;
      }
      if (type !== PacketType.VOICE) return; // authenticated, not for a client: ignored
      ({ sender, payload: inner } = unpackRelayed(payload));
    } catch (e) {
      if (!(e instanceof PacketError)) throw e;
      this.dropped += 1;
      return;
    }
    this.received += 1;
    const leaves = this.leaves;
    let plain: Uint8Array | null;
    try {
      plain = await this.crypto.openVoice(sender, inner, now);
    } catch (e) {
      if (!(e instanceof PacketError)) throw e;
      this.undecryptable += 1;
      return;
    }
    if (plain === null) return; // held until the sender's key arrives
    // Someone left while this opened: if its stream is gone, the sender may be the one
    // who left, and a new stream would outlive it (at worst a newcomer's first frame goes).
    if (this.leaves !== leaves && !this.streams.streams.has(sender)) return;
    if (this.streams.push(sender, plain, now, now)) this.receivedFrames += 1;
    else this.undecryptable += 1;
  }

  /** Frames RoomCrypto held for a key and released now (its VoiceReleased), oldest first. */
  pushReleased(sender: number, plaintexts: readonly Uint8Array[], now: number): void {
    const bad = this.streams.pushReleased(sender, plaintexts, now);
    this.undecryptable += bad;
    this.receivedFrames += plaintexts.length - bad;
  }

  /** A member's reception report on our voice (RoomCrypto's rr): adapts redundancy and FEC. */
  receiveReport(from: number, loss: number, now: number, burst: number | null = null): void {
    if (!Number.isFinite(loss)) return; // RoomCrypto checks rr; never let NaN decide
    this.sender.adapter.report(from, loss, now, burst !== null && Number.isFinite(burst) ? burst : null);
    this.updatePlan(now);
  }

  // --- play-out ------------------------------------------------------------------------

  /** One play-out tick: the decision of each sender that plays or is due (see streams.ts). */
  playout(now: number): Map<number, TickDecision> {
    this.start(now);
    const decisions = this.streams.play();
    for (const [sid, stream] of this.streams.streams) {
      const speaking = this.streams.speaking(sid);
      if (speaking !== stream.speaking) {
        stream.speaking = speaking;
        this.emit({ type: speaking ? "speaking_started" : "speaking_stopped", sessionId: sid });
      }
    }
    return decisions;
  }

  // --- outputs -------------------------------------------------------------------------

  datagramsToSend(): Uint8Array[] {
    const out = this.out;
    this.out = [];
    return out;
  }

  /** Reports for RoomCrypto to send as `rr` member messages. */
  reportsToSend(): { to: number; loss: number; burst: number }[] {
    const out = this.reports;
    this.reports = [];
    return out;
  }

  nextEvent(): MediaEvent | null {
    return this.events.shift() ?? null;
  }

  getTimer(): number | null {
    const times = [this.nextKeepalive, this.nextReport, this.nextPlan].filter((t): t is number => t !== null);
    return times.length ? Math.min(...times) : null;
  }

  handleTimer(now: number): void {
    if (this.nextKeepalive !== null && now >= this.nextKeepalive) this.keepalive(now);
    if (this.nextReport !== null && now >= this.nextReport) {
      this.nextReport = Math.max(this.nextReport + this.settings.reportInterval, now);
      for (const { sender, loss, burst } of this.streams.receptionReports(now)) {
        this.reports.push({ to: sender, loss, burst });
      }
      this.emit({ type: "stats", stats: this.stats(now) });
    }
    if (this.nextPlan !== null && now >= this.nextPlan) {
      this.nextPlan = Math.max(this.nextPlan + PLAN_INTERVAL, now);
      this.updatePlan(now); // old reports expire, startup protection ends
    }
  }

  stats(now: number): MediaStats {
    let expected = 0;
    let lost = 0;
    let jitterMs = 0;
    const senders: SenderStats[] = [];
    for (const [sid, stream] of this.streams.streams) {
      const total = stream.meter.total();
      const jitter = stream.jitter.stats();
      expected += total.expected;
      lost += total.lost;
      jitterMs = Math.max(jitterMs, jitter.jitterMs);
      senders.push(
        Object.freeze({ sessionId: sid, jitter, loss: total.loss, frameMs: stream.frameMs, speaking: stream.speaking }),
      );
    }
    const plan = this.sender.plan;
    return Object.freeze({
      sentFrames: this.sender.sent,
      suppressed: this.sender.suppressed,
      receivedFrames: this.receivedFrames,
      received: this.received,
      dropped: this.dropped,
      undecryptable: this.undecryptable,
      rtt: this.rtt,
      relayUp: this.relayUp,
      bitrate: plan.bitrate,
      redundancy: plan.depth,
      fecLossPct: plan.expectedLoss,
      reportedLoss: this.sender.adapter.worstLoss(now),
      loss: expected ? lost / expected : 0,
      jitterMs,
      senders: Object.freeze(senders),
    });
  }

  // --- inside ----------------------------------------------------------------------------

  private updatePlan(now: number): void {
    if (this.sender.updatePlan(now)) this.emit({ type: "encoder", hint: this.sender.encoderHint() });
  }

  private onAck(payload: Uint8Array, now: number): void {
    if (payload.length !== STAMP) return;
    const sent = readU64(payload, 0);
    const elapsed = ns(now) - sent;
    this.rtt = elapsed > 0n ? Number(elapsed) / 1e9 : 0;
    if (!this.relayUp) {
      this.relayUp = true;
      this.emit({ type: "relay_up" });
    }
  }

  private keepalive(now: number): void {
    // The stamp is our own clock: only we read it back, from the server's echo.
    this.send(PacketType.KEEPALIVE, u64(ns(now)));
    this.nextKeepalive = now + this.settings.keepaliveInterval;
  }

  private send(type: number, payload: Uint8Array): void {
    this.out.push(this.hop.seal(type, payload));
    // The app takes them every tick; if it stops, the oldest voice is worth least.
    if (this.out.length > MAX_QUEUED_DATAGRAMS) this.out.shift();
  }

  private emit(event: MediaEvent): void {
    this.events.push(Object.freeze(event));
    if (this.events.length > MAX_EVENTS) this.events.shift();
  }
}

function ns(now: number): bigint {
  return BigInt(Math.max(Math.round(now * 1e9), 0));
}

export type { Decision, TickDecision, EncoderHint, MediaSettings };
