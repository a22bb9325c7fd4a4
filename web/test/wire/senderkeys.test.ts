import { test } from "node:test";
import assert from "node:assert/strict";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, toHex, utf8 } from "../../src/wire/bytes.ts";
import { LocalProtocolError, PacketError, PeerError } from "../../src/wire/errors.ts";
import {
  Inbound,
  MAX_STEP,
  Outbound,
  PURPOSE_CHAT,
  PURPOSE_VOICE,
  SenderKey,
  freshSenderKey,
  type InboundSettings,
  type Purpose,
} from "../../src/wire/senderkeys.ts";
import { SFrameKey, makeKid, parseHeader } from "../../src/wire/sframe.ts";

const GRACE = 2.0;
const TIMEOUT = 5.0;
const SETTINGS: InboundSettings = {
  grace: GRACE,
  maxRatchetAhead: 32,
  maxPending: { voice: 50, chat: 64 },
  pendingTimeout: TIMEOUT,
  maxGenerationsAhead: 4,
};
const META: Record<Purpose, Uint8Array> = { voice: utf8.encode("room 7 / voice / member 3"), chat: utf8.encode("room 7 / chat / member 3") };
const metadataFor = (p: Purpose): Uint8Array => META[p];
const PAYLOAD = Uint8Array.from({ length: 90 }, (_, i) => i);
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);

function tokens(seed: number): (n: number) => Uint8Array {
  let i = 0;
  return (n) => sha256(utf8.encode(`${seed}/${i++}`)).subarray(0, n);
}

async function setup(overrides: Partial<InboundSettings> = {}): Promise<[Outbound, Inbound]> {
  const out = new Outbound(new SenderKey(0, 0, KEY));
  const inb = new Inbound({ ...SETTINGS, ...overrides });
  assert.deepEqual(await inb.install(out.key, metadataFor, 0), []);
  return [out, inb];
}

const seal = (out: Outbound, data: Uint8Array = PAYLOAD, purpose: Purpose = PURPOSE_VOICE): Promise<Uint8Array> =>
  out.seal(purpose, META[purpose], data);
const open = (inb: Inbound, frame: Uint8Array, now = 0, purpose: Purpose = PURPOSE_VOICE): Promise<Uint8Array | null> =>
  inb.open(purpose, META[purpose], frame, now);

test("sender key: KID, order, ratchet, purpose keys as PROTOCOL 8.4", () => {
  const k = new SenderKey(257, 2, KEY);
  assert.equal(k.kid, 0x0102n);
  assert.ok(k.compare(new SenderKey(257, 3, KEY)) < 0);
  assert.ok(k.compare(new SenderKey(256, 200, KEY)) > 0);
  assert.equal(toHex(k.ratcheted().baseKey), "1e31370b2f041d5c893dbba4b27bc3e67956a51ae6221a427445cab04059fd65");
  assert.equal(toHex(k.purposeKey("voice")), "3668bca1774b1adf1c7b7e21256ad87ae79dc67194ba5ee8eed5d920741f2d71");
  assert.equal(toHex(k.purposeKey("chat")), "49f87757b2b022a307a4f37a9ad74fc79454b677a49db64317aa37c2f6616362");
  assert.ok(!String(k).includes("0001"));
  assert.throws(() => new SenderKey(2 ** 32, 0, KEY), LocalProtocolError);
  assert.throws(() => new SenderKey(0, 256, KEY), LocalProtocolError);
  assert.throws(() => new SenderKey(0, 0, KEY.subarray(1)), LocalProtocolError);
  assert.throws(() => new SenderKey(0, MAX_STEP, KEY).ratcheted(), /rotate/);
  assert.equal(freshSenderKey(3, tokens(1)).generation, 3);
});

