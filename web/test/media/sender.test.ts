import { test } from "node:test";
import assert from "node:assert/strict";
import { parseVoiceFrame } from "../../src/wire/voice.ts";
import { Sender } from "../../src/media/sender.ts";
import { SendAdapter } from "../../src/media/adaptation.ts";
import { LossMeter } from "../../src/media/loss.ts";
import { DEFAULT_SETTINGS, MAX_VOICE_FRAME } from "../../src/media/settings.ts";

const opus = (n: number, size = 3) => new Uint8Array(size).fill(n & 0xff);

test("depth: full until the first report, then from the worst loss, held 10 s", () => {
  const a = new SendAdapter(40_000, { fec: true, maxDepth: 2, thresholds: [0.01, 0.03, 0.1], hold: 10, startup: 10 });
  assert.equal(a.initial().depth, 2);
  assert.equal(a.plan(0).depth, 2); // no report yet: assume the worst
  assert.equal(a.plan(9.9).depth, 2);
  assert.deepEqual(a.plan(10), { depth: 0, expectedLoss: 0, bitrate: 40_000, spread: [] }); // startup over
  a.report(1, 0.02, 11);
  assert.deepEqual(a.plan(11), { depth: 1, expectedLoss: 0, bitrate: 40_000, spread: [] });
  a.report(2, 0.5, 12); // the worst listener decides, capped at maxDepth
  assert.equal(a.plan(12).depth, 2);
  a.report(2, 0, 13);
  assert.equal(a.plan(21.9).depth, 2); // held
  assert.equal(a.plan(22.1).depth, 0); // 0.5 and 0.02 expired; 0 from 13 is left
  a.report(1, 0.005, 23); // below 1 %: no copies, FEC sized to the loss instead
  assert.deepEqual(a.plan(23), { depth: 0, expectedLoss: 1, bitrate: 40_000, spread: [] });
  a.setMaxBitrate(24_000);
  assert.equal(a.plan(23).bitrate, 24_000);
  const three = new SendAdapter(40_000, { fec: true, maxDepth: 3, thresholds: [0.01, 0.03, 0.1], hold: 10, startup: 10 });
  three.report(1, 0.1, 0);
  assert.equal(three.plan(0).depth, 3);
  three.report(1, 0, 0); // a clean report ends startup but the 10 % one is held
  assert.equal(three.plan(5).depth, 3);
  assert.throws(() => new SendAdapter(1, { fec: true, maxDepth: 4, thresholds: [], hold: 1, startup: 1 }));
  assert.throws(() => new SendAdapter(1, { fec: true, maxDepth: 2, thresholds: [0.1, 0.01], hold: 1, startup: 1 }));
});

test("seq advances every tick, packet per frame sent, copies of the ticks just before", () => {
  const s = new Sender(DEFAULT_SETTINGS);
  s.updatePlan(0); // startup: depth 2
  const f0 = parseVoiceFrame(s.frame(opus(0))!);
  const f1 = parseVoiceFrame(s.frame(opus(1))!);
  const f2 = parseVoiceFrame(s.frame(opus(2))!);
  assert.deepEqual([f0.seq, f0.packet, f0.redundant.length, f0.depth], [0, 0, 0, 2]);
  assert.deepEqual([f1.seq, f1.packet, f1.redundant.map((r) => r[0])], [1, 1, [0]]);
  assert.deepEqual([f2.seq, f2.packet, f2.redundant.map((r) => r[0])], [2, 2, [0, 1]]);
  assert.equal(s.frame(null), null); // tick 3 not sent
  const f4 = parseVoiceFrame(s.frame(opus(4))!);
  assert.deepEqual([f4.seq, f4.packet, f4.redundant.length], [4, 3, 0]); // a pause: no copies
  const f5 = parseVoiceFrame(s.frame(opus(5))!);
  assert.deepEqual(f5.redundant.map((r) => r[0]), [4]);
  assert.equal(s.sent, 5);
  assert.equal(s.suppressed, 1);
  // A clean report turns redundancy off and FEC stays at 0 %.
  assert.equal(s.report(7, 0, 1), true);
  assert.deepEqual(s.encoderHint(), { bitrate: 40_000, useinbandfec: true, packetlossperc: 0 });
  assert.equal(parseVoiceFrame(s.frame(opus(6))!).redundant.length, 0);
  s.report(7, 0.005, 2); // FEC hint follows loss while depth is 0
  assert.equal(s.encoderHint().packetlossperc, 1);
  s.report(7, 0.04, 3);
  assert.deepEqual([s.plan.depth, s.encoderHint().packetlossperc], [2, 0]);
});

test("frames(): the gate's pre-roll goes out with the seqs of the ticks it was captured at", () => {
  const s = new Sender(DEFAULT_SETTINGS);
  s.updatePlan(0); // startup: depth 2
  assert.equal(s.frames([opus(0)]).length, 1); // tick 0 sent (the end of a hang-over)
  assert.deepEqual(s.frames([]), []); // ticks 1..4 held back
  assert.deepEqual(s.frames([]), []);
  assert.deepEqual(s.frames([]), []);
  assert.deepEqual(s.frames([]), []);
  assert.equal(s.suppressed, 4);
  // Tick 5 is voiced: the pre-roll (ticks 3 and 4) goes out before it.
  const out = s.frames([opus(3), opus(4), opus(5)]).map(parseVoiceFrame);
  assert.deepEqual(
    out.map((f) => [f.seq, f.packet, f.opus[0], f.redundant.map((r) => r[0])]),
    [
      [3, 1, 3, []], // after the pause: no copies of tick 0
      [4, 2, 4, [3]],
      [5, 3, 5, [3, 4]],
    ],
  );
  assert.equal(s.seq, 6);
  assert.deepEqual([s.sent, s.suppressed], [4, 2]); // sent + suppressed = ticks
  // Right after a sent tick, a pre-roll cannot be (the gate never does it); copies
  // then carry on across the ticks.
  const next = parseVoiceFrame(s.frame(opus(6))!);
  assert.deepEqual([next.seq, next.redundant.map((r) => r[0])], [6, [4, 5]]);
  assert.throws(() => s.frames([opus(1), new Uint8Array(0)]), RangeError);
  assert.throws(() => s.frames(Array.from({ length: 60 }, (_, i) => opus(i))), RangeError);
  assert.equal(s.seq, 7); // a refused call took no tick
});

