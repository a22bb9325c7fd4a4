import { test } from "node:test";
import assert from "node:assert/strict";
import { concat, toHex } from "../../src/wire/bytes.ts";
import { FramingError, LocalProtocolError } from "../../src/wire/errors.ts";
import { FrameDecoder, LENGTH_PREFIX, MAX_FRAME_SIZE, encodeFrame } from "../../src/wire/framing.ts";

test("layout and the size limit", () => {
  assert.equal(toHex(encodeFrame(new Uint8Array([0x61, 0x62, 0x63]))), "0003616263");
  assert.equal(toHex(encodeFrame(new Uint8Array(258)).slice(0, 2)), "0102");
  assert.equal(encodeFrame(new Uint8Array(MAX_FRAME_SIZE)).length, MAX_FRAME_SIZE + LENGTH_PREFIX);
  assert.throws(() => encodeFrame(new Uint8Array(MAX_FRAME_SIZE + 1)), LocalProtocolError);
});

test("frames split anywhere come out whole", () => {
  const payloads = [1, 2, 300, 5, 65535, 7].map((n, i) => new Uint8Array(n).fill(i + 1));
  const stream = concat(...payloads.map(encodeFrame));
  for (const step of [1, 2, 3, 7, 1000, 70000]) {
    const dec = new FrameDecoder();
    const got: Uint8Array[] = [];
    for (let at = 0; at < stream.length; at += step) got.push(...dec.feed(stream.slice(at, at + step)));
    assert.deepEqual(got, payloads, `step ${step}`);
    assert.equal(dec.buffered, 0);
  }
});

test("partial frames are buffered, at most one", () => {
  const dec = new FrameDecoder();
  const big = encodeFrame(new Uint8Array(MAX_FRAME_SIZE).fill(0xaa));
  assert.deepEqual(dec.feed(big.slice(0, 1)), []);
  assert.equal(dec.buffered, 1);
  assert.deepEqual(dec.feed(big.slice(1, -1)), []);
  assert.equal(dec.buffered, LENGTH_PREFIX + MAX_FRAME_SIZE - 1);
  assert.equal(dec.feed(concat(big.slice(-1), big)).length, 2);
  assert.equal(dec.buffered, 0);
});

test("an empty frame breaks the stream for good", () => {
  const dec = new FrameDecoder();
  assert.throws(() => dec.feed(concat(encodeFrame(new Uint8Array([1])), new Uint8Array([0, 0]))), (e) => e instanceof FramingError && /empty frame/.test(e.message));
  assert.throws(() => dec.feed(encodeFrame(new Uint8Array([1]))), /broken after a framing error/);
});