test("join: the receiver derives forward; replays and old keys", async () => {
  const [out, inb] = await setup();
  const before = await seal(out);
  assert.deepEqual(await open(inb, await seal(out)), PAYLOAD);
  const oldKey = out.key;
  assert.equal(out.ratchet(), false);
  const after = await seal(out);
  assert.equal(parseHeader(after).kid, parseHeader(before).kid + 1n);
  assert.deepEqual(await open(inb, after, 0.1), PAYLOAD);
  assert.equal(inb.current?.step, 1);
  assert.deepEqual(await open(inb, await seal(out, utf8.encode("hi"), PURPOSE_CHAT), 0.1, PURPOSE_CHAT), utf8.encode("hi"));
  assert.deepEqual(await open(inb, before, 0.1 + GRACE - 0.01), PAYLOAD);
  await assert.rejects(open(inb, after, 0.2), /replayed/);
  assert.notEqual(oldKey, out.key);
});

test("a newcomer cannot open frames from before the join", async () => {
  const [out, member] = await setup();
  const earlier = [await seal(out), await seal(out)];
  out.ratchet();
  const newcomer = new Inbound(SETTINGS);
  await newcomer.install(out.key, metadataFor, 0);
  for (const f of earlier) await assert.rejects(open(newcomer, f), PacketError);
  const later = await seal(out);
  assert.deepEqual(await open(newcomer, later), PAYLOAD);
  assert.deepEqual(await open(member, later), PAYLOAD);
});

test("forged ahead KIDs change nothing; too far ahead is unknown", async () => {
  const [out, inb] = await setup();
  const start = inb.current;
  for (const ahead of [1, 5, 32]) {
    const forged = concat(new SFrameKey(makeKid(0n, 0, ahead), new Uint8Array(32)).header(0n), new Uint8Array(40));
    await assert.rejects(open(inb, forged), /authentication failed/);
  }
  for (const ahead of [33, 255]) {
    const forged = concat(new SFrameKey(makeKid(0n, 0, ahead), new Uint8Array(32)).header(0n), new Uint8Array(40));
    await assert.rejects(open(inb, forged), /unknown SFrame key id/);
  }
  await assert.rejects(open(inb, concat(new SFrameKey(1n << 16n, new Uint8Array(32)).header(0n), new Uint8Array(40))), /unknown SFrame key id/);
  assert.equal(inb.current, start);
  assert.equal(inb.getTimer(), null);
  for (let i = 0; i < 5; i++) out.ratchet();
  assert.deepEqual(await open(inb, await seal(out, utf8.encode("real"))), utf8.encode("real"));
  assert.equal(inb.current?.step, 5);
});

test("leave: frames of the next generation are held, released in order at install", async () => {
  const [out, inb] = await setup();
  const late = await seal(out, utf8.encode("late"));
  out.rotate(tokens(1));
  const frames: [Purpose, Uint8Array][] = [
    [PURPOSE_VOICE, await seal(out, utf8.encode("v0"))],
    [PURPOSE_CHAT, await seal(out, utf8.encode("c0"), PURPOSE_CHAT)],
    [PURPOSE_VOICE, await seal(out, utf8.encode("v1"))],
  ];
  for (const [p, f] of frames) assert.equal(await open(inb, f, 0.1, p), null);
  assert.equal(inb.getTimer(), 0.1 + TIMEOUT);
  const released = await inb.install(out.key, metadataFor, 0.3);
  assert.deepEqual(
    released.map((r) => [r.purpose, utf8.decode(r.plaintext)]),
    [["voice", "v0"], ["chat", "c0"], ["voice", "v1"]],
  );
  await assert.rejects(open(inb, (frames[0] as [Purpose, Uint8Array])[1], 0.3), /replayed/);
  assert.deepEqual(await open(inb, late, 0.3 + GRACE - 0.01), utf8.encode("late"));
  await assert.rejects(open(inb, late, 0.3 + GRACE), /unknown SFrame key id/);
  assert.deepEqual(await inb.install(out.key, metadataFor, 0.4), []);
});

