import { test } from "node:test";
import assert from "node:assert/strict";
import { JitterBuffer, seqDiff, type Decision } from "../../src/media/jitter.ts";
import { rng } from "./helpers.ts";

const FRAME = 0.02;
const pkt = (seq: number) => new Uint8Array([0xf8, seq & 0xff, (seq >>> 8) & 0xff]);
const buffer = () => new JitterBuffer({ targetFrames: 2, maxFrames: 25, minFrames: 1, frameMs: 20 });

/**
 * Frames first..first+count-1 sent every 20 ms from t=0, each delayed by delay(i) (null:
 * lost); play-out ticks every 20 ms from `phase`. Returns the decisions in tick order.
 */
function run(jb: JitterBuffer, count: number, delay: (i: number) => number | null, first = 0, start = 0, phase = 0.005): Decision[] {
  const events: { at: number; seq?: number }[] = [];
  for (let i = 0; i < count; i++) {
    const d = delay(i);
    if (d !== null) events.push({ at: start + i * FRAME + d, seq: (first + i) % 2 ** 32 });
  }
  for (let k = 0; k < count + 40; k++) events.push({ at: start + k * FRAME + phase });
  events.sort((a, b) => a.at - b.at || (a.seq === undefined ? 1 : -1));
  const out: Decision[] = [];
  for (const e of events) {
    if (e.seq !== undefined) jb.insert(e.seq, pkt(e.seq), e.at);
    else out.push(jb.pop());
  }
  return out;
}

const kinds = (ds: Decision[]) => ds.map((d) => d.kind[0]).join("");

test("seqDiff wraps", () => {
  assert.equal(seqDiff(0, 2 ** 32 - 1), 1);
  assert.equal(seqDiff(2 ** 32 - 1, 0), -1);
  assert.equal(seqDiff(5, 3), 2);
  assert.equal(seqDiff(2 ** 31, 0), -(2 ** 31));
});

test("a clean stream plays every frame in order, then goes idle", () => {
  const jb = buffer();
  const ds = run(jb, 100, () => 0.03);
  const frames = ds.filter((d) => d.kind === "frame") as { seq: number }[];
  assert.deepEqual(frames.map((f) => f.seq), [...Array(100).keys()]);
  const s = jb.stats();
  assert.deepEqual([s.played, s.lost, s.late, s.duplicates, s.depth], [100, 0, 0, 0, 0]);
  // The tail: a few ticks of concealment (the sender might only be late), then silence.
  assert.match(kinds(ds), /^s+f{100}c{1,11}s+$/);
});

test("reorder, duplicates and late frames; a lost frame is concealed once", () => {
  const jb = buffer();
  for (const seq of [1, 0, 2]) jb.insert(seq, pkt(seq), 0);
  assert.equal(jb.insert(2, pkt(2), 0), "duplicate");
  assert.deepEqual([jb.pop(), jb.pop()].map((d) => (d as { seq: number }).seq), [0, 1]);
  assert.equal(jb.insert(0, pkt(0), 0.05), "late");
  jb.insert(4, pkt(4), 0.06); // 3 lost
  jb.insert(5, pkt(5), 0.06);
  const d = [jb.pop(), jb.pop(), jb.pop(), jb.pop()];
  assert.deepEqual(d.map((x) => x.kind), ["frame", "conceal", "frame", "frame"]);
  assert.equal((d[1] as { next: Uint8Array | null }).next?.[1], 4); // FEC source for 3
  assert.equal(jb.insert(3, pkt(3), 0.1), "late");
  const s = jb.stats();
  assert.deepEqual([s.played, s.lost, s.late, s.duplicates], [5, 1, 2, 1]);
});

test("copies fill holes, never replace or duplicate, and their primary may overtake", () => {
  const jb = buffer();
  jb.insert(10, pkt(10), 0);
  jb.insert(11, pkt(11), 0);
  assert.equal(jb.pop().kind, "frame"); // 10
  assert.equal(jb.insert(13, pkt(13), 0.04), "queued"); // 12 lost on the way
  assert.equal(jb.insert(12, pkt(12), null, true), "recovered"); // a copy in 13's packet... or 14's
  assert.equal(jb.insert(11, pkt(11), null, true), "ignored"); // 11 is buffered
  assert.equal(jb.insert(10, pkt(10), null, true), "ignored"); // 10 played
  assert.equal(jb.insert(12, pkt(12), 0.05), "queued"); // the primary came after all: no duplicate
  assert.deepEqual([jb.pop(), jb.pop(), jb.pop()].map((d) => (d as { seq: number }).seq), [11, 12, 13]);
  assert.deepEqual([jb.stats().recovered, jb.stats().duplicates], [0, 0]);
  jb.insert(15, pkt(15), 0.1);
  jb.insert(14, pkt(14), null, true);
  assert.equal(jb.stats().recovered, 1);
});

