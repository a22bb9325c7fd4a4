// What a sender does about the loss its listeners report (audio/adaptation.py): the worst
// listener of the last `hold` seconds decides the redundancy depth; it rises on the first
// report that calls for it and falls only after `hold` seconds without one. Opus in-band
// FEC is sized to the loss only while depth is 0 (FEC bits come out of the primary frame
// and lowered PESQ-WB where redundancy was on). Until the first report (at most `startup`
// seconds) the sender repeats as deeply as allowed: a newcomer knows nothing yet.

import { MAX_REDUNDANT } from "../wire/voice.ts";

/** Opus' packet-loss hint above this buys little more FEC and costs quality. */
export const MAX_EXPECTED_LOSS = 25;
/** Reports kept per listener (one a second: far more than `hold`). */
export const MAX_REPORTS = 64;

export interface SendPlan {
  /** Earlier frames repeated in each packet (0: none). */
  readonly depth: number;
  /** Percent, for the encoder's in-band FEC (0: no FEC bits). */
  readonly expectedLoss: number;
  readonly bitrate: number;
}

export interface AdapterOptions {
  fec: boolean;
  maxDepth: number;
  thresholds: readonly number[];
  hold: number;
  startup: number;
}

export class SendAdapter {
  private maxBitrate: number | null = null;
  private readonly reports = new Map<number, { at: number; loss: number }[]>();
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
    if (!(options.maxDepth >= 0 && options.maxDepth <= MAX_REDUNDANT)) {
      throw new RangeError(`redundancy depth must be 0..${MAX_REDUNDANT}, got ${options.maxDepth}`);
    }
  }

  /** The room's cap (from the server), null or 0 for none. */
  setMaxBitrate(maxBitrate: number | null): void {
    this.maxBitrate = maxBitrate || null;
  }

  /** A listener's loss fraction (0..1) of our packets over its last interval. */
  report(listener: number, loss: number, now: number): void {
    this.reported = true;
    let list = this.reports.get(listener);
    if (list === undefined) this.reports.set(listener, (list = []));
    list.push({ at: now, loss: Number.isNaN(loss) ? 0 : Math.min(Math.max(loss, 0), 1) });
    if (list.length > MAX_REPORTS) list.shift();
  }

  forget(listener: number): void {
    this.reports.delete(listener);
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
    return Object.freeze({ depth: this.options.maxDepth, expectedLoss: 0, bitrate: this.capped() });
  }

  plan(now: number): SendPlan {
    const { fec, maxDepth, thresholds, startup } = this.options;
    const loss = this.worstLoss(now);
    let depth = Math.min(thresholds.filter((t) => loss >= t).length, maxDepth);
    if (this.startedAt === null) this.startedAt = now;
    if (!this.reported && now < this.startedAt + startup) depth = maxDepth;
    const expectedLoss = fec && !depth ? Math.min(Math.round(loss * 100), MAX_EXPECTED_LOSS) : 0;
    return Object.freeze({ depth, expectedLoss, bitrate: this.capped() });
  }

  private capped(): number {
    return this.maxBitrate !== null ? Math.min(this.bitrate, this.maxBitrate) : this.bitrate;
  }
}
