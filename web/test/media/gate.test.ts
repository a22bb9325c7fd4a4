import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GATE_FRAME_SAMPLES as N, GATE_SAMPLE_RATE as SR, VoiceGate, type GateSettings } from "../../src/media/gate.ts";
import { rng } from "./helpers.ts";

const HANGOVER = 15;
const PREROLL = 2;

// --- signals -------------------------------------------------------------------------

const db = (x: number): number => 10 ** (x / 20);

function white(seconds: number, rmsDb: number, seed = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(Math.round(seconds * SR));
  const a = db(rmsDb) * Math.sqrt(3); // uniform in [-a, a] has RMS a / sqrt(3)
  for (let i = 0; i < out.length; i++) out[i] = (r() * 2 - 1) * a;
  return out;
}

/** Pink noise (Paul Kellet's filter), scaled to `rmsDb`. */
function pink(seconds: number, rmsDb: number, seed = 2): Float32Array {
  const w = white(seconds, 0, seed);
  const out = new Float32Array(w.length);
  let b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0;
  for (let i = 0; i < w.length; i++) {
    const x = w[i]!;
    b0 = 0.99886 * b0 + x * 0.0555179;
    b1 = 0.99332 * b1 + x * 0.0750759;
    b2 = 0.969 * b2 + x * 0.153852;
    b3 = 0.8665 * b3 + x * 0.3104856;
    b4 = 0.55 * b4 + x * 0.5329522;
    b5 = -0.7616 * b5 - x * 0.016898;
    out[i] = b0 + b1 + b2 + b3 + b4 + b5 + b6 + x * 0.5362;
    b6 = x * 0.115926;
  }
  return scaleTo(out, rmsDb);
}

function tone(seconds: number, hz: number, rmsDb: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(Math.round(seconds * SR));
  const a = db(rmsDb) * Math.SQRT2;
  for (let i = 0; i < out.length; i++) out[i] = a * Math.sin((2 * Math.PI * hz * i) / SR);
  return out;
}

function rmsDbOf(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return 10 * Math.log10(s / x.length + 1e-30);
}

function scaleTo(x: Float32Array, rmsDb: number): Float32Array {
  const g = db(rmsDb - rmsDbOf(x));
  return x.map((v) => v * g);
}

/** An RBJ band-pass biquad (0 dB at `hz`). */
function bandpass(x: Float32Array, hz: number, q: number): Float32Array {
  const w = (2 * Math.PI * hz) / SR;
  const alpha = Math.sin(w) / (2 * q);
  const a0 = 1 + alpha;
  const [b0, b2, a1, a2] = [alpha / a0, -alpha / a0, (-2 * Math.cos(w)) / a0, (1 - alpha) / a0];
  const out = new Float32Array(x.length);
  let x1 = 0, x2 = 0, y1 = 0, y2 = 0;
  for (let i = 0; i < x.length; i++) {
    const y = b0 * x[i]! + b2 * x2 - a1 * y1 - a2 * y2;
    x2 = x1;
    x1 = x[i]!;
    y2 = y1;
    y1 = y;
    out[i] = y;
  }
  return out;
}

interface Speech {
  pcm: Float32Array;
  /** [start, end) samples of each word. */
  words: [number, number][];
}

/**
 * Speech-like: words of 1..3 voiced syllables (harmonics of a gliding f0 through two
 * formant-like peaks, a raised-cosine syllable envelope with dips between syllables),
 * some starting with a fricative (noise around 6 kHz), separated by pauses of 100..900 ms.
 * The loudest frame is at `levelDb` RMS; fricatives about 10 dB below the vowels.
 */
