// What a sender does about the loss its listeners report (audio/adaptation.py): the worst
// listener of the last `hold` seconds decides the redundancy depth; it rises on the first
// report that calls for it and falls only after `hold` seconds without one. Opus in-band
// FEC is sized to the loss only while depth is 0 (FEC bits come out of the primary frame
// and lowered PESQ-WB where redundancy was on). Until the first report (at most `startup`
// seconds) the sender repeats as deeply as allowed: a newcomer knows nothing yet.
// Bursts: once listeners report losses in runs (mean burst >= spreadBurst) and every one
// of them reads spread frames (its reports carry a burst), the copies go up to `reach`
// ticks back, spread evenly, instead of the ticks just before (adaptation.py).

import { MAX_REDUNDANT, MAX_SPREAD } from "../wire/voice.ts";

/** Opus' packet-loss hint above this buys little more FEC and costs quality. */
export const MAX_EXPECTED_LOSS = 25;
/** Reports kept per listener (one a second: far more than `hold`). */
export const MAX_REPORTS = 64;
/** The farthest copy goes this many mean bursts back (capped at MAX_SPREAD). */
export const REACH_PER_BURST = 2.7;

export interface SendPlan {
  /** Earlier frames repeated in each packet (0: none). */
  readonly depth: number;
  /** Percent, for the encoder's in-band FEC (0: no FEC bits). */
  readonly expectedLoss: number;
  readonly bitrate: number;
  /** Distances back (rising) of the ticks repeated, depth of them; [] = the ticks just before. */
  readonly spread: readonly number[];
}

export interface AdapterOptions {
  fec: boolean;
  maxDepth: number;
  thresholds: readonly number[];
  hold: number;
  startup: number;
  /** Mean loss burst from which copies are spread out; 0: never. */
  spreadBurst?: number;
  /** Copies per packet while spread (beyond maxDepth, from the top threshold). */
  maxSpreadDepth?: number;
}

export class SendAdapter {
  private maxBitrate: number | null = null;
  private readonly reports = new Map<number, { at: number; loss: number; burst: number }[]>();
  // Listeners not known to read spread frames (joined, or their reports lack bursts).
  private readonly plain = new Set<number>();
  private startedAt: number | null = null;
  private reported = false;

  constructor(
    private readonly bitrate: number,
    private readonly options: AdapterOptions,
  ) {
    const t = options.thresholds;
    if (t.length > MAX_REDUNDANT || t.some((x, i) => i > 0 && x < (t[i - 1] as number))) {
      throw new RangeError(`thresholds must rise, at most ${MAX_REDUNDANT} of them`);
    }
    const spreadDepth = options.maxSpreadDepth ?? 3;
    if (!(spreadDepth >= 0 && spreadDepth <= MAX_REDUNDANT)) {
      throw new RangeError(`spread depth must be 0..${MAX_REDUNDANT}, got ${spreadDepth}`);
    }
    if (!(options.maxDepth >= 0 && options.maxDepth <= MAX_REDUNDANT)) {
      throw new RangeError(`redundancy depth must be 0..${MAX_REDUNDANT}, got ${options.maxDepth}`);
    }
  }

  /** The room's cap (from the server), null or 0 for none. */
  setMaxBitrate(maxBitrate: number | null): void {
    this.maxBitrate = maxBitrate || null;
  }

  /** A new listener: no spreading until it shows it reads spread frames. */
  joined(listener: number): void {
    this.plain.add(listener);
  }

  /**
   * A listener's loss fraction (0..1) of our packets over its last interval, and the mean
   * packets it lost in a row (null from a listener that does not say: it reads no spread frames).
   */
  report(listener: number, loss: number, now: number, burst: number | null = null): void {
    this.reported = true;
    if (burst === null) this.plain.add(listener);
    else this.plain.delete(listener);
    let list = this.reports.get(listener);
    if (list === undefined) this.reports.set(listener, (list = []));
    const b = burst === null || !(burst > 0) ? 0 : burst;
    list.push({ at: now, loss: Number.isNaN(loss) ? 0 : Math.min(Math.max(loss, 0), 1), burst: b });
    if (list.length > MAX_REPORTS) list.shift();
  }

  forget(listener: number): void {
    this.reports.delete(listener);
    this.plain.delete(listener);
  }

  /** The longest mean burst of any listener within `hold` (its reports pooled: lost / runs). */
  worstBurst(now: number): number {
    this.worstLoss(now); // drops the expired reports
    let worst = 0;
    for (const list of this.reports.values()) {
      let lost = 0;
      let runs = 0;
      for (const r of list) {
        if (r.burst >= 1) {
          lost += r.loss;
          runs += r.loss / r.burst;
        }
      }
      if (runs) worst = Math.max(worst, lost / runs);
    }
    return worst;
  }

  /** The highest loss any listener reported within the last `hold` seconds. */
  worstLoss(now: number): number {
    let worst = 0;
    for (const list of this.reports.values()) {
      while (list.length && (list[0] as { at: number }).at < now - this.options.hold) list.shift();
      for (const r of list) worst = Math.max(worst, r.loss);
    }
    return worst;
  }

  /** The plan before the clock starts (the first plan() starts it). */
  initial(): SendPlan {
    return Object.freeze({ depth: this.options.maxDepth, expectedLoss: 0, bitrate: this.capped(), spread: [] });
  }

  plan(now: number): SendPlan {
    const { fec, maxDepth, thresholds, startup } = this.options;
    const loss = this.worstLoss(now);
    const calledFor = thresholds.filter((t) => loss >= t).length;
    let depth = Math.min(calledFor, maxDepth);
    if (this.startedAt === null) this.startedAt = now;
    if (!this.reported && now < this.startedAt + startup) depth = maxDepth;
    const spread = this.spread(Math.min(calledFor, this.options.maxSpreadDepth ?? 3), now);
    depth = spread.length || depth;
    const expectedLoss = fec && !depth ? Math.min(Math.round(loss * 100), MAX_EXPECTED_LOSS) : 0;
    return Object.freeze({ depth, expectedLoss, bitrate: this.capped(), spread });
  }

  private spread(depth: number, now: number): readonly number[] {
    const threshold = this.options.spreadBurst ?? 1.6;
    if (!depth || this.plain.size || !threshold) return [];
    const burst = this.worstBurst(now);
    if (burst < threshold) return [];
    const reach = Math.min(MAX_SPREAD, Math.max(depth, Math.ceil(REACH_PER_BURST * burst)));
    // Evenly up to reach, rounded half up: rising, since reach / depth >= 1.
    return Object.freeze(Array.from({ length: depth }, (_, i) => Math.floor((reach * (i + 1)) / depth + 0.5)));
  }

  private capped(): number {
    return this.maxBitrate !== null ? Math.min(this.bitrate, this.maxBitrate) : this.bitrate;
  }
}
