// Our voice on its way out (media/sender.py without the codec and the voice gate, which
// the browser shell runs): one call of frame() or frames() per 20 ms tick takes that
// tick's Opus packet (none when the gate or mute holds it back; the gate's pre-roll
// with the first voiced one) and gives the VoiceFrames to seal and send. seq counts every tick, sent or not, so a listener sees a pause as a gap, never
// as frames out of order; packet counts the packets sent, so it can tell loss from silence.

import { MAX_SPREAD, PACKET_MODULO, SEQ_MODULO, serializeVoiceFrame, voiceFrame } from "../wire/voice.ts";
import { SendAdapter, type SendPlan } from "./adaptation.ts";
import { MAX_VOICE_FRAME, type MediaSettings } from "./settings.ts";

/** What the shell gives WebCodecs' AudioEncoder (`opus: {...}` and `bitrate`). */
/** Most earlier ticks one call of frames() may fill in (the voice gate's pre-roll): a
 * bound, so a caller's bug cannot renumber frames far back. */
export const MAX_PREROLL_FRAMES = 50;

export interface EncoderHint {
  readonly bitrate: number;
  /** Opus in-band FEC: on when the settings allow it; it only costs bits when packetlossperc > 0. */
  readonly useinbandfec: boolean;
  /** The loss the encoder sizes its FEC to, percent (0 while redundancy is on). */
  readonly packetlossperc: number;
}

export class Sender {
  readonly adapter: SendAdapter;
  plan: SendPlan;
  /** Voice frames sent. */
  sent = 0;
  /** Ticks with no frame (gate, mute): sent + suppressed = ticks. */
  suppressed = 0;
  seq = 0;
  private packet = 0;
  // (seq, opus) of the frames just sent, for copies in the next packets.
  private history: { seq: number; opus: Uint8Array }[] = [];

  constructor(private readonly settings: MediaSettings) {
    this.adapter = new SendAdapter(settings.bitrate, {
      fec: settings.fec,
      maxDepth: settings.maxRedundancy,
      thresholds: settings.redundancyThresholds,
      hold: settings.lossHold,
      startup: settings.redundancyStartup,
      spreadBurst: settings.spreadBurst,
      // No redundancy asked for: none spread either.
      maxSpreadDepth: settings.maxRedundancy ? settings.maxBurstRedundancy : 0,
    });
    this.plan = this.adapter.initial();
  }

  /** A listener's loss report on our voice; true if the plan changed. */
  report(listener: number, loss: number, now: number, burst: number | null = null): boolean {
    this.adapter.report(listener, loss, now, burst);
    return this.updatePlan(now);
  }

  forget(listener: number): void {
    this.adapter.forget(listener);
  }

  setMaxBitrate(maxBitrate: number | null, now: number): boolean {
    this.adapter.setMaxBitrate(maxBitrate);
    return this.updatePlan(now);
  }

  /** Look at the plan again (old reports expire, startup ends); true if it changed. */
  updatePlan(now: number): boolean {
    const plan = this.adapter.plan(now);
    const p = this.plan;
    const sameSpread = plan.spread.length === p.spread.length && plan.spread.every((d, i) => d === p.spread[i]);
    if (plan.depth === p.depth && plan.expectedLoss === p.expectedLoss && plan.bitrate === p.bitrate && sameSpread) {
      return false;
    }
    this.plan = plan;
    return true;
  }

  encoderHint(): EncoderHint {
    return Object.freeze({
      bitrate: this.plan.bitrate,
      useinbandfec: this.settings.fec,
      packetlossperc: this.plan.expectedLoss,
    });
  }

  /**
   * This tick's VoiceFrame bytes, or null if `opus` is null (not sending this tick).
   * While listeners report loss each packet also carries the Opus packets of the
   * `plan.depth` ticks before it, as far as they were sent and fit MAX_VOICE_FRAME.
   */
  frame(opus: Uint8Array | null): Uint8Array | null {
    return this.frames(opus === null ? [] : [opus])[0] ?? null;
  }

  /**
   * This tick's VoiceFrames: `opus` holds the Opus packets of consecutive ticks ending
   * with this one, oldest first (the voice gate releases its pre-roll with the first
   * voiced frame), or nothing. Each goes out with the seq of the tick it was captured
   * at: those ticks passed with no frame, and seq counted them (sender.py's frames()).
   */
  frames(opus: readonly Uint8Array[]): Uint8Array[] {
    if (opus.length > MAX_PREROLL_FRAMES + 1) throw new RangeError(`${opus.length} frames in one tick`);
    for (const o of opus) if (o.length === 0) throw new RangeError("an Opus packet has at least one byte");
    const first = (this.seq - opus.length + 1 + SEQ_MODULO) % SEQ_MODULO;
    this.seq = (this.seq + 1) % SEQ_MODULO;
    const out: Uint8Array[] = [];
    opus.forEach((o, i) => out.push(this.one((first + i) % SEQ_MODULO, o)));
    this.sent += out.length;
    // A frame held back (pre-roll) counted as suppressed at its tick until it went out.
    this.suppressed += 1 - out.length;
    return out;
  }

  private one(seq: number, opus: Uint8Array): Uint8Array {
    const history = this.history;
    const last = history[history.length - 1];
    if (last !== undefined && last.seq !== (seq - 1 + SEQ_MODULO) % SEQ_MODULO) {
      history.length = 0; // a pause: the frames before it are not the ones just before
    }
    const { depth, spread } = this.plan;
    let copies: Uint8Array[];
    let distances: number[] = [];
    if (spread.length) {
      // Farthest first; the history holds only ticks since the last pause.
      distances = [...spread].reverse().filter((d) => d <= history.length);
      copies = distances.map((d) => (history[history.length - d] as { opus: Uint8Array }).opus);
    } else {
      copies = depth ? history.slice(-depth).map((h) => h.opus) : [];
    }
    const make = (): Uint8Array =>
      serializeVoiceFrame(voiceFrame(seq, opus, this.packet, copies, depth, distances, spread));
    let out = make();
    while (out.length > MAX_VOICE_FRAME && copies.length) {
      copies.shift(); // a high bit rate: repeat fewer frames than planned
      distances = distances.slice(1);
      out = make();
    }
    if (out.length > MAX_VOICE_FRAME) throw new RangeError(`Opus packet too long (${opus.length} bytes)`);
    this.packet = (this.packet + 1) % PACKET_MODULO;
    history.push({ seq, opus });
    if (history.length > MAX_SPREAD) history.shift();
    return out;
  }
}
