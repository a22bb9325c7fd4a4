// Packet loss of one sender's stream as a listener sees it (audio/loss.py). Counted from
// the sender's 16-bit packet numbers, not from seq (a sender with voice activity
// detection skips ticks). Like an RTP receiver report: expected = highest packet number
// seen (extended past wrap-around) - the highest at the last report; copies recovered
// from redundancy are not arrivals (the sender adapts to what the network loses).

import { PACKET_MODULO } from "../wire/voice.ts";

const HALF = PACKET_MODULO / 2;
/** A jump this far ahead is a restarted counter, not loss (over 10 s of packets). */
export const RESTART_GAP = 500;

export interface LossReport {
  readonly expected: number;
  readonly received: number;
  readonly lost: number;
  /** Fraction of expected packets that never came, 0..1. */
  readonly loss: number;
}

function lossReport(expected: number, received: number): LossReport {
  const lost = Math.max(expected - received, 0);
  return Object.freeze({ expected, received, lost, loss: expected ? lost / expected : 0 });
}

export class LossMeter {
  private started = false;
  private lastRaw = 0; // the highest packet number seen, as sent
  private highest = 0; // the same, extended past wrap-around
  private received = 0;
  private intervalHighest = 0;
  private intervalReceived = 0;

  onPacket(packet: number): void {
    this.received += 1;
    if (!this.started) {
      this.started = true;
      this.lastRaw = packet;
      this.highest = 0;
      this.intervalHighest = -1; // so the first interval expects the first packet too
      this.received = 1;
      this.intervalReceived = 0;
      return;
    }
    let delta = ((((packet - this.lastRaw + HALF) % PACKET_MODULO) + PACKET_MODULO) % PACKET_MODULO) - HALF;
    if (delta > RESTART_GAP || delta < -RESTART_GAP) delta = 1; // restarted: carry on
    if (delta > 0) {
      this.highest += delta;
      this.lastRaw = packet;
    }
  }

  /** Since the first packet. */
  total(): LossReport {
    return this.started ? lossReport(this.highest + 1, this.received) : lossReport(0, 0);
  }

  /** Since the last call (a reception report's fraction lost). */
  interval(): LossReport {
    if (!this.started) return lossReport(0, 0);
    const report = lossReport(this.highest - this.intervalHighest, this.received - this.intervalReceived);
    this.intervalHighest = this.highest;
    this.intervalReceived = this.received;
    return report;
  }
}
