// Voice activity gate for the browser, sans-I/O: the browser's counterpart of
// src/bangor/audio/vad.py. The shell feeds every captured 20 ms frame to process() and
// encodes and sends only the frames it returns; the rest of the ticks send nothing.
//
// The browser has no WebRTC VAD, so the speech/not-speech decision is made here, from
// the frame's spectrum (a 1024-point FFT, a few microseconds a frame):
//
// * level: the power in two bands, 150 Hz..4 kHz (voiced sounds; no DC, hum or rumble,
//   and broadband hiss counts only a sixth of its power) and 4..12 kHz (fricatives), each
//   against its own adaptive noise floor: voice if either is at least `marginDb` above
//   its floor (and above `minLevelDb`, so near-digital silence never counts). A floor
//   drops at once to any quieter frame (a pause between words shows the background) and
//   rises slowly otherwise (`riseDbPerS`), so speech, which dips between syllables,
//   never lifts it.
// * steadiness: a background that stays the same (a fan, hiss, hum, a tone) would only
//   be learned at `riseDbPerS`. So the octave-band spectrum of each frame is compared
//   with its recent average; after `steadyFrames` frames in a row that match it within
//   `steadyDb`, the sound is taken for background and the floor moves to it quickly
//   (time constant `steadyTau`). Speech changes its spectrum every syllable, so it is
//   never steady that long (a note held longer than about a second is the exception).
//   Fricatives are noise-like but short; steadiness is about time, not the spectrum's
//   shape, so an "s" at a word's start still opens the gate on its level.
//
// On a real microphone the browser's noise suppression runs first, so the floor is
// low and speech stands well above it; with `&processing=off` (a file as microphone)
// the gate sees the raw signal.
//
// Two additions keep words whole, as in vad.py:
// * hang-over: after the last voiced frame, `hangoverFrames` more frames are sent
//   (300 ms), so soft word endings and short pauses between words are not clipped;
// * pre-roll: the last `prerollFrames` frames held back while closed are sent just
//   before the first voiced frame (40 ms), since a word's soft start is often below
//   the margin.
//
// The frames one call returns are consecutive and end with the frame just passed in,
// so a caller numbering frames by capture tick numbers frame i of n as
// tick - (n - 1 - i). No frame is returned twice and none out of order.

import { atLeastOne, DEFAULT_SETTINGS } from "./settings.ts";

export const GATE_SAMPLE_RATE = 48_000;
/** One 20 ms frame at 48 kHz: the only frame the gate takes (the page's tick). */
export const GATE_FRAME_SAMPLES = 960;

export interface GateSettings {
  /** Frames sent after the last voiced one (ClientSettings.vad_hangover_ms = 300 ms). */
  readonly hangoverFrames: number;
  /** Frames held back while closed and sent before a voiced one (vad_preroll_ms = 40 ms). */
  readonly prerollFrames: number;
  /** A band's level above its noise floor that counts as voice, dB. */
  readonly marginDb: number;
  /** Below this band level (dB relative to a full-scale square wave) nothing is voice. */
  readonly minLevelDb: number;
  /** How fast the floor rises under a sound that is not steady, dB per second. */
  readonly riseDbPerS: number;
  /** Frames in a row whose spectrum matches the recent average before the sound is background. */
  readonly steadyFrames: number;
  /** "Matches": the mean distance of the octave bands' levels from their average, dB. */
  readonly steadyDb: number;
  /** Time constant of the floor moving to a steady background, seconds. */
  readonly steadyTau: number;
}

const FRAME_MS = DEFAULT_SETTINGS.frameMs;

export const DEFAULT_GATE_SETTINGS: GateSettings = Object.freeze({
  hangoverFrames: atLeastOne(300, FRAME_MS),
  prerollFrames: atLeastOne(40, FRAME_MS),
  marginDb: 9,
  minLevelDb: -60,
  riseDbPerS: 3,
  steadyFrames: 30,
  steadyDb: 2.5,
  steadyTau: 0.3,
});

/** Most frames of hang-over or pre-roll accepted (10 s): bounds the state. */
export const MAX_GATE_FRAMES = 500;

// --- the spectrum --------------------------------------------------------------------

const FFT_SIZE = 1024;
const FFT_BITS = 10;
const BIN_HZ = GATE_SAMPLE_RATE / FFT_SIZE; // 46.875
/** Where voice is looked for (Hz), each band against its own floor: voiced sounds below
 * 4 kHz (no DC, hum or rumble), and fricatives ("s", "f") above, which start many words. */
