// Per-sender adaptive jitter buffer with concealment decisions: a simplified form of
// src/bangor/audio/jitter.py. The network side inserts each frame (primary, or a copy
// from a later packet's redundancy) with its arrival time; the play-out side pops once
// per sender frame and gets a Decision: play this Opus packet, conceal one frame, or
// silence (nothing to play: prebuffering or idle).
//
// Sequence numbers are the sender's uint32 tick counters and wrap at 2**32 (compared
// with serial-number arithmetic). Depths are in the sender's frames; time constants are
// in seconds and turned into frames.
//
// Adaptation (as in Python, without its quiet-frame and settling refinements, so for spread
// copies it grows to their wait only at losses, not on quiet frames too):
// - jitter: a frame's relative delay is arrival - seq * frame; its spread is how much
//   later than the fastest frame of the last DELAY_WINDOW it came (a constant path delay
//   and a slow clock drift do not disturb it). Target = ceil(p95 spread / frame) + 1
//   frames (the + 1 covers the unknown phase between arrivals and play-out ticks),
//   clamped to [min, max], plus the frames a sender's redundancy needs to arrive.
// - grow fast: when the buffer runs dry the play-out waits (a conceal that does not
//   advance) and a late frame plays when it comes: the delay grew by one frame instead
//   of the frame being lost; a frame that missed its tick raises the target at once
//   (held PEAK_HOLD seconds).
// - shrink slowly: when the buffer stayed above target for a while, one frame is
//   dropped (there is no time-stretching).

import { SEQ_MODULO } from "../wire/voice.ts";

const HALF = SEQ_MODULO / 2;

/** Nothing buffered this long: the sender stopped talking (concealment, then silence). */
export const IDLE_MS = 200;
/** After an idle reset, frames up to this far behind the last one played are stale. */
export const REPLAY_HORIZON_S = 30;
/** Seconds of arrivals whose fastest frame is the reference for the spread. */
export const DELAY_WINDOW = 2.0;
/** Seconds of spreads kept for the percentile (also bounds the arrival window). */
export const HISTORY_S = 10.0;
export const TARGET_PERCENTILE = 0.95;
/** Fewer seconds of spreads than this: keep the constructor's target. */
export const MIN_SAMPLES_S = 1.0;
/** A frame that missed its tick holds the target up for this long. */
export const PEAK_HOLD = 5.0;
/** One spare frame is dropped after SHRINK_S; n spare after SHRINK_S / n. */
export const SHRINK_S = 6.0;
/** This much spare (after a long stall) goes one frame per FAST_SHRINK_S. */
export const FAST_SHRINK_EXCESS_MS = 80;
export const FAST_SHRINK_S = 0.5;
// Re-anchor relative delays before seq distances get anywhere near 2**31.
const ANCHOR_LIMIT = 2 ** 30;

/** Signed distance a - b of two uint32 sequence numbers, in [-2**31, 2**31). */
export function seqDiff(a: number, b: number): number {
  return ((((a - b + HALF) % SEQ_MODULO) + SEQ_MODULO) % SEQ_MODULO) - HALF;
}

function inc(seq: number, by = 1): number {
  return (seq + by) % SEQ_MODULO;
}

export type Decision =
  /** The frame due now arrived: decode `opus`. */
  | { readonly kind: "frame"; readonly seq: number; readonly opus: Uint8Array }
  /**
   * The frame due now is missing: conceal one frame. `next` is the following frame if
   * it is buffered (a decoder that can decode in-band FEC rebuilds the missing one from
   * it). A conceal while the buffer waits for a late frame may be followed by that frame.
   */
  | { readonly kind: "conceal"; readonly seq: number; readonly next: Uint8Array | null }
  /** Nothing plays (prebuffering, idle). */
  | { readonly kind: "silence" };

const SILENCE: Decision = Object.freeze({ kind: "silence" });

export type InsertResult = "queued" | "recovered" | "late" | "duplicate" | "ignored";

