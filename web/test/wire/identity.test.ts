import { test } from "node:test";
import assert from "node:assert/strict";
import { toHex } from "../../src/wire/bytes.ts";
import { LocalProtocolError } from "../../src/wire/errors.ts";
import {
  generateIdentityKey,
  identityFingerprint,
  identityPublicKey,
  safetyHalf,
  safetyNumber,
} from "../../src/wire/identity.ts";

const ONE = new Uint8Array(32).fill(1);
const TWO = new Uint8Array(32).fill(2);

test("PROTOCOL 8.8 example: public keys, halves, safety number, fingerprint", () => {
  const a = identityPublicKey(ONE);
  const b = identityPublicKey(TWO);
  assert.equal(toHex(a), "a4e09292b651c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209");
  assert.equal(toHex(b), "ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59");
  assert.equal(safetyHalf(a), "47907 81129 20738 21688");
  assert.equal(safetyHalf(b), "93957 68620 88412 95246");
  const expected = "47907 81129 20738 21688 93957 68620 88412 95246";
  assert.equal(safetyNumber(a, b), expected);
  assert.equal(safetyNumber(b, a), expected);
  assert.equal(identityFingerprint(a), "a22b:afb5:23d0:7ebd:7617:6f4b:e3b4:e980");
});

test("generated keys and bad lengths", () => {
  const k = generateIdentityKey();
  assert.equal(k.privateKey.length, 32);
  assert.deepEqual(k.publicKey, identityPublicKey(k.privateKey));
  assert.match(safetyNumber(k.publicKey, identityPublicKey(ONE)), /^(\d{5} ){7}\d{5}$/);
  assert.throws(() => safetyNumber(new Uint8Array(31), k.publicKey), LocalProtocolError);
  assert.throws(() => identityFingerprint(new Uint8Array(33)), LocalProtocolError);
  assert.throws(() => identityPublicKey(new Uint8Array(0)), LocalProtocolError);
});