test("copies that would pass MAX_VOICE_FRAME are left out, oldest first", () => {
  const s = new Sender(DEFAULT_SETTINGS);
  s.updatePlan(0);
  s.frame(opus(1, 500));
  s.frame(opus(2, 400));
  const f = s.frame(opus(3, 300))!;
  assert.ok(f.length <= MAX_VOICE_FRAME);
  assert.deepEqual(parseVoiceFrame(f).redundant.map((r) => r[0]), [2]);
});

test("seq and packet wrap", () => {
  const s = new Sender(DEFAULT_SETTINGS);
  s.seq = 2 ** 32 - 1;
  (s as unknown as { packet: number }).packet = 0xffff;
  s.updatePlan(0);
  const a = parseVoiceFrame(s.frame(opus(1))!);
  const b = parseVoiceFrame(s.frame(opus(2))!);
  assert.deepEqual([a.seq, a.packet, b.seq, b.packet], [2 ** 32 - 1, 0xffff, 0, 0]);
  assert.deepEqual(b.redundant.map((r) => r[0]), [1]); // the copy crosses the wrap
});

test("loss meter: bursts are runs of missing packets, judged once 10 more came", () => {
  const m = new LossMeter();
  const lost = new Set([10, 11, 12, 30, 50, 51, 52, 53, 54]); // runs of 3, 1 and 5
  for (let p = 0; p < 100; p++) if (!lost.has(p)) m.onPacket(p);
  const r = m.interval();
  assert.deepEqual([r.burstLost, r.bursts, r.burst], [9, 3, 3]);
  const late = new LossMeter();
  for (const p of [0, 1, 3, 4, 2, 5, 7, 8, 9]) late.onPacket(p); // 2 reordered; 6 missing
  assert.equal(late.interval().bursts, 0);
  for (let p = 10; p < 30; p++) late.onPacket(p);
  const l = late.interval();
  assert.deepEqual([l.burstLost, l.bursts], [1, 1]);
});

test("adapter: reported bursts spread the copies, only when every listener reads them", () => {
  const options = { fec: true, maxDepth: 2, thresholds: [0.01, 0.03, 0.1], hold: 10, startup: 0 };
  const a = new SendAdapter(40_000, options);
  a.joined(1);
  a.report(1, 0.15, 0, 3);
  assert.deepEqual(a.plan(0), { depth: 3, expectedLoss: 0, bitrate: 40_000, spread: [3, 5, 8] });
  a.joined(2); // unknown yet: maybe an old client
  assert.deepEqual(a.plan(0).spread, []);
  a.report(2, 0, 0.5, null); // an old client's report
  assert.deepEqual(a.plan(0.5), { depth: 2, expectedLoss: 0, bitrate: 40_000, spread: [] });
  a.forget(2);
  a.report(1, 0.05, 1, 3);
  assert.deepEqual(a.plan(11).spread, [4, 8]); // 5 %: two copies
  const random = new SendAdapter(40_000, options);
  random.report(1, 0.15, 0, 1.2);
  assert.deepEqual(random.plan(0).spread, []);
  const sender = new Sender(DEFAULT_SETTINGS);
  sender.adapter.joined(2);
  sender.report(2, 0.15, 0, 3);
  const frames = Array.from({ length: 10 }, (_, i) => parseVoiceFrame(sender.frame(opus(i))!));
  assert.deepEqual(
    frames.map((f) => f.distances),
    [[], [], [], [3], [3], [5, 3], [5, 3], [5, 3], [8, 5, 3], [8, 5, 3]],
  );
  for (const f of frames) assert.deepEqual(f.plan, [3, 5, 8]);
  assert.deepEqual(frames[9]!.redundant.map((r) => r[0]), [1, 4, 6]); // ticks 1, 4 and 6
});

test("loss meter: from packet numbers, per interval, across wrap", () => {
  const m = new LossMeter();
  for (const p of [65530, 65531, 65533, 65535, 0, 1]) m.onPacket(p); // 65532 and 65534 lost
  const none = { burstLost: 0, bursts: 0, burst: 0 }; // runs are judged 10 packets later
  assert.deepEqual(m.interval(), { expected: 8, received: 6, lost: 2, loss: 0.25, ...none });
  m.onPacket(1); // a duplicate arrival of the highest: not expected more
  m.onPacket(5);
  const r = m.interval();
  assert.deepEqual([r.expected, r.received], [4, 2]);
  assert.deepEqual(m.interval(), { expected: 0, received: 0, lost: 0, loss: 0, ...none });
  m.onPacket(30000); // a restarted counter, not 29995 lost
  assert.equal(m.interval().expected, 1);
  assert.equal(m.total().expected, 13);
});
