// Packet loss of one sender's stream as a listener sees it (audio/loss.py). Counted from
// the sender's 16-bit packet numbers, not from seq (a sender with voice activity
// detection skips ticks). Like an RTP receiver report: expected = highest packet number
// seen (extended past wrap-around) - the highest at the last report; copies recovered
// from redundancy are not arrivals (the sender adapts to what the network loses).
// Bursts: a run of missing numbers is judged once SETTLE more packets came after it (a
// reordered packet fills its hole first); the mean burst is lost packets per run.

import { PACKET_MODULO } from "../wire/voice.ts";

const HALF = PACKET_MODULO / 2;
/** A jump this far ahead is a restarted counter, not loss (over 10 s of packets). */
export const RESTART_GAP = 500;
/** Packets after a missing one before it counts as lost in a burst. */
export const SETTLE = 10;

export interface LossReport {
  readonly expected: number;
  readonly received: number;
  readonly lost: number;
  /** Fraction of expected packets that never came, 0..1. */
  readonly loss: number;
  /** Packets of the runs of missing ones judged, and how many runs began. */
  readonly burstLost: number;
  readonly bursts: number;
  /** Mean packets lost in a row; 0 without loss. */
  readonly burst: number;
}

function lossReport(expected: number, received: number, burstLost = 0, bursts = 0): LossReport {
  const lost = Math.max(expected - received, 0);
  const loss = expected ? lost / expected : 0;
  const burst = bursts ? burstLost / bursts : 0;
  return Object.freeze({ expected, received, lost, loss, burstLost, bursts, burst });
}

export class LossMeter {
  private started = false;
  private lastRaw = 0; // the highest packet number seen, as sent
  private highest = 0; // the same, extended past wrap-around
  private received = 0;
  private intervalHighest = 0;
  private intervalReceived = 0;
  // Bursts: numbers (extended) from `judged` on that arrived, not judged yet.
  private arrived = new Set<number>();
  private judged = 0;
  private inRun = false;
  private burstLost = 0;
  private bursts = 0;
  private intervalBurstLost = 0;
  private intervalBursts = 0;

  onPacket(packet: number): void {
    this.received += 1;
    if (!this.started) {
      this.started = true;
      this.lastRaw = packet;
      this.highest = 0;
      this.intervalHighest = -1; // so the first interval expects the first packet too
      this.received = 1;
      this.intervalReceived = 0;
      this.arrived.add(0);
      return;
    }
    let delta = ((((packet - this.lastRaw + HALF) % PACKET_MODULO) + PACKET_MODULO) % PACKET_MODULO) - HALF;
    if (delta > RESTART_GAP || delta < -RESTART_GAP) delta = 1; // restarted: carry on
    const number = this.highest + delta;
    if (number >= this.judged) this.arrived.add(number);
    if (delta > 0) {
      this.highest = number;
      this.lastRaw = packet;
      this.judge(number - SETTLE);
    }
  }

  // Runs of missing numbers up to `upto` (inclusive): counted, then forgotten.
  private judge(upto: number): void {
    for (; this.judged <= upto; this.judged++) {
      if (this.arrived.delete(this.judged)) {
        this.inRun = false;
      } else {
        this.burstLost += 1;
        if (!this.inRun) this.bursts += 1;
        this.inRun = true;
      }
    }
  }

  /** Since the first packet. */
  total(): LossReport {
    if (!this.started) return lossReport(0, 0);
    return lossReport(this.highest + 1, this.received, this.burstLost, this.bursts);
  }

  /** Since the last call (a reception report's fraction lost). */
  interval(): LossReport {
    if (!this.started) return lossReport(0, 0);
    const report = lossReport(
      this.highest - this.intervalHighest,
      this.received - this.intervalReceived,
      this.burstLost - this.intervalBurstLost,
      this.bursts - this.intervalBursts,
    );
    this.intervalHighest = this.highest;
    this.intervalReceived = this.received;
    this.intervalBurstLost = this.burstLost;
    this.intervalBursts = this.bursts;
    return report;
  }
}