export const VOICE_BANDS: readonly (readonly [number, number])[] = [
  [150, 4000],
  [4000, 12000],
];
/** Octave bands the steadiness check compares (Hz); each holds 8 or more bins. */
const STEADY_BANDS: readonly (readonly [number, number])[] = [
  [125, 500],
  [500, 1000],
  [1000, 2000],
  [2000, 4000],
  [4000, 8000],
];
/** The level of nothing at all (dB): keeps logarithms finite and digital silence steady. */
const SILENCE_DB = -120;
/** Smoothing of the band average steadiness compares with, per frame (about 100 ms). */
const AVERAGE_ALPHA = 0.2;

const WINDOW = new Float64Array(GATE_FRAME_SAMPLES);
let windowPower = 0;
for (let i = 0; i < GATE_FRAME_SAMPLES; i++) {
  const w = 0.5 - 0.5 * Math.cos((2 * Math.PI * (i + 0.5)) / GATE_FRAME_SAMPLES);
  WINDOW[i] = w;
  windowPower += w * w;
}
// A one-sided band's power as mean square (Parseval with the window's power).
const POWER_SCALE = 2 / (FFT_SIZE * windowPower);
const REVERSED = new Uint16Array(FFT_SIZE);
for (let i = 0; i < FFT_SIZE; i++) {
  let r = 0;
  for (let b = 0; b < FFT_BITS; b++) r |= ((i >> b) & 1) << (FFT_BITS - 1 - b);
  REVERSED[i] = r;
}
const COS = new Float64Array(FFT_SIZE / 2);
const SIN = new Float64Array(FFT_SIZE / 2);
for (let i = 0; i < FFT_SIZE / 2; i++) {
  COS[i] = Math.cos((2 * Math.PI * i) / FFT_SIZE);
  SIN[i] = -Math.sin((2 * Math.PI * i) / FFT_SIZE);
}

function bin(hz: number): number {
  return Math.round(hz / BIN_HZ);
}

/** |X[k]|^2 for k < FFT_SIZE / 2 of the windowed, zero-padded frame (re, im: scratch). */
function powerSpectrum(pcm: Float32Array, re: Float64Array, im: Float64Array, out: Float64Array): void {
  re.fill(0);
  im.fill(0);
  for (let i = 0; i < GATE_FRAME_SAMPLES; i++) re[REVERSED[i]!] = pcm[i]! * WINDOW[i]!;
  for (let size = 2; size <= FFT_SIZE; size <<= 1) {
    const half = size >> 1;
    const step = FFT_SIZE / size;
    for (let start = 0; start < FFT_SIZE; start += size) {
      for (let k = 0; k < half; k++) {
        const c = COS[k * step]!;
        const s = SIN[k * step]!;
        const a = start + k;
        const b = a + half;
        const tr = re[b]! * c - im[b]! * s;
        const ti = re[b]! * s + im[b]! * c;
        re[b] = re[a]! - tr;
        im[b] = im[a]! - ti;
        re[a] = re[a]! + tr;
        im[a] = im[a]! + ti;
      }
    }
  }
  for (let k = 0; k < FFT_SIZE / 2; k++) out[k] = re[k]! * re[k]! + im[k]! * im[k]!;
}

function bandDb(power: Float64Array, lowHz: number, highHz: number): number {
  let sum = 0;
  for (let k = bin(lowHz); k < bin(highHz); k++) sum += power[k]!;
  return Math.max(10 * Math.log10(sum * POWER_SCALE + 1e-30), SILENCE_DB);
}

// --- the gate ------------------------------------------------------------------------

export interface GateStats {
  /** Frames passed in. */
  readonly frames: number;
  /** Frames judged voiced (the rest went out only as hang-over or pre-roll, or not at all). */
  readonly voiced: number;
  /** The noise floor now per VOICE_BANDS, dB; empty before the first frame. */
  readonly floorsDb: readonly number[];
}

export class VoiceGate {
  readonly settings: GateSettings;
  private left = 0; // frames still to send after the last voiced one
  // The most recent frames held back (consecutive, ending just before the next).
  private held: Float32Array<ArrayBuffer>[] = [];
  private floors: number[] | null = null; // per VOICE_BANDS, dB
  private average: Float64Array | null = null;
  private steady = 0; // frames in a row matching the average (capped)
  private frames = 0;
  private voiced = 0;
  private readonly re = new Float64Array(FFT_SIZE);
  private readonly im = new Float64Array(FFT_SIZE);
  private readonly power = new Float64Array(FFT_SIZE / 2);
  private readonly bands = new Float64Array(STEADY_BANDS.length);