export interface JitterStats {
  readonly received: number; // primary frames inserted, including those then dropped
  readonly recovered: number; // holes filled by a copy (redundancy) that then stood
  readonly played: number;
  readonly concealed: number; // conceal decisions (lost frames and waits)
  readonly lost: number; // frames due in a talk spurt that never played
  readonly late: number; // arrived after their tick had passed
  readonly duplicates: number;
  readonly overflow: number; // dropped because the buffer span exceeded maxFrames
  readonly dropped: number; // dropped unplayed to cut the delay
  readonly stretched: number; // ticks concealed while waiting for a late frame
  readonly depth: number; // frames buffered now
  readonly target: number; // target depth in frames now
  readonly delayMs: number; // frames buffered at play-out ticks, mean over ~1 s, in ms
  readonly jitterMs: number; // p95 of the relative-delay spread
}

export interface JitterOptions {
  targetFrames: number;
  maxFrames: number;
  minFrames: number;
  frameMs: number;
}

function ticks(seconds: number, frameMs: number): number {
  return Math.max(Math.round((seconds * 1000) / frameMs), 1);
}

export class JitterBuffer {
  readonly frameMs: number;
  private readonly frameS: number;
  private readonly min: number;
  private readonly max: number;
  private readonly initialTarget: number;
  private readonly idleTicks: number;
  private readonly horizon: number;
  private readonly historyLen: number;
  private readonly minSamples: number;
  private readonly shrinkTicks: number;
  private readonly fastExcess: number;
  private readonly fastShrinkTicks: number;
  private readonly smoothing: number;

  private target: number;
  private baseTarget: number;
  private extra = 0;
  // seq -> Opus packet; `copy` marks one that came as redundancy (its primary may follow).
  private readonly frames = new Map<number, { opus: Uint8Array; copy: boolean }>();
  private next: number | null = null; // the seq to play next; null before a spurt
  private lastPlayed: number | null = null; // survives idle resets
  private playing = false;
  private emptyTicks = 0;
  private waitTicks = 0;
  private stallRun = 0; // ticks concealed while waiting for `next`
  private sampling = false; // arrivals are timed only once a spurt plays (not pre-roll)

  private anchor: number | null = null;
  // Sliding minimum of relative delays: arrival time and delay, delays increasing.
  private fastest: { at: number; delay: number }[] = [];
  private readonly spreads: number[] = []; // seconds, oldest first
  private readonly buckets: number[]; // spreads by whole frames, rounded up
  private peak = 0;
  private peakUntil = -Infinity;
  private winTicks = 0;
  private winMin = Infinity; // the lowest level at a play-out tick in the window
  private dropPending = false;
  private levelMean = 0;

  private received = 0;
  private recovered = 0;
  private played = 0;
  private concealed = 0;
  private lost = 0;
  private late = 0;
  private duplicates = 0;
  private overflow = 0;
  private dropped = 0;
  private stretched = 0;

  constructor(options: JitterOptions) {
    const { targetFrames, maxFrames, minFrames, frameMs } = options;
    if (!(frameMs > 0)) throw new RangeError(`frameMs must be > 0, got ${frameMs}`);
    if (minFrames < 1) throw new RangeError(`minFrames must be >= 1, got ${minFrames}`);
    if (targetFrames < minFrames) throw new RangeError(`targetFrames must be >= ${minFrames}`);
    if (maxFrames < targetFrames) throw new RangeError(`maxFrames must be >= targetFrames`);
    this.frameMs = frameMs;
    this.frameS = frameMs / 1000;
    this.min = minFrames;
    this.max = maxFrames;
    this.target = this.baseTarget = this.initialTarget = targetFrames;
    this.idleTicks = ticks(IDLE_MS / 1000, frameMs);
    this.horizon = ticks(REPLAY_HORIZON_S, frameMs);
    this.historyLen = ticks(HISTORY_S, frameMs);
    this.minSamples = ticks(MIN_SAMPLES_S, frameMs);
    this.shrinkTicks = ticks(SHRINK_S, frameMs);
    this.fastExcess = Math.max(Math.ceil(FAST_SHRINK_EXCESS_MS / frameMs), 2);
    this.fastShrinkTicks = ticks(FAST_SHRINK_S, frameMs);
    this.smoothing = Math.min(frameMs / 1000, 1);
    this.buckets = new Array<number>(maxFrames + 1).fill(0);
  }

