// Voice on its way in, per sender (media/streams.py without the decoder, which lives in
// the browser shell): jitter buffer, loss meter, reception reports, speaking state.
//
// Each sender picks its own frame duration (10, 20 or 40 ms), read from its packets'
// Opus TOC byte; its jitter buffer counts its frames. Each of our ticks plays one tick's
// worth of each sender: one decision for a sender of our frame duration, one every other
// tick for 40 ms frames (none on the ticks its last frame still covers), two for 10 ms
// frames (the second in `also`).

import { PacketError } from "../wire/errors.ts";
import { copiesOf, parseVoiceFrame, reachOf } from "../wire/voice.ts";
import { JitterBuffer, type Decision } from "./jitter.ts";
import { LossMeter } from "./loss.ts";
import { atLeastOne, type MediaSettings } from "./settings.ts";

/** A speaker whose last real frame played within this is speaking. */
export const SPEAKING_MS = 200;
/** Senders we keep state for at most (a room is far smaller): bounds memory. */
export const MAX_STREAMS = 256;

/** One tick of one sender; `also` holds further frames when its frames are shorter than our tick. */
export type TickDecision = Decision & { readonly also?: readonly Decision[] };

// Opus TOC config -> frame duration in tenths of a ms (RFC 6716 3.1): SILK 10/20/40/60,
// hybrid 10/20, CELT 2.5/5/10/20.
const CONFIG_TENTHS = [
  ...[0, 1, 2].flatMap(() => [100, 200, 400, 600]),
  ...[0, 1].flatMap(() => [100, 200]),
  ...[0, 1, 2, 3].flatMap(() => [25, 50, 100, 200]),
];

/** The duration an Opus packet decodes to, from its TOC byte; null if it cannot be Opus. */
export function opusPacketMs(packet: Uint8Array): number | null {
  const toc = packet[0];
  if (toc === undefined) return null;
  const code = toc & 0x3;
  let count = code === 0 ? 1 : 2;
  if (code === 3) {
    count = (packet[1] ?? 0) & 0x3f;
    if (!count) return null;
  }
  const ms = ((CONFIG_TENTHS[toc >> 3] as number) * count) / 10;
  return ms > 120 ? null : ms;
}

export class ReceiveStream {
  readonly meter = new LossMeter();
  jitter: JitterBuffer;
  /** Play-out time owed to this sender, ms: each tick adds ours, each frame takes its own. */
  credit = 0;
  lastVoiceTick: number | null = null;
  speaking = false;
  /** We saw this sender's packets lost recently, until then: wait for its copies. */
  lossUntil = -1;

  constructor(
    jitter: JitterBuffer,
    public frameMs: number,
  ) {
    this.jitter = jitter;
  }
}

export class Streams {
  readonly streams = new Map<number, ReceiveStream>();
  ticks = 0;
  private readonly speakingTicks: number;

  constructor(private readonly settings: MediaSettings) {
    this.speakingTicks = atLeastOne(SPEAKING_MS, settings.frameMs);
  }

  /**
   * An opened voice frame into its sender's jitter buffer; false if malformed (or a new
   * sender past MAX_STREAMS). `arrival` is null for frames held back until their key came.
   */
  push(sender: number, plaintext: Uint8Array, now: number, arrival: number | null): boolean {
    let frame;
    try {
      frame = parseVoiceFrame(plaintext);
    } catch (e) {
      if (e instanceof PacketError) return false;
      throw e;
    }
    const ms = opusPacketMs(frame.opus) ?? this.settings.frameMs;
    let stream = this.streams.get(sender);
    if (stream === undefined) {
      if (this.streams.size >= MAX_STREAMS) return false;
      stream = new ReceiveStream(this.jitterBuffer(ms), ms);
      this.streams.set(sender, stream);
    } else if (ms !== stream.frameMs) {
      // The sender changed its frame duration: its buffer counted frames of the old one.
      stream.jitter = this.jitterBuffer(ms);
      stream.frameMs = ms;
    }
    stream.meter.onPacket(frame.packet);
    const jitter = stream.jitter;
    // While the sender repeats frames and we lose some, wait long enough for the copies;
    // without loss here the wait would only add delay.
    // The farthest copy comes `reach` ticks after its frame.
    jitter.setExtraFrames(stream.lossUntil > now ? reachOf(frame) : 0);
    for (const [seq, copy] of copiesOf(frame)) jitter.insert(seq, copy, null, true);
    jitter.insert(frame.seq, frame.opus, arrival);
    return true;
  }

  /**
   * Frames held until their key arrived, oldest first; how many were malformed. For a
   * stream not playing yet the older ones would only add delay: keep a prebuffer's worth.
   */
  pushReleased(sender: number, plaintexts: readonly Uint8Array[], now: number): number {
    let list = plaintexts;
    if (!this.streams.has(sender)) list = list.slice(-this.targetFrames(this.settings.frameMs));
    return list.filter((p) => !this.push(sender, p, now, null)).length;
  }

  forget(sender: number): void {
    this.streams.delete(sender);
  }

  /** (sender, loss, mean burst) of each speaker heard enough since the last call (PROTOCOL.md 6.1). */
  receptionReports(now: number): { sender: number; loss: number; burst: number }[] {
    const out = [];
    for (const [sender, stream] of this.streams) {
      const interval = stream.meter.interval();
      if (interval.lost) stream.lossUntil = now + this.settings.lossHold;
      if (interval.expected >= this.settings.minReportPackets) {
        out.push({ sender, loss: interval.loss, burst: interval.burst });
      }
    }
    return out;
  }

  /** One of our ticks: each sender's decision (see the module comment). */
  play(): Map<number, TickDecision> {
    this.ticks += 1;
    const out = new Map<number, TickDecision>();
    for (const [sender, stream] of this.streams) {
      const decisions: Decision[] = [];
      stream.credit += this.settings.frameMs;
      while (stream.credit > 0) {
        const d = stream.jitter.pop();
        if (d.kind === "silence") {
          stream.credit = 0; // nothing owed while nothing plays
          if (!decisions.length) decisions.push(d);
          break;
        }
        if (d.kind === "frame") stream.lastVoiceTick = this.ticks;
        decisions.push(d);
        stream.credit -= stream.frameMs;
      }
      const [first, ...also] = decisions;
      if (first !== undefined) out.set(sender, also.length ? Object.freeze({ ...first, also }) : first);
    }
    return out;
  }

  /** Whether a real frame of this speaker played within the last SPEAKING_MS. */
  speaking(sender: number): boolean {
    const last = this.streams.get(sender)?.lastVoiceTick;
    return last != null && this.ticks - last < this.speakingTicks;
  }

  private targetFrames(frameMs: number): number {
    return atLeastOne(this.settings.jitterTargetMs, frameMs);
  }

  // A jitter buffer for a sender of `frameMs` frames, its depths set in ms.
  private jitterBuffer(frameMs: number): JitterBuffer {
    // Each of our ticks takes this many of its frames at once: never aim below that.
    const perTick = atLeastOne(this.settings.frameMs, frameMs);
    const target = Math.max(this.targetFrames(frameMs), perTick);
    const most = Math.max(atLeastOne(this.settings.jitterMaxMs, frameMs), target);
    return new JitterBuffer({ targetFrames: target, maxFrames: most, minFrames: perTick, frameMs });
  }
}
