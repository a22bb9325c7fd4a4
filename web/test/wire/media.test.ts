import { after, test } from "node:test";
import { PythonPeer } from "../python.ts";
import { fingerprint, formatFingerprint } from "../../src/wire/fingerprint.ts";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../../src/wire/bytes.ts";
import { LocalProtocolError, PacketError } from "../../src/wire/errors.ts";
import {
  HopOpener,
  HopSealer,
  MAX_COUNTER,
  MAX_DATAGRAM,
  MAX_PAYLOAD,
  PacketType,
  clientHop,
  deriveMediaKeys,
  parseHeader,
  peekSessionId,
  serializeHeader,
} from "../../src/wire/media.ts";

const secret = Uint8Array.from({ length: 32 }, (_, i) => i);
const frame = fromHex("950102404cf0f4e569dd27b6912f3e355f48564bbfde35999c80988a95");
const datagram = fromHex(
  "c101b2175c320000000000000005" + "89a48416a7175dbd629a456a16dbb90a31c4d2021a2b16e4d1eb136400" + "ae612ecda5af3bb5a080cc98bf486a00",
);

test("media keys of PROTOCOL.md 4", () => {
  const keys = deriveMediaKeys(secret);
  assert.equal(toHex(keys.clientToServer), "b1502048d12c4c8630f11836e70aebfa4b2d4f12cefce3e0d9379c9a99a853c7");
  assert.equal(toHex(keys.serverToClient), "e0d0225cf82cf735d6d7eebe535621284fe8a962fa278586862fe9b4ddf101af");
  assert.throws(() => deriveMediaKeys(new Uint8Array(31)), /media secret must be 32 bytes/);
});

test("header of PROTOCOL.md 5.3", () => {
  const h = serializeHeader({ type: PacketType.VOICE, sessionId: 0x01020304, counter: 5n });
  assert.equal(toHex(h), "c101010203040000000000000005");
  assert.deepEqual(parseHeader(h), { type: 1, sessionId: 0x01020304, counter: 5n });
  assert.throws(() => serializeHeader({ type: PacketType.VOICE, sessionId: 2 ** 32, counter: 0n }), LocalProtocolError);
  assert.throws(() => serializeHeader({ type: PacketType.VOICE, sessionId: 1, counter: 2n ** 64n }), LocalProtocolError);
});

test("the worked datagram of PROTOCOL.md 5.3, sealed and opened", () => {
  const keys = deriveMediaKeys(secret);
  const sealer = new HopSealer(keys.clientToServer, 0xb2175c32);
  for (let i = 0; i < 5; i++) sealer.seal(PacketType.KEEPALIVE, new Uint8Array(8));
  assert.equal(sealer.counter, 5n);
  assert.equal(toHex(sealer.seal(PacketType.VOICE, frame)), toHex(datagram));
  const opener = new HopOpener(keys.clientToServer, 0xb2175c32);
  const opened = opener.open(datagram);
  assert.deepEqual(opened.header, { type: PacketType.VOICE, sessionId: 0xb2175c32, counter: 5n });
  assert.deepEqual(opened.payload, frame);
  assert.equal(opener.highest, 5n);
  assert.throws(() => opener.open(datagram), (e) => e instanceof PacketError && e.message === "replayed");
  assert.equal(peekSessionId(datagram), 0xb2175c32);
});

test("hostile datagrams: each check in order, none moves the window", () => {
  const { sealer, opener } = clientHop(secret, 7);
  const mine = new HopSealer(deriveMediaKeys(secret).serverToClient, 7);
  const good = mine.seal(PacketType.KEEPALIVE_ACK, new Uint8Array([1, 2, 3]));
  const err = (data: Uint8Array, message: string) =>
    assert.throws(() => opener.open(data), (e) => e instanceof PacketError && e.message === message);
  for (let n = 0; n < 30; n++) err(good.slice(0, n), "datagram too short");
  err(new Uint8Array(MAX_DATAGRAM + 1).fill(0xc1), "datagram too long");
  const bad = (at: number, value: number) => {
    const d = Uint8Array.from(good);
    d[at] = value;
    return d;
  };
  err(bad(0, 0xc2), "bad magic byte");
  err(bad(1, 0), "unknown packet type 0");
  err(bad(1, 7), "unknown packet type 7");
  err(bad(5, 8), "wrong session id");
  err(bad(13, 9), "authentication failed"); // the counter is authenticated too
  err(bad(good.length - 1, good[good.length - 1]! ^ 1), "authentication failed");
  err(sealer.seal(PacketType.VOICE, new Uint8Array(1)), "authentication failed"); // the other direction's key
  assert.equal(opener.highest, -1n);
  assert.deepEqual(opener.open(good).payload, new Uint8Array([1, 2, 3]));
  assert.throws(() => peekSessionId(new Uint8Array(29).fill(0xc1)), /too short/);
  assert.throws(() => peekSessionId(new Uint8Array(30)), /bad magic/);
});

