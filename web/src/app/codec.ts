// Opus through WebCodecs: 48 kHz mono, 20 ms frames, in-band FEC sized to the loss the
// send plan expects (useinbandfec changes nothing unless packetlossperc is above 0).
//
// WebCodecs gives no Opus packet-loss concealment and no FEC decode (there is no way
// to hand the decoder "this frame is missing"), so a frame the jitter buffer calls
// lost is concealed here by repeating the last decoded frame, fading: a pop-free gap
// for one or two frames, silence after a few. The redundant copies each packet carries
// (VoiceFrame) still recover most losses before that.

import { SAMPLE_RATE, FRAME_SAMPLES } from "./audio.ts";

export const OPUS_CODEC = "opus";
export const FRAME_US = (FRAME_SAMPLES * 1_000_000) / SAMPLE_RATE; // 20000
export const DEFAULT_BITRATE = 40_000; // ClientSettings.bitrate
export const COMPLEXITY = 9; // ClientSettings.complexity
/** Concealed frames fade by this factor each; after CONCEAL_FRAMES they are silence. */
export const CONCEAL_FADE = 0.5;
export const CONCEAL_FRAMES = 4;
/** Decodes waiting for output beyond this: the decoder is stuck; start a new one. */
export const MAX_PENDING_DECODES = 16;
/** Encoder errors in a row (no packet between) before it is given up: a browser whose
 * AudioEncoder has no Opus fails every new encoder at once, and restarting each time
 * would loop forever. */
export const MAX_ENCODER_RESTARTS = 3;
/** The same for a member's decoder: errors in a row (no frame between) before it is
 * given up and that member's frames are concealed (silence). Higher than the
 * encoder's, since a member's garbage packets fail it too, and only for that member. */
export const MAX_DECODER_RESTARTS = 8;

export function codecsAvailable(): boolean {
  return typeof AudioEncoder !== "undefined" && typeof AudioDecoder !== "undefined";
}

export interface EncoderPlan {
  bitrate: number;
  /** Opus packetlossperc 0..100: the loss listeners report (0 turns in-band FEC off). */
  lossPercent: number;
}

/** Our voice: PCM frames in, Opus packets out (one per 20 ms frame, in order). */
export class OpusEncoder {
  private encoder: AudioEncoder;
  private timestamp = 0;
  private plan: EncoderPlan = { bitrate: DEFAULT_BITRATE, lossPercent: 0 };
  /** Each packet as the encoder gives it. */
  onPacket: (opus: Uint8Array) => void = () => {};
  onError: (error: Error) => void = () => {};
  encoded = 0;
  /** Errors since the last packet. */
  private restarts = 0;
  /** Given up (MAX_ENCODER_RESTARTS): encode() takes nothing; we only listen. */
  failed = false;

  constructor() {
    this.encoder = this.make();
  }

  private make(): AudioEncoder {
    const encoder = new AudioEncoder({
      output: (chunk) => {
        const data = new Uint8Array(chunk.byteLength);
        chunk.copyTo(data);
        this.encoded += 1;
        this.restarts = 0;
        this.onPacket(data);
      },
      error: (error) => {
        this.restarts += 1;
        if (this.restarts > MAX_ENCODER_RESTARTS) {
          this.failed = true;
          this.onError(new Error(`${error.message} (gave up after ${MAX_ENCODER_RESTARTS} restarts)`));
          return;
        }
        this.onError(error);
        try {
          this.encoder = this.make(); // a closed encoder stays closed: start again
        } catch (again) {
          this.failed = true;
          this.onError(again instanceof Error ? again : new Error(String(again)));
        }
      },
    });
    encoder.configure(this.config());
    return encoder;
  }

  private config(): AudioEncoderConfig {
    return {
      codec: OPUS_CODEC,
      sampleRate: SAMPLE_RATE,
      numberOfChannels: 1,
      bitrate: this.plan.bitrate,
      opus: {
        frameDuration: FRAME_US,
        complexity: COMPLEXITY,
        useinbandfec: true,
        packetlossperc: this.plan.lossPercent,
      },
    };
  }

  /** Apply the sender's plan (bit rate, expected loss) if it changed. */
  setPlan(plan: EncoderPlan): void {
    const lossPercent = Math.max(0, Math.min(100, Math.round(plan.lossPercent)));
    if (plan.bitrate === this.plan.bitrate && lossPercent === this.plan.lossPercent) return;
    this.plan = { bitrate: plan.bitrate, lossPercent };
    if (this.encoder.state === "configured") this.encoder.configure(this.config());
  }

