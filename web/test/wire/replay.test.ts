import { test } from "node:test";
import assert from "node:assert/strict";
import { REPLAY_WINDOW, ReplayWindow } from "../../src/wire/replay.ts";

test("the table of PROTOCOL.md 5.5", () => {
  const w = new ReplayWindow();
  assert.equal(w.highest, -1n);
  assert.ok(w.accept(5000n)); // the first packet may carry any counter
  assert.ok(!w.accept(5000n)); // seen
  assert.ok(w.accept(5000n - 2047n)); // oldest in the window
  assert.ok(!w.accept(5000n - 2047n));
  assert.ok(!w.accept(5000n - 2048n)); // too old
  assert.ok(w.accept(4999n));
  assert.ok(w.accept(5001n));
  assert.ok(!w.accept(4999n));
  assert.equal(w.highest, 5001n);
});

test("a slide forgets exactly the counters that fell out", () => {
  const w = new ReplayWindow(64);
  for (let c = 0n; c < 64n; c++) assert.ok(w.accept(c));
  assert.ok(w.accept(100n)); // 37..100 now in the window; 37..63 seen, 64..99 not
  for (let c = 37n; c < 64n; c++) assert.ok(!w.accept(c), `${c}`);
  for (let c = 64n; c < 100n; c++) assert.ok(w.accept(c), `${c}`);
  assert.ok(!w.accept(36n));
  assert.ok(w.accept(100n + 64n)); // a jump of the window size clears all
  assert.ok(w.accept(101n));
});

test("out-of-range counters and a reference model", () => {
  const w = new ReplayWindow();
  assert.ok(!w.accept(-1n));
  assert.ok(!w.accept(2n ** 64n));
  assert.ok(w.accept(2n ** 64n - 1n));
  // Random walk against a set-based model of the Python semantics.
  const m = new ReplayWindow(REPLAY_WINDOW);
  const seen = new Set<bigint>();
  let highest = -1n;
  let x = 1;
  for (let i = 0; i < 20000; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const c = BigInt(Math.max(0, Number(highest) + (x % 3000) - 2600));
    const expect = c > highest || (highest - c < BigInt(REPLAY_WINDOW) && !seen.has(c));
    assert.equal(m.accept(c), expect, `step ${i} counter ${c}`);
    if (expect) {
      seen.add(c);
      if (c > highest) highest = c;
    }
  }
});

test("review: a slide costs number arithmetic, not one BigInt per counter passed", () => {
  // Clearing the slots passed used BigInt math per counter: about 100 us for a slide of
  // 2047, so whoever holds a key (the server for hop packets, a member for SFrame) could
  // make each packet cost a hundred times its decryption by stepping counters so.
  const w = new ReplayWindow();
  let c = 0n;
  const start = performance.now();
  for (let i = 0; i < 20000; i++) {
    c += 2047n;
    assert.equal(w.accept(c), true);
  }
  const ms = performance.now() - start;
  assert.ok(ms < 1000, `20000 slides took ${ms.toFixed(0)} ms`);
  assert.equal(w.accept(c - 2046n), true); // never seen, in the window
  assert.equal(w.accept(c - 2047n), false); // the previous highest: seen
  assert.equal(w.accept(c - 2048n), false); // out of the window
});