function speech(words: number, levelDb: number, seed = 3): Speech {
  const r = rng(seed);
  const parts: Float32Array[] = [];
  const spans: [number, number][] = [];
  let at = 0;
  const push = (x: Float32Array): void => {
    parts.push(x);
    at += x.length;
  };
  push(new Float32Array(Math.round(0.5 * SR)));
  const amp = db(levelDb) * 0.5;
  for (let w = 0; w < words; w++) {
    const start = at;
    if (r() < 0.4) {
      // A fricative onset ("s", "f"): noise band-passed around 6 kHz, 60..120 ms.
      const n = Math.round((0.06 + 0.06 * r()) * SR);
      const f = bandpass(white(n / SR, levelDb - 10, 100 + w), 6000, 1);
      for (let i = 0; i < n; i++) f[i]! *= Math.sin((Math.PI * i) / n);
      push(f);
    }
    const syllables = 1 + Math.floor(r() * 3);
    for (let s = 0; s < syllables; s++) {
      const n = Math.round((0.12 + 0.16 * r()) * SR);
      const f0a = 100 + 120 * r();
      const f0b = f0a * (0.85 + 0.3 * r());
      const formant1 = 300 + 500 * r();
      const formant2 = 900 + 1500 * r();
      const x = new Float32Array(n);
      let phase = 0;
      const gain = 0.5 + 0.5 * r(); // syllables differ in stress
      for (let i = 0; i < n; i++) {
        const f0 = f0a + ((f0b - f0a) * i) / n;
        phase += (2 * Math.PI * f0) / SR;
        let v = 0;
        for (let k = 1; k * f0 < 4000; k++) {
          const fk = k * f0;
          const shape = 1 / (1 + ((fk - formant1) / 150) ** 2) + 0.5 / (1 + ((fk - formant2) / 250) ** 2) + 0.05 / k;
          v += shape * Math.sin(k * phase);
        }
        // Syllable envelope: raised cosine, not down to zero between syllables.
        const env = 0.15 + 0.85 * Math.sin((Math.PI * i) / n) ** 2;
        x[i] = amp * gain * env * v;
      }
      push(x);
    }
    spans.push([start, at]);
    push(new Float32Array(Math.round((0.1 + 0.8 * r()) * SR)));
  }
  const pcm = new Float32Array(at);
  let o = 0;
  for (const p of parts) {
    pcm.set(p, o);
    o += p.length;
  }
  // The loudest 20 ms at `levelDb`.
  let loudest = -300;
  for (let f = 0; f + N <= pcm.length; f += N) loudest = Math.max(loudest, rmsDbOf(pcm.subarray(f, f + N)));
  const g = db(levelDb - loudest);
  return { pcm: pcm.map((v) => v * g), words: spans };
}

function mix(...xs: Float32Array[]): Float32Array {
  const out = new Float32Array(Math.max(...xs.map((x) => x.length)));
  for (const x of xs) for (let i = 0; i < x.length; i++) out[i]! += x[i]!;
  return out;
}