  /** One frame to encode; false: not taken (the encoder failed), no packet will come. */
  encode(pcm: Float32Array<ArrayBuffer>): boolean {
    if (this.failed || this.encoder.state !== "configured") return false;
    const data = new AudioData({
      format: "f32-planar",
      sampleRate: SAMPLE_RATE,
      numberOfFrames: pcm.length,
      numberOfChannels: 1,
      timestamp: this.timestamp,
      data: pcm,
    });
    this.timestamp += (pcm.length * 1_000_000) / SAMPLE_RATE;
    try {
      this.encoder.encode(data);
      return true;
    } catch {
      return false; // closed under us: its error callback reports why
    } finally {
      data.close();
    }
  }

  close(): void {
    if (this.encoder.state !== "closed") this.encoder.close();
  }
}

type Pending = "decode" | "conceal";

/** One member's voice: Opus packets (and "lost" marks) in, PCM out in the same order. */
export class OpusDecoder {
  private decoder: AudioDecoder;
  private timestamp = 0;
  private pending: Pending[] = [];
  private last: Float32Array | null = null;
  private concealed = 0;
  /** Each decoded (or concealed) frame, in order. */
  onFrame: (pcm: Float32Array) => void = () => {};
  decoded = 0;
  errors = 0;
  private restarts = 0;
  /** Given up (MAX_DECODER_RESTARTS): every frame is concealed. */
  failed = false;

  constructor() {
    this.decoder = this.make();
  }

  private make(): AudioDecoder {
    const decoder = new AudioDecoder({
      output: (audio) => {
        const pcm = new Float32Array(audio.numberOfFrames);
        audio.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
        audio.close();
        this.decoded += 1;
        this.restarts = 0;
        this.pending.shift();
        this.emit(pcm);
        this.drainConceals();
      },
      error: () => {
        // A packet the decoder would not take (a member may send anything inside a
        // valid SFrame): count it, conceal what was waiting, go on with a new decoder.
        this.errors += 1;
        this.restarts += 1;
        const waiting = this.pending.length;
        this.pending = [];
        for (let i = 0; i < waiting; i++) this.concealNow();
        // One that fails at once every time (no Opus decoding here) must not be
        // restarted from its own error callback forever.
        if (this.restarts > MAX_DECODER_RESTARTS) this.failed = true;
        else this.decoder = this.make();
      },
    });
    decoder.configure({ codec: OPUS_CODEC, sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
    return decoder;
  }

  decode(opus: Uint8Array): void {
    if (this.failed) {
      this.conceal();
      return;
    }
    if (this.pending.length >= MAX_PENDING_DECODES) {
      this.decoder.close();
      this.pending = [];
      this.decoder = this.make();
    }
    const chunk = new EncodedAudioChunk({ type: "key", timestamp: this.timestamp, data: opus });
    this.timestamp += FRAME_US;
    this.pending.push("decode");
    this.decoder.decode(chunk);
  }

  /** A frame the jitter buffer gave up on: repeat the last one, fading (after the
   * decodes still on their way, so the order holds). */
  conceal(): void {
    if (this.pending.length) {
      this.pending.push("conceal");
      return;
    }
    this.concealNow();
  }

  private concealNow(): void {
    this.concealed += 1;
    const frame = new Float32Array(this.last?.length ?? FRAME_SAMPLES);
    if (this.last && this.concealed <= CONCEAL_FRAMES) {
      const from = CONCEAL_FADE ** (this.concealed - 1);
      const to = CONCEAL_FADE ** this.concealed;
      const n = frame.length;
      for (let i = 0; i < n; i++) frame[i] = this.last[i]! * (from + ((to - from) * i) / n);
    }
    this.onFrame(frame);
  }

  private emit(pcm: Float32Array): void {
    this.concealed = 0;
    this.last = pcm.slice();
    this.onFrame(pcm);
  }

  private drainConceals(): void {
    while (this.pending[0] === "conceal") {
      this.pending.shift();
      this.concealNow();
    }
  }

  close(): void {
    if (this.decoder.state !== "closed") this.decoder.close();
  }
}