  constructor(settings: Partial<GateSettings> = {}) {
    const s = (this.settings = Object.freeze({ ...DEFAULT_GATE_SETTINGS, ...settings }));
    for (const name of ["hangoverFrames", "prerollFrames", "steadyFrames"] as const) {
      const v = s[name];
      if (!Number.isInteger(v) || v < 0 || v > MAX_GATE_FRAMES) {
        throw new RangeError(`voice gate ${name} must be a whole 0..${MAX_GATE_FRAMES}, got ${v}`);
      }
    }
    for (const name of ["marginDb", "riseDbPerS", "steadyDb", "steadyTau"] as const) {
      if (!(s[name] >= 0 && Number.isFinite(s[name]))) throw new RangeError(`voice gate ${name} must be >= 0`);
    }
    if (!Number.isFinite(s.minLevelDb)) throw new RangeError("voice gate minLevelDb must be finite");
  }

  /** True while the next frame goes out even if silent (speech or its hang-over). */
  get open(): boolean {
    return this.left > 0;
  }

  /** Forget held frames and the hang-over (the microphone was muted); the floor stays. */
  reset(): void {
    this.held = [];
    this.left = 0;
  }

  stats(): GateStats {
    return Object.freeze({ frames: this.frames, voiced: this.voiced, floorsDb: Object.freeze([...(this.floors ?? [])]) });
  }

  /** The frames to encode and send now, oldest first; empty while closed. */
  process(pcm: Float32Array<ArrayBuffer>): Float32Array<ArrayBuffer>[] {
    if (pcm.length !== GATE_FRAME_SAMPLES) {
      throw new RangeError(`a frame must be ${GATE_FRAME_SAMPLES} samples, got ${pcm.length}`);
    }
    this.frames += 1;
    let frames: Float32Array<ArrayBuffer>[];
    if (this.isVoice(pcm)) {
      this.voiced += 1;
      frames = [...this.held, pcm];
      this.held = [];
      this.left = this.settings.hangoverFrames + 1; // this frame, then the hang-over
    } else if (this.left > 0) {
      frames = [pcm];
    } else {
      if (this.settings.prerollFrames) {
        this.held.push(pcm.slice()); // the capture side may reuse its buffer
        if (this.held.length > this.settings.prerollFrames) this.held.shift();
      }
      return [];
    }
    this.left -= 1;
    return frames;
  }

  private isVoice(pcm: Float32Array): boolean {
    const s = this.settings;
    powerSpectrum(pcm, this.re, this.im, this.power);
    const db = (low: number, high: number): number => {
      const v = bandDb(this.power, low, high);
      return Number.isFinite(v) ? v : SILENCE_DB; // NaN or infinite samples: judged as nothing
    };

    // Steadiness: the octave bands against their recent average.
    const bands = this.bands;
    STEADY_BANDS.forEach(([low, high], i) => (bands[i] = db(low, high)));
    if (this.average === null) {
      this.average = Float64Array.from(bands);
    } else {
      let distance = 0;
      for (let i = 0; i < bands.length; i++) distance += Math.abs(bands[i]! - this.average[i]!);
      distance /= bands.length;
      this.steady = distance <= s.steadyDb ? Math.min(this.steady + 1, s.steadyFrames) : 0;
      for (let i = 0; i < bands.length; i++) this.average[i]! += AVERAGE_ALPHA * (bands[i]! - this.average[i]!);
    }
    const steady = s.steadyFrames > 0 && this.steady >= s.steadyFrames;

    const frameS = GATE_FRAME_SAMPLES / GATE_SAMPLE_RATE;
    const approach = 1 - Math.exp(-frameS / Math.max(s.steadyTau, 1e-3));
    const floors = (this.floors ??= VOICE_BANDS.map(([low, high]) => db(low, high))); // the first frame: background
    let voice = false;
    VOICE_BANDS.forEach(([low, high], i) => {
      const level = db(low, high);
      const floor = floors[i]!;
      // Judged against the floor as it was before this frame.
      if (level >= floor + s.marginDb && level >= s.minLevelDb) voice = true;
      if (level <= floor) floors[i] = level; // the background shows between words: follow it down
      else if (steady) floors[i] = floor + (level - floor) * approach;
      else floors[i] = Math.min(floor + s.riseDbPerS * frameS, level);
    });
    return voice;
  }
}