test("sealer limits", () => {
  const sealer = new HopSealer(new Uint8Array(32), 1, MAX_COUNTER);
  assert.equal(sealer.seal(PacketType.VOICE, new Uint8Array(MAX_PAYLOAD)).length, MAX_DATAGRAM);
  assert.throws(() => sealer.seal(PacketType.VOICE, new Uint8Array(0)), /media counter exhausted/);
  assert.throws(() => new HopSealer(new Uint8Array(32), 1).seal(PacketType.VOICE, new Uint8Array(MAX_PAYLOAD + 1)), /exceeds 1370/);
  assert.throws(() => new HopSealer(new Uint8Array(31), 1), /media key must be 32 bytes/);
  assert.throws(() => new HopOpener(new Uint8Array(32), -1), /session id out of range/);
});

// -- against Python -------------------------------------------------------------------


const py = new PythonPeer("interop_wire.py");
after(() => py.close());

test("media keys and fingerprints agree with Python", async () => {
  for (const fill of [0, 1, 0xff]) {
    const s = new Uint8Array(32).fill(fill);
    const reply = await py.call({ op: "media_keys", secret: toHex(s) });
    const keys = deriveMediaKeys(s);
    assert.deepEqual([toHex(keys.clientToServer), toHex(keys.serverToClient)], [reply.c2s, reply.s2c]);
    const fp = await py.call({ op: "fingerprint", public: toHex(s) });
    assert.deepEqual([toHex(fingerprint(s)), formatFingerprint(fingerprint(s))], [fp.fingerprint, fp.text]);
  }
});

test("hop packets sealed by Python open in JS, and the other way, with the same verdicts", async () => {
  const key = deriveMediaKeys(secret).serverToClient;
  const sessionId = 0xdeadbeef;
  const packets = [
    { type: PacketType.VOICE, payload: toHex(new Uint8Array(1204).fill(1)) },
    { type: PacketType.KEEPALIVE_ACK, payload: "0000000000000001" },
    { type: PacketType.VOICE, payload: "" },
    { type: PacketType.VOICE_EXCEPT, payload: "01a1a1a1a1ff" },
  ];
  const sealed = (await py.call({ op: "hop_seal", key: toHex(key), session_id: sessionId, counter: 2 ** 40, packets })).datagrams as string[];
  const opener = new HopOpener(key, sessionId);
  for (const [i, d] of sealed.entries()) {
    const { header, payload } = opener.open(fromHex(d));
    assert.deepEqual([header.type, header.counter, toHex(payload)], [packets[i]!.type, 2n ** 40n + BigInt(i), packets[i]!.payload]);
  }
  // JS seals, with a replay, reordering, a forgery and a cut one; Python and JS judge alike.
  const sealer = new HopSealer(key, sessionId, 100n);
  const mine = packets.map((p) => sealer.seal(p.type, fromHex(p.payload)));
  const forged = Uint8Array.from(mine[1]!);
  forged[20]! ^= 0x80;
  const stream = [mine[1]!, mine[0]!, mine[1]!, forged, mine[2]!.slice(0, 29), mine[3]!, mine[2]!];
  const verdicts = (await py.call({ op: "hop_open", key: toHex(key), session_id: sessionId, datagrams: stream.map(toHex) })).results as Array<Record<string, unknown>>;
  const js = new HopOpener(key, sessionId);
  for (const [i, d] of stream.entries()) {
    const theirs = verdicts[i]!;
    try {
      const { header, payload } = js.open(d);
      assert.deepEqual([header.type, String(header.counter), toHex(payload)], [theirs.type, theirs.counter, theirs.payload], `datagram ${i}`);
    } catch (e) {
      assert.ok(e instanceof PacketError, `datagram ${i}`);
      assert.equal(e.message, theirs.error, `datagram ${i}`);
    }
  }
  assert.deepEqual(verdicts.map((v) => v.error ?? "ok"), ["ok", "ok", "replayed", "authentication failed", "datagram too short", "ok", "ok"]);
});