test("target delay adapts to jitter: grows fast, shrinks slowly once calm", () => {
  const jb = buffer();
  const random = rng(1);
  // 10 s with up to 70 ms of jitter.
  const jittery = run(jb, 500, () => random() * 0.07);
  const s1 = jb.stats();
  assert.ok(s1.target >= 4 && s1.target <= 6, `target ${s1.target}`);
  assert.ok(s1.jitterMs > 50 && s1.jitterMs <= 70, `jitter ${s1.jitterMs}`);
  // After adapting, the second half loses (next to) nothing.
  const late = jittery.slice(250, 500).filter((d) => d.kind === "conceal").length;
  assert.ok(late <= 5, `${late} concealed in the second half`);
  assert.ok(s1.delayMs > 40, `delay ${s1.delayMs}`);
  // Then 20 s calm: the history forgets the jitter and spare frames are dropped.
  run(jb, 1000, () => 0.002, 500, 10.0);
  const s2 = jb.stats();
  assert.ok(s2.target <= 2, `target ${s2.target}`);
  assert.ok(s2.dropped >= 2, `dropped ${s2.dropped}`);
  assert.ok(s2.delayMs < 50, `delay ${s2.delayMs}`);
  assert.ok(s2.jitterMs < 5);
});

test("a delay spike: the buffer waits instead of losing frames", () => {
  const jb = buffer();
  // Frames 100..104 come 100 ms late, all at once (a stall on the path).
  const ds = run(jb, 300, (i) => (i >= 100 && i < 105 ? 0.1 - (i - 100) * FRAME : 0.001));
  const s = jb.stats();
  assert.equal(s.lost, 0);
  assert.ok(s.stretched >= 3);
  assert.equal(ds.filter((d) => d.kind === "frame").length, 300);
});

test("bounded memory: a flood of frames far ahead keeps the span within maxFrames", () => {
  const jb = buffer();
  jb.insert(0, pkt(0), 0);
  for (let i = 0; i < 100_000; i++) {
    const seq = Math.floor(i * 7919) % 2 ** 32;
    jb.insert(seq, pkt(seq), 1 + i * 1e-6);
    assert.ok(jb.stats().depth <= 25);
  }
  for (let i = 0; i < 5000; i++) jb.pop();
  for (let i = 0; i < 100_000; i++) jb.insert(i % 2 ** 32, pkt(i), 2 + i * 1e-6);
  const s = jb.stats();
  assert.ok(s.depth <= 25 && s.overflow > 0);
  assert.equal(s.received, 200_001);
});

test("seq wrap: the stream plays through 2**32 - 1 -> 0", () => {
  const jb = buffer();
  const ds = run(jb, 60, () => 0.01, 2 ** 32 - 30);
  const seqs = (ds.filter((d) => d.kind === "frame") as { seq: number }[]).map((f) => f.seq);
  assert.equal(seqs.length, 60);
  assert.equal(seqs[29], 2 ** 32 - 1);
  assert.equal(seqs[30], 0);
});

test("idle then a new spurt; old frames after idle are stale", () => {
  const jb = buffer();
  run(jb, 20, () => 0.01);
  assert.equal(jb.pop().kind, "silence");
  assert.equal(jb.insert(5, pkt(5), 5), "late");
  const ds = run(jb, 20, () => 0.01, 100, 6);
  assert.equal(ds.filter((d) => d.kind === "frame").length, 20);
  assert.equal(jb.stats().lost, 0);
});

test("waiting for far copies: a burst that takes the newest frames does not stall play-out", () => {
  // The target waits 8 frames for spread copies; the buffer starts that deep (prebuffer).
  // Frames 300..303 go missing, and when 300 is due so do the newest (306..312): the
  // level dips, but no frame is late. Each is lost at its tick, none waited for.
  const jb = buffer();
  jb.setExtraFrames(8);
  const gone = (i: number) => (i >= 300 && i < 304) || (i >= 306 && i < 313);
  const ds = run(jb, 600, (i) => (gone(i) ? null : 0.001));
  const lost = ds.filter((d) => d.kind === "conceal" && d.seq < 600); // then its tail
  const want = [300, 301, 302, 303, 306, 307, 308, 309, 310, 311, 312];
  assert.deepEqual(lost.map((d) => (d as { seq: number }).seq), want);
  assert.equal(jb.stats().stretched, 0);
});
