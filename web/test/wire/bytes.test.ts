import { test } from "node:test";
import assert from "node:assert/strict";
import { concat, equal, fromHex, readU16, readU32, readU64, toHex, u16, u32, u64, utf8 } from "../../src/wire/bytes.ts";

test("big-endian integers round-trip", () => {
  assert.equal(toHex(u16(0x0102)), "0102");
  assert.equal(toHex(u32(0xb2175c32)), "b2175c32");
  assert.equal(toHex(u64(5n)), "0000000000000005");
  const b = concat(u16(0xfffe), u32(0xdeadbeef), u64(2n ** 64n - 2n));
  assert.equal(readU16(b, 0), 0xfffe);
  assert.equal(readU32(b, 2), 0xdeadbeef);
  assert.equal(readU64(b, 6), 2n ** 64n - 2n);
});

test("equal, hex and strict utf-8", () => {
  assert.ok(equal(fromHex("00ff"), new Uint8Array([0, 255])));
  assert.ok(!equal(fromHex("00ff"), fromHex("00fe")));
  assert.ok(!equal(fromHex("00"), fromHex("0000")));
  assert.throws(() => fromHex("0g"));
  assert.throws(() => utf8.decode(new Uint8Array([0xff])));
});
