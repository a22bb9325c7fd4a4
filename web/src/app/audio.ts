// The sound card side of the page: the microphone through a capture AudioWorklet that
// hands over 20 ms frames (48 kHz mono, 960 samples), and a playback AudioWorklet that
// mixes what each member's decoder gives it, each with its own gain.
//
// Both worklets load from Blob URLs: the page is one bundle (the server serves only
// /app.js), and the page's CSP allows blob: for them. Frames cross to the main thread
// as transferred Float32Arrays; the main thread's tick is the capture worklet's frame.

export const SAMPLE_RATE = 48_000;
export const FRAME_SAMPLES = 960; // 20 ms
/** Decoded audio a member may have queued in the playback worklet before the oldest is
 * dropped: bounds the delay if the tab stalls (the jitter buffer upstream adapts). */
export const MAX_QUEUED_SAMPLES = FRAME_SAMPLES * 6;
/** How long opening waits for the browser to start sound (it does at once after a click). */
export const RESUME_WAIT_MS = 300;

const CAPTURE_WORKLET = `
class BangorCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.frameSamples;
    this.frame = new Float32Array(this.size);
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0];
    const data = input && input[0];
    if (!data) return true;
    let at = 0;
    while (at < data.length) {
      const n = Math.min(data.length - at, this.size - this.fill);
      this.frame.set(data.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === this.size) {
        this.port.postMessage(this.frame, [this.frame.buffer]);
        this.frame = new Float32Array(this.size);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor("bangor-capture", BangorCapture);
`;

const PLAYBACK_WORKLET = `
class BangorPlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.max = options.processorOptions.maxQueued;
    this.streams = new Map();
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "pcm") {
        let s = this.streams.get(m.id);
        if (!s) { s = { queue: [], queued: 0, offset: 0, gain: 1 }; this.streams.set(m.id, s); }
        s.queue.push(m.pcm);
        s.queued += m.pcm.length;
        while (s.queued - s.offset > this.max && s.queue.length > 1) {
          s.queued -= s.queue[0].length; s.queue.shift(); s.offset = 0; this.dropped = (this.dropped || 0) + 1;
        }
      } else if (m.type === "gain") {
        let s = this.streams.get(m.id);
        if (!s) { s = { queue: [], queued: 0, offset: 0, gain: 1 }; this.streams.set(m.id, s); }
        s.gain = m.gain;
      } else if (m.type === "forget") {
        this.streams.delete(m.id);
      }
    };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    for (const s of this.streams.values()) {
      let i = 0;
      while (i < out.length && s.queue.length) {
        const head = s.queue[0];
        const n = Math.min(out.length - i, head.length - s.offset);
        for (let k = 0; k < n; k++) out[i + k] += head[s.offset + k] * s.gain;
        i += n; s.offset += n;
        if (s.offset === head.length) { s.queue.shift(); s.queued -= head.length; s.offset = 0; }
      }
    }
    for (let k = 0; k < out.length; k++) {
      const v = out[k];
      out[k] = v > 1 ? 1 : v < -1 ? -1 : v; // the mix of loud speakers must not wrap
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}
registerProcessor("bangor-playback", BangorPlayback);
`;

export interface AudioOptions {
  /** Turn the browser's echo cancellation, noise suppression and gain control on
   * (a real microphone); a test's fake device from a file wants them off. */
  processing: boolean;
}

/** The audio graph of one call: microphone -> capture worklet; playback worklet -> speakers. */
export class AudioEngine {
  readonly context: AudioContext;
  private capture: AudioWorkletNode | null = null;
  private playback: AudioWorkletNode | null = null;
  private stream: MediaStream | null = null;
  /** Called with each captured 20 ms frame (the call's tick). */
  onFrame: (pcm: Float32Array<ArrayBuffer>) => void = () => {};
  captured = 0;

  private constructor(context: AudioContext) {
    this.context = context;
  }

  /** Why there is no microphone (denied, none, busy); null when there is one. */
  micError: string | null = null;

  /** Best from a user gesture, so the context may start at once; otherwise it waits
   * (see `running` and `resume`). Without a microphone the engine still plays. */
  static async open(options: AudioOptions): Promise<AudioEngine> {
    const context = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
    const engine = new AudioEngine(context);
    try {
      await engine.loadWorklets();
      engine.playback = new AudioWorkletNode(context, "bangor-playback", {
        numberOfInputs: 0,
        outputChannelCount: [1],
        processorOptions: { maxQueued: MAX_QUEUED_SAMPLES },
      });
      engine.playback.connect(context.destination);
    } catch (error) {
      engine.close();
      throw error;
    }
    try {
      engine.stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          channelCount: 1,
          sampleRate: SAMPLE_RATE,
          echoCancellation: options.processing,
          noiseSuppression: options.processing,
          autoGainControl: options.processing,
        },
        video: false,
      });
      const source = context.createMediaStreamSource(engine.stream);
      engine.capture = new AudioWorkletNode(context, "bangor-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        channelCountMode: "explicit",
        channelInterpretation: "speakers",
        processorOptions: { frameSamples: FRAME_SAMPLES },
      });
      engine.capture.port.onmessage = (e: MessageEvent<Float32Array<ArrayBuffer>>) => {
        engine.captured += 1;
        engine.onFrame(e.data);
      };
      source.connect(engine.capture);
    } catch (error) {
      engine.micError = error instanceof Error ? error.message || error.name : String(error);
    }
    // Waited for a moment only: without a user gesture the browser keeps the context
    // suspended until one comes (resume() then), and joining must not wait for that.
    await Promise.race([context.resume().catch(() => {}), new Promise((r) => setTimeout(r, RESUME_WAIT_MS))]);
    return engine;
  }

  get running(): boolean {
    return this.context.state === "running";
  }

  resume(): Promise<void> {
    return this.context.resume();
  }

  private async loadWorklets(): Promise<void> {
    for (const code of [CAPTURE_WORKLET, PLAYBACK_WORKLET]) {
      const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
      try {
        await this.context.audioWorklet.addModule(url);
      } finally {
        URL.revokeObjectURL(url);
      }
    }
  }

  /** One member's decoded frame, into its queue in the mixer. */
  play(member: number, pcm: Float32Array): void {
    this.playback?.port.postMessage({ type: "pcm", id: member, pcm }, [pcm.buffer]);
  }

  setGain(member: number, gain: number): void {
    this.playback?.port.postMessage({ type: "gain", id: member, gain });
  }

  forget(member: number): void {
    this.playback?.port.postMessage({ type: "forget", id: member });
  }

  close(): void {
    this.capture?.disconnect();
    this.playback?.disconnect();
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    void this.context.close().catch(() => {});
  }
}

/** Root mean square of a frame: the local speaking mark. */
export function level(pcm: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i]! * pcm[i]!;
  return Math.sqrt(sum / Math.max(pcm.length, 1));
}
