import { test } from "node:test";
import assert from "node:assert/strict";
import { blake2s } from "@noble/hashes/blake2.js";

// BLAKE2s-256("abc") from RFC 7693 appendix B: the toolchain and noble load.
test("noble blake2s matches RFC 7693", () => {
  const hex = Buffer.from(blake2s(new TextEncoder().encode("abc"))).toString("hex");
  assert.equal(hex, "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
});