  /**
   * One received frame. `now` is its arrival time (null for frames whose timing says
   * nothing, e.g. released after a key arrived); `copy` for an earlier tick's frame
   * repeated in a later packet: it only fills a hole and says nothing about timing.
   */
  insert(seq: number, opus: Uint8Array, now: number | null, copy = false): InsertResult {
    if (!Number.isInteger(seq) || seq < 0 || seq >= SEQ_MODULO) {
      throw new RangeError(`sequence number out of uint32 range: ${seq}`);
    }
    if (copy) return this.insertCopy(seq, opus);
    this.received += 1;
    if (this.alreadyPlayed(seq)) return this.tooLate(seq, now);
    if (this.next === null) this.next = seq;
    let offset = seqDiff(seq, this.next);
    if (offset < 0) {
      if (this.playing || this.spanAfterLowering(-offset) > this.max) return this.tooLate(seq, now);
      this.next = seq; // still prebuffering: an earlier frame came out of order, start there
      offset = 0;
    }
    const held = this.frames.get(seq);
    if (held !== undefined) {
      if (!held.copy) {
        this.duplicates += 1;
        return "duplicate";
      }
      this.recovered -= 1; // its copy overtook it: the original is no duplicate
    }
    // Play-out is waiting for exactly this frame: it came after its tick.
    this.observe(seq, now, offset === 0 && this.stallRun > 0);
    this.frames.set(seq, { opus, copy: false });
    if (offset >= this.max) this.advanceTo(inc(seq, SEQ_MODULO - this.max + 1));
    if (!this.playing && this.level() >= this.target) this.playing = true;
    return "queued";
  }

  /** Frames to wait beyond what the jitter calls for, so redundancy copies can arrive. */
  setExtraFrames(extra: number): void {
    extra = Math.max(Math.floor(extra), 0);
    if (extra !== this.extra) {
      this.extra = extra;
      this.setTarget(this.baseTarget);
    }
  }

  /** One play-out tick of this sender's frames. */
  pop(): Decision {
    if (!this.playing) {
      if (this.frames.size === 0) return SILENCE;
      // A spurt shorter than the prebuffer must not wait for the next one.
      this.waitTicks += 1;
      if (this.waitTicks < this.target) return SILENCE;
      this.playing = true;
    }
    const next = this.next as number;
    this.sampling = true;
    const level = this.level();
    this.tick(level);
    if (this.frames.size === 0) {
      this.emptyTicks += 1;
      if (this.emptyTicks > this.idleTicks) {
        this.reset();
        return SILENCE;
      }
      // Wait for it: if it is only late it plays when it comes.
      this.stallRun += 1;
      this.dropPending = false;
      return this.conceal(next, null);
    }
    this.emptyTicks = 0;
    if (this.dropPending && this.stallRun === 0 && this.frames.has(inc(next))) {
      this.dropDue();
    } else if (!this.frames.has(next)) {
      if (level < this.stallFloor() && this.stallRun < this.target) {
        // Less buffered than the jitter calls for: the frame may only be late.
        this.stallRun += 1;
        this.dropPending = false;
        return this.conceal(next, null);
      }
      this.skipConcealed();
    }
    const seq = this.next as number;
    this.next = inc(seq);
    const entry = this.frames.get(seq);
    this.frames.delete(seq);
    if (entry !== undefined) {
      this.stretched += this.stallRun;
      this.stallRun = 0;
      this.played += 1;
      this.lastPlayed = seq;
      return Object.freeze({ kind: "frame", seq, opus: entry.opus });
    }
    this.lost += 1;
    return this.conceal(seq, this.frames.get(this.next)?.opus ?? null);
  }