function concat(...xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

/** Feed `pcm` frame by frame; which frames (by tick) went out, checking the contract. */
function run(gate: VoiceGate, pcm: Float32Array): boolean[] {
  const ticks = Math.floor(pcm.length / N);
  const sent: boolean[] = new Array<boolean>(ticks).fill(false);
  let last = -1; // the last tick sent
  for (let t = 0; t < ticks; t++) {
    const frame = pcm.slice(t * N, (t + 1) * N);
    const out = gate.process(frame);
    assert.ok(out.length <= PREROLL + 1, `tick ${t}: ${out.length} frames`);
    out.forEach((f, i) => {
      const tick = t - (out.length - 1 - i);
      assert.ok(tick > last, `tick ${tick} sent twice or out of order`);
      last = tick;
      sent[tick] = true;
      // Each frame is the one captured at that tick.
      assert.deepEqual(f, pcm.subarray(tick * N, (tick + 1) * N));
    });
    if (out.length) assert.equal(out[out.length - 1], frame); // this one, not a copy
  }
  return sent;
}

const frameOf = (sample: number): number => Math.floor(sample / N);
const count = (xs: boolean[], from = 0, to = xs.length): number => xs.slice(from, to).filter(Boolean).length;

/** Every frame a word touches went out, and the gate opened at its first or second frame. */
function assertWordsWhole(sent: boolean[], words: [number, number][]): void {
  for (const [start, end] of words) {
    for (let f = frameOf(start); f <= frameOf(end - 1); f++) {
      assert.ok(sent[f], `the word at ${(start / SR).toFixed(2)} s lost frame ${f}`);
    }
  }
}

// --- tests ---------------------------------------------------------------------------

test("defaults: 300 ms hang-over and 40 ms pre-roll, as the CLI's gate", () => {
  const s: GateSettings = new VoiceGate().settings;
  assert.equal(s.hangoverFrames, HANGOVER);
  assert.equal(s.prerollFrames, PREROLL);
  assert.throws(() => new VoiceGate({ hangoverFrames: -1 }), RangeError);
  assert.throws(() => new VoiceGate({ prerollFrames: 1.5 }), RangeError);
  assert.throws(() => new VoiceGate({ prerollFrames: 1_000_000 }), RangeError);
  assert.throws(() => new VoiceGate({ marginDb: Number.NaN }), RangeError);
  assert.throws(() => new VoiceGate().process(new Float32Array(480)), RangeError);
});

test("speech in silence: opens at a word's first frames, pre-roll covers the onset, words whole", () => {
  const { pcm, words } = speech(30, -26);
  const gate = new VoiceGate();
  const sent = run(gate, pcm);
  assertWordsWhole(sent, words);
  // Silence is not sent: pauses longer than the hang-over close the gate.
  assert.ok(count(sent) < sent.length * 0.9, `${count(sent)} of ${sent.length} sent`);
  assert.equal(count(sent, 0, frameOf(words[0]![0]) - PREROLL), 0); // the lead silence
});

test("opens within a frame or two of the onset, even after a long silence", () => {
  const { pcm, words } = speech(1, -30, 7);
  const lead = new Float32Array(5 * SR);
  const gate = new VoiceGate();
  const sent = run(gate, concat(lead, pcm));
  const first = frameOf(lead.length + words[0]![0]);
  const opened = sent.indexOf(true);
  assert.ok(opened >= first - PREROLL && opened <= first, `opened at ${opened}, the word starts at ${first}`);
});

test("silence closes the gate exactly after the hang-over", () => {
  const gate = new VoiceGate();
  const loud = tone(0.2, 300, -20).subarray(0, 10 * N);
  const sent = run(gate, concat(new Float32Array(20 * N), loud, new Float32Array(60 * N)));
  // Opened at the first loud frame (with the pre-roll), open through the hang-over after
  // the last one, closed after that.
  assert.deepEqual(
    sent.map((s, i) => (s ? i : -1)).filter((i) => i >= 0),
    Array.from({ length: PREROLL + 10 + HANGOVER }, (_, i) => 20 - PREROLL + i),
  );
  assert.equal(gate.open, false);
});

for (const [name, make] of [
  ["white", white],
  ["pink", pink],
] as const) {
  for (const level of [-55, -40, -25]) {
    test(`steady ${name} noise at ${level} dBFS alone: the gate closes once the floor adapts`, () => {
      const gate = new VoiceGate();
      const sent = run(gate, concat(new Float32Array(SR), make(10, level, 11)));
      const adapted = frameOf(SR + 3 * SR); // 3 s into the noise
      assert.equal(count(sent, adapted), 0, `${count(sent, adapted)} frames of noise sent after 3 s`);
    });
  }
}

test("a steady tone alone does not hold the gate open", () => {
  const gate = new VoiceGate();
  const sent = run(gate, concat(new Float32Array(SR), tone(8, 440, -20)));
  assert.ok(sent[frameOf(SR) + 1]); // it opens: a new sound could be a voice
  assert.equal(count(sent, frameOf(4 * SR)), 0);
});

for (const [name, make, level] of [
  ["white", white, -45],
  ["pink", pink, -45],
  ["white", white, -60],
] as const) {
  test(`speech over steady ${name} noise at ${level} dBFS: words whole, noise-only pauses not sent`, () => {
    const lead = 3 * SR;
    const { pcm, words } = speech(30, -26, 5);
    const noisy = mix(make((lead + pcm.length) / SR, level, 21), concat(new Float32Array(lead), pcm));
    const gate = new VoiceGate();
    const sent = run(gate, noisy);
    assertWordsWhole(
      sent,
      words.map(([s, e]) => [s + lead, e + lead]),
    );
    // Between words longer than the hang-over plus pre-roll (and a frame each side), the
    // gate is mostly closed.
    let gaps = 0;
    let gapSent = 0;
    for (let i = 1; i < words.length; i++) {
      const from = frameOf(words[i - 1]![1] + lead) + HANGOVER + 2;
      const to = frameOf(words[i]![0] + lead) - PREROLL - 1;
      if (to <= from) continue;
      gaps += to - from;
      gapSent += count(sent, from, to);
    }
    assert.ok(gaps > 50, "the test speech has pauses");
    assert.ok(gapSent <= gaps * 0.1, `${gapSent} of ${gaps} pause frames sent`);
  });
}

test("a louder steady background later: the floor follows, speech on it still opens", () => {
  const gate = new VoiceGate();
  const quiet = white(3, -70, 31);
  const loud = white(4, -35, 32);
  const { pcm, words } = speech(6, -15, 9);
  const at = quiet.length + loud.length;
  const sent = run(gate, concat(quiet, loud, mix(white(pcm.length / SR, -35, 33), pcm)));
  assert.equal(count(sent, frameOf(quiet.length) + 3 * 50, frameOf(at)), 0, "the new noise still open after 3 s");
  assertWordsWhole(
    sent,
    words.map(([s, e]) => [s + at, e + at]),
  );
});

test("bounded: after a long run the gate holds only its pre-roll", () => {
  const gate = new VoiceGate();
  const { pcm } = speech(40, -26, 13);
  run(gate, mix(pcm, pink(pcm.length / SR, -50, 14)));
  run(gate, new Float32Array(2 * SR));
  assert.equal(gate.open, false);
  assert.equal(gate.process(tone(0.02, 300, -20).slice(0, N)).length, PREROLL + 1);
  gate.reset(); // muted: nothing from before goes out later
  run(gate, new Float32Array(2 * SR));
  assert.equal(gate.process(new Float32Array(N)).length, 0);
  assert.ok(gate.stats().floorsDb.every(Number.isFinite));
  // Garbage samples are judged, never thrown on.
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.deepEqual(gate.process(new Float32Array(N).fill(bad)), []);
  }
  assert.ok(gate.stats().floorsDb.every(Number.isFinite));
  // ... and the gate still works after them.
  const sent = run(gate, concat(new Float32Array(SR), white(8, -30, 51)));
  assert.ok(sent[frameOf(SR) + 1]);
  assert.equal(count(sent, frameOf(4 * SR)), 0);
});

