import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex, utf8 } from "../../src/wire/bytes.ts";
import { LocalProtocolError, PeerAuthError, PeerError } from "../../src/wire/errors.ts";
import {
  MAX_HELLO,
  PairChannel,
  PeerMessage,
  PeerVerified,
  deriveJoinToken,
  deriveRoomPsk,
  pairPrologue,
} from "../../src/wire/pairwise.ts";
import { identityPublicKey } from "../../src/wire/identity.ts";

const ROOM = fromHex("0123456789abcdef");
const PSK = deriveRoomPsk(new Uint8Array(16), ROOM);
const BOB = 0xb2175c32;
const ALICE = 0xa1a1a1a1;
const BOB_KEY = new Uint8Array(32).fill(2);
const ALICE_KEY = new Uint8Array(32).fill(1);
const BOB_HELLO = fromHex("82a475736572a3626f62a46e69636ba3626f62");
const ALICE_HELLO = utf8.encode("alice hello");

function pair(psk2 = PSK): [PairChannel, PairChannel] {
  const prologue = pairPrologue(ROOM, BOB, ALICE);
  const i = new PairChannel({ initiator: true, identityPrivate: BOB_KEY, psk: PSK, prologue, hello: BOB_HELLO, ephemeralPrivate: new Uint8Array(32).fill(3) });
  const r = new PairChannel({ initiator: false, identityPrivate: ALICE_KEY, psk: psk2, prologue, hello: ALICE_HELLO });
  return [i, r];
}

function one(ch: PairChannel): Uint8Array {
  const out = ch.messagesToSend();
  assert.equal(out.length, 1);
  return out[0] as Uint8Array;
}

test("PROTOCOL 8.10: PSK, prologue, HS1", () => {
  assert.equal(toHex(PSK), "361ef631a39069a8804bbfb0d1d0fdd6db805b2511de0f5b3425b7729b374857");
  assert.equal(toHex(pairPrologue(ROOM, BOB, ALICE)), "62616e676f722f31207061697220" + "0123456789abcdef" + "b2175c32a1a1a1a1");
  const [i] = pair();
  i.start();
  assert.equal(
    toHex(one(i)),
    "01" + "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22" + "fb99b1bd6d77f1c07af5907bd2b59356",
  );
  assert.throws(() => pairPrologue(ROOM, 2 ** 32, 0), LocalProtocolError);
  assert.throws(() => deriveRoomPsk(new Uint8Array(0), ROOM), LocalProtocolError);
});

test("PROTOCOL 3.15: the join token, as Python derives it", () => {
  // Made with src/bangor/wire/pairwise.py:
  //   derive_join_token(bytes(range(16)), bytes.fromhex("0123456789abcdef")).hex()
  //   derive_join_token(bytes([0xa5] * 16), bytes(8)).hex()
  assert.equal(
    toHex(deriveJoinToken(Uint8Array.from({ length: 16 }, (_, i) => i), ROOM)),
    "b9bb1999617ef6661dc2d073b1e0d8c6ed25fcfb50bef990ad0b19c5913fc7f3",
  );
  assert.equal(
    toHex(deriveJoinToken(new Uint8Array(16).fill(0xa5), new Uint8Array(8))),
    "582f2f3942e0a129f2d3f56aed8e1c3ed27af2cc018e437e0a0125bb3b7f5b9c",
  );
  // Under its own label: never the PSK of the same secret.
  assert.notEqual(toHex(deriveJoinToken(new Uint8Array(16), ROOM)), toHex(PSK));
  assert.throws(() => deriveJoinToken(new Uint8Array(0), ROOM), LocalProtocolError);
});