  // Below this level a missing frame may only be late. Once grown to a target that
  // waits `extra` frames for copies, a burst of loss dips the level by its length with
  // no frame late: waiting then would only stretch speech (jitter.py's _stall_floor).
  private stallFloor(): number {
    if (this.extra && this.levelMean >= this.target - 2) return this.baseTarget - 1;
    return this.target - 1;
  }

  stats(): JitterStats {
    const sorted = [...this.spreads].sort((a, b) => a - b);
    const p95 = sorted.length ? (sorted[Math.ceil(TARGET_PERCENTILE * sorted.length) - 1] as number) : 0;
    return Object.freeze({
      received: this.received,
      recovered: this.recovered,
      played: this.played,
      concealed: this.concealed,
      lost: this.lost,
      late: this.late,
      duplicates: this.duplicates,
      overflow: this.overflow,
      dropped: this.dropped,
      stretched: this.stretched,
      depth: this.frames.size,
      target: this.target,
      delayMs: Math.round(this.levelMean * this.frameMs * 10) / 10,
      jitterMs: Math.round(p95 * 10000) / 10,
    });
  }

  // --- receiving -----------------------------------------------------------------

  private insertCopy(seq: number, opus: Uint8Array): InsertResult {
    if (this.next === null || this.frames.has(seq) || this.alreadyPlayed(seq)) return "ignored";
    const offset = seqDiff(seq, this.next);
    if (offset < 0) {
      if (this.playing || this.spanAfterLowering(-offset) > this.max) return "ignored";
      this.next = seq; // still prebuffering: start the spurt there
    } else if (offset >= this.max) {
      return "ignored";
    }
    this.frames.set(seq, { opus, copy: true });
    this.recovered += 1;
    return "recovered";
  }

  private tooLate(seq: number, now: number | null): InsertResult {
    this.late += 1;
    this.observe(seq, now, true);
    this.dropPending = false; // no frame to spare after all
    return "late";
  }

  private alreadyPlayed(seq: number): boolean {
    if (this.lastPlayed === null) return false;
    const behind = seqDiff(this.lastPlayed, seq);
    return behind >= 0 && behind < this.horizon;
  }

  // Span (first to last buffered, inclusive) if play-out started `by` frames earlier.
  private spanAfterLowering(by: number): number {
    return Math.max(this.level(), 1) + by;
  }

  // Frames of audio from the one due to the newest buffered, holes included.
  private level(): number {
    if (this.next === null || this.frames.size === 0) return 0;
    let last = 0;
    for (const s of this.frames.keys()) last = Math.max(last, seqDiff(s, this.next));
    return last + 1;
  }

  // --- play-out ------------------------------------------------------------------

  private conceal(seq: number, next: Uint8Array | null): Decision {
    this.concealed += 1;
    return Object.freeze({ kind: "conceal", seq, next });
  }

  // Move play-out forward so the span stays within maxFrames; older frames go.
  private advanceTo(newNext: number): void {
    for (const s of [...this.frames.keys()]) {
      if (seqDiff(s, newNext) < 0) {
        this.frames.delete(s);
        this.overflow += 1;
      }
    }
    this.next = newNext;
    this.stretched += this.stallRun;
    this.stallRun = 0;
  }

  // A later frame came instead of the one waited for: the ticks concealed while
  // waiting stand for the missing frames, so skip as many (they are lost).
  private skipConcealed(): void {
    while (this.stallRun && !this.frames.has(this.next as number)) {
      this.lost += 1;
      this.stallRun -= 1;
      this.next = inc(this.next as number);
    }
    this.stretched += this.stallRun;
    this.stallRun = 0;
  }

