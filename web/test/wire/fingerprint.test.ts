import { test } from "node:test";
import assert from "node:assert/strict";
import { blake2s } from "@noble/hashes/blake2.js";
import { toHex } from "../../src/wire/bytes.ts";
import { KeyPinError } from "../../src/wire/errors.ts";
import { checkPinnedKey, fingerprint, formatFingerprint } from "../../src/wire/fingerprint.ts";

test("display form of PROTOCOL.md 2.4", () => {
  const fp = Uint8Array.from({ length: 16 }, (_, i) => i);
  assert.equal(formatFingerprint(fp), "0001:0203:0405:0607:0809:0a0b:0c0d:0e0f");
});

test("fingerprint is BLAKE2s-256 of the key, first 16 bytes, and pins", () => {
  const key = new Uint8Array(32).fill(9);
  assert.equal(toHex(fingerprint(key)), toHex(blake2s(key)).slice(0, 32));
  checkPinnedKey(key, fingerprint(key));
  assert.throws(
    () => checkPinnedKey(new Uint8Array(32), fingerprint(key)),
    (e) => e instanceof KeyPinError && e.message.startsWith("WARNING: the server's key does not match the invite code (expected "),
  );
});