test("handshake, verification both ways, DATA both ways, replay refused", () => {
  const [i, r] = pair();
  i.start();
  assert.deepEqual(r.receive(one(i)), []);
  const hs2 = one(r);
  assert.equal(hs2.length, 97);
  assert.deepEqual(i.receive(hs2), []);
  const hs3 = one(i);
  assert.equal(hs3.length, 116);
  assert.ok(!i.established);
  const [verified] = r.receive(hs3);
  assert.ok(verified instanceof PeerVerified);
  assert.deepEqual(verified.remoteIdentity, identityPublicKey(BOB_KEY));
  assert.deepEqual(verified.hello, BOB_HELLO);
  assert.ok(r.established);
  const data0 = one(r);
  assert.equal(toHex(data0.subarray(0, 9)), "040000000000000000");
  const [v2] = i.receive(data0);
  assert.ok(v2 instanceof PeerVerified);
  assert.deepEqual(v2.remoteIdentity, identityPublicKey(ALICE_KEY));
  assert.deepEqual(v2.hello, ALICE_HELLO);
  assert.deepEqual(i.remoteIdentity, identityPublicKey(ALICE_KEY));
  i.send(utf8.encode("to alice"));
  const m = one(i);
  const [pm] = r.receive(m);
  assert.ok(pm instanceof PeerMessage);
  assert.equal(utf8.decode(pm.payload), "to alice");
  assert.throws(() => r.receive(m), /replayed DATA message/);
  r.send(utf8.encode("to bob"));
  assert.equal(utf8.decode((i.receive(one(r))[0] as PeerMessage).payload), "to bob");
  // Garbage changes nothing.
  for (const bad of [new Uint8Array(0), new Uint8Array([9]), new Uint8Array(4097), new Uint8Array([1]), new Uint8Array([5]), new Uint8Array([5, 0]), new Uint8Array([4, 0])]) {
    assert.throws(() => r.receive(bad), PeerError);
  }
  const tampered = Uint8Array.from(m);
  tampered[12] = (tampered[12] as number) ^ 1;
  assert.throws(() => r.receive(tampered), /DATA failed authentication/);
  i.send(utf8.encode("still works"));
  assert.equal(utf8.decode((r.receive(one(i))[0] as PeerMessage).payload), "still works");
});

test("wrong PSK: the responder sends REJECT, both sides fail", () => {
  const [i, r] = pair(deriveRoomPsk(new Uint8Array(16).fill(1), ROOM));
  i.start();
  r.receive(one(i));
  i.receive(one(r));
  assert.throws(() => r.receive(one(i)), (e: unknown) => e instanceof PeerAuthError && /could not prove the room secret/.test(e.message));
  assert.ok(r.failed);
  const reject = one(r);
  assert.deepEqual(reject, new Uint8Array([5]));
  assert.throws(() => i.receive(reject), /different room secret/);
  assert.ok(i.failed);
  assert.throws(() => i.receive(reject), /channel failed/);
});

test("truncations are refused without failing; a forged DATA before the hello too", () => {
  const [i, r] = pair();
  i.start();
  const hs1 = one(i);
  for (let n = 1; n < hs1.length; n++) {
    if (n < 49) assert.throws(() => r.receive(hs1.subarray(0, n)), /truncated HS1|empty/);
  }
  assert.ok(!r.failed);
  r.receive(hs1);
  const hs2 = one(r);
  for (let n = 1; n < 97; n++) assert.throws(() => i.receive(hs2.subarray(0, n)), /truncated HS2/);
  assert.ok(!i.failed);
  assert.throws(() => i.receive(new Uint8Array([4, ...new Uint8Array(30)])), /DATA before the handshake completed/);
  i.receive(hs2);
  const hs3 = one(i);
  for (let n = 1; n < 65; n++) assert.throws(() => r.receive(hs3.subarray(0, n)), /truncated HS3/);
  r.receive(hs3);
  const hello = one(r);
  r.send(utf8.encode("key"));
  const data1 = one(r);
  assert.throws(() => i.receive(data1), /DATA before the member's hello/);
  assert.ok(i.receive(hello)[0] instanceof PeerVerified);
  assert.ok(i.receive(data1)[0] instanceof PeerMessage);
});

test("a tampered HS2 fails the channel; wrong state and local misuse", () => {
  const [i, r] = pair();
  assert.throws(() => i.receive(new Uint8Array([1])), LocalProtocolError);
  i.start();
  assert.throws(() => i.start(), LocalProtocolError);
  r.receive(one(i));
  const hs2 = one(r);
  assert.throws(() => r.receive(hs2), /unexpected HS2/);
  const bad = Uint8Array.from(hs2);
  bad[50] = (bad[50] as number) ^ 1;
  assert.throws(() => i.receive(bad), /HS2 did not verify/);
  assert.ok(i.failed);
  assert.throws(() => r.send(new Uint8Array(1)), LocalProtocolError);
  assert.throws(
    () => new PairChannel({ initiator: true, identityPrivate: BOB_KEY, psk: PSK, prologue: new Uint8Array(0), hello: new Uint8Array(MAX_HELLO + 1) }),
    LocalProtocolError,
  );
});

test("a forged HS1 (all-zero e, bad tag) fails the responder's channel", () => {
  const [, r] = pair();
  const forged = new Uint8Array(49);
  forged[0] = 1;
  assert.throws(() => r.receive(forged), /HS1 did not verify/);
  assert.ok(r.failed);
});