  // Cut the delay by one frame: skip the one due (the one after it is buffered).
  private dropDue(): void {
    const next = this.next as number;
    if (this.frames.delete(next)) this.dropped += 1;
    else this.lost += 1; // missing anyway: skipping it saves a concealed tick
    this.next = inc(next);
    this.dropPending = false;
  }

  // Once per play-out tick: the mean level, and the shrink window. Spare frames: the
  // level never fell below target + n in the window (one frame less would have done).
  private tick(level: number): void {
    this.levelMean += (level - this.levelMean) * this.smoothing;
    this.winTicks += 1;
    this.winMin = Math.min(this.winMin, level);
    const excess = this.winMin - this.target;
    const wait = excess >= this.fastExcess ? this.fastShrinkTicks : Math.floor(this.shrinkTicks / Math.max(excess, 1));
    if (this.winTicks >= wait) {
      if (excess >= 1) this.dropPending = true;
      this.winTicks = 0;
      this.winMin = Infinity;
    }
  }

  // Idle: forget the play-out point; the next insert prebuffers a new spurt. What was
  // learnt about the network is kept.
  private reset(): void {
    this.frames.clear();
    this.next = null;
    this.playing = false;
    this.emptyTicks = 0;
    this.waitTicks = 0;
    this.stallRun = 0;
    this.sampling = false;
    this.dropPending = false;
    this.winTicks = 0;
    this.winMin = Infinity;
  }

  // --- jitter estimate -------------------------------------------------------------

  private observe(seq: number, now: number | null, overdue: boolean): void {
    // Untimed, or the opening frames of a spurt (a sender's pre-roll burst): not jitter.
    if (now === null || !this.sampling) return;
    if (this.anchor === null || Math.abs(seqDiff(seq, this.anchor)) > ANCHOR_LIMIT) {
      this.anchor = seq;
      this.fastest = [];
    }
    const delay = now - seqDiff(seq, this.anchor) * this.frameS;
    const fastest = this.fastest;
    while (fastest.length && (fastest[fastest.length - 1] as { delay: number }).delay >= delay) fastest.pop();
    fastest.push({ at: now, delay });
    // Bounded by time and, against a flood of arrivals, by count.
    while ((fastest[0] as { at: number }).at < now - DELAY_WINDOW || fastest.length > this.historyLen) {
      fastest.shift();
    }
    const spread = Math.max(delay - (fastest[0] as { delay: number }).delay, 0);
    const frames = this.framesOf(spread);
    if (frames > this.max) return; // no depth we allow would have saved it
    if (this.spreads.length === this.historyLen) {
      const old = this.spreads.shift() as number;
      (this.buckets[this.framesOf(old)] as number) -= 1;
    }
    this.spreads.push(spread);
    (this.buckets[frames] as number) += 1;
    if (overdue) {
      if (now >= this.peakUntil) this.peak = 0;
      // At least 2: whatever its spread, one frame of depth was not enough.
      this.peak = Math.max(this.peak, frames + 1, 2);
      this.peakUntil = now + PEAK_HOLD;
    }
    this.updateTarget(now);
  }

  // Rounded up to whole frames; the epsilon keeps 20.000000001 ms at one frame.
  private framesOf(spread: number): number {
    return Math.ceil(spread / this.frameS - 1e-6);
  }

  private updateTarget(now: number): void {
    const count = this.spreads.length;
    let target = this.initialTarget;
    if (count >= this.minSamples) {
      const rank = Math.ceil(TARGET_PERCENTILE * count);
      let seen = 0;
      for (let frames = 0; frames < this.buckets.length; frames++) {
        seen += this.buckets[frames] as number;
        if (seen >= rank) {
          target = frames + 1; // + 1: arrivals and ticks are out of phase
          break;
        }
      }
    }
    if (now < this.peakUntil && this.peak > target) target = this.peak;
    this.setTarget(target);
  }

  private setTarget(base: number): void {
    this.baseTarget = base;
    this.target = Math.min(Math.max(base + this.extra, this.min), this.max);
  }
}