// --- real speech, if espeak-ng is installed ------------------------------------------

/** A 16-bit mono WAV's samples, resampled (linearly) to 48 kHz. */
function readWav48k(path: string): Float32Array {
  const b = readFileSync(path);
  let off = 12;
  let rate = 0;
  let data: Buffer | null = null;
  while (off + 8 <= b.length) {
    const id = b.toString("ascii", off, off + 4);
    const size = b.readUInt32LE(off + 4);
    if (id === "fmt ") rate = b.readUInt32LE(off + 12);
    if (id === "data") data = b.subarray(off + 8, Math.min(off + 8 + size, b.length));
    off += 8 + size + (size & 1);
  }
  assert.ok(data && rate > 0, "not a WAV espeak-ng would write");
  const src = new Float32Array(data.length >> 1);
  for (let i = 0; i < src.length; i++) src[i] = data.readInt16LE(2 * i) / 32768;
  const out = new Float32Array(Math.floor((src.length * SR) / rate));
  for (let i = 0; i < out.length; i++) {
    const x = (i * rate) / SR;
    const j = Math.floor(x);
    out[i] = src[j]! + (x - j) * ((src[j + 1] ?? 0) - src[j]!);
  }
  return out;
}

function espeak(text: string): Float32Array | null {
  const dir = mkdtempSync(join(tmpdir(), "gate-"));
  try {
    execFileSync("espeak-ng", ["-w", join(dir, "s.wav"), text], { stdio: "ignore" });
    return readWav48k(join(dir, "s.wav"));
  } catch {
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("real speech (espeak-ng): every audible frame goes out, the pauses do not", (t) => {
  const voice = espeak(
    "The quick brown fox jumps over the lazy dog. A friend joins from the browser, " +
      "and the server never hears a word. Then, after a pause, she speaks again.",
  );
  if (voice === null) {
    t.skip("espeak-ng is not installed");
    return;
  }
  for (const noise of [null, -55] as const) {
    const lead = SR;
    const clean = concat(new Float32Array(lead), voice, new Float32Array(SR));
    const pcm = noise === null ? clean : mix(clean, pink(clean.length / SR, noise, 41));
    const sent = run(new VoiceGate(), pcm);
    // Audible: a frame of the clean speech within 40 dB of its loudest frame.
    const levels = sent.map((_, f) => rmsDbOf(clean.subarray(f * N, (f + 1) * N)));
    const loudest = Math.max(...levels);
    const audible = levels.map((l) => l > loudest - 40);
    const missed = audible.map((a, f) => (a && !sent[f] ? f : -1)).filter((f) => f >= 0);
    assert.deepEqual(missed, [], `noise ${noise}: audible frames not sent`);
    const quiet = audible.filter((a) => !a).length;
    const quietSent = sent.filter((s, f) => s && !audible[f]).length;
    assert.ok(quietSent < quiet * 0.6, `noise ${noise}: ${quietSent} of ${quiet} quiet frames sent`);
  }
});