test("held frames are bounded and expire", async () => {
  const [out, removed] = await setup();
  out.rotate(tokens(9));
  for (let i = 0; i < 60; i++) assert.equal(await open(removed, await seal(out), 0.01 * i), null);
  assert.equal(removed.dropped, 10);
  assert.equal(removed.expire(0.59 + TIMEOUT), 50);
  assert.equal(removed.getTimer(), null);
  const zero = new Inbound({ ...SETTINGS, maxPending: { voice: 0, chat: 0 } });
  assert.equal(await open(zero, await seal(out)), null);
  assert.equal(zero.dropped, 1);
});

test("install: duplicates, conflicts, stale keys, ratchet chains", async () => {
  const [out, inb] = await setup();
  assert.deepEqual(await inb.install(out.key, metadataFor, 0), []);
  assert.throws(() => inb.install(new SenderKey(0, 0, new Uint8Array(32)), metadataFor, 0), (e: unknown) => e instanceof PeerError && /differs/.test(e.message));
  out.ratchet();
  out.ratchet();
  await inb.install(out.key, metadataFor, 0);
  assert.equal(inb.current?.step, 2);
  assert.throws(() => inb.install(new SenderKey(0, 1, KEY), metadataFor, 0), /stale key: generation 0 step 1, have 0 2/);
  assert.throws(() => inb.install(new SenderKey(0, 5, KEY), metadataFor, 0), /does not follow from step 2/);
  assert.equal(inb.current?.step, 2);
  await inb.install(new SenderKey(1, 0, new Uint8Array(32)), metadataFor, 0);
  assert.equal(inb.current?.generation, 1);
});

test("truncated and bit-flipped frames never open", async () => {
  const [out, inb] = await setup();
  const frame = await seal(out, utf8.encode("x"));
  for (let n = 0; n < frame.length; n++) await assert.rejects(open(inb, frame.subarray(0, n)), PacketError);
  for (let i = 0; i < frame.length; i++) {
    const bad = Uint8Array.from(frame);
    bad[i] = (bad[i] as number) ^ 0x01;
    const r = await open(inb, bad).then((v) => v, (e: unknown) => e);
    assert.ok(r === null || r instanceof PacketError, `byte ${i}`);
  }
  assert.deepEqual(await open(inb, frame), utf8.encode("x"));
});

test("step limit rotates; settings are checked", () => {
  const out = new Outbound(new SenderKey(0, MAX_STEP, KEY));
  assert.equal(out.ratchet(tokens(3)), true);
  assert.equal(out.key.generation, 1);
  assert.equal(out.key.step, 0);
  assert.throws(() => new Outbound(new SenderKey(2 ** 32 - 1, 0, KEY)).rotate(), /exhausted/);
  assert.throws(() => new Inbound({ ...SETTINGS, maxGenerationsAhead: 128 }), LocalProtocolError);
  assert.throws(() => new Inbound({ ...SETTINGS, grace: Number.NaN }), LocalProtocolError);
});

test("review: a held frame is dropped when getTimer() says, not one rounding error later", async () => {
  // 48312.06397341265 + 0.1 rounds up, so `now - arrived` at that time is below 0.1: a
  // test of the form "now - arrived >= timeout" left the frame, and getTimer() kept
  // returning a time already past (a timer that fires again and again at the same now).
  const inb = new Inbound({ ...SETTINGS, pendingTimeout: 0.1 });
  const arrived = 48312.06397341265;
  const frame = concat(new SFrameKey(makeKid(0n, 0, 0), KEY).header(0n), new Uint8Array(40));
  assert.equal(await open(inb, frame, arrived), null);
  const due = inb.getTimer() as number;
  assert.equal(due, arrived + 0.1);
  assert.equal(inb.expire(due), 1);
  assert.equal(inb.getTimer(), null);
  assert.equal(inb.dropped, 1);
});
