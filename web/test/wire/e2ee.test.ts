import { test } from "node:test";
import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import { fromHex, toHex, utf8 } from "../../src/wire/bytes.ts";
import { LocalProtocolError, PacketError, PeerError } from "../../src/wire/errors.ts";
import {
  RoomCrypto,
  decodeChat,
  decodeHello,
  decodePayload,
  encodeChat,
  encodeHello,
  encodeKeyMessage,
  encodeReport,
  encodeSecret,
  type E2EEEvent,
} from "../../src/wire/e2ee.ts";
import { safetyNumber } from "../../src/wire/identity.ts";
import { MessageKind, deriveJoinToken } from "../../src/wire/pairwise.ts";
import { SenderKey } from "../../src/wire/senderkeys.ts";

const ROOM = fromHex("0123456789abcdef");
const SECRET = new Uint8Array(16).fill(7);

class Room {
  now = 0;
  readonly members = new Map<number, RoomCrypto>();
  readonly events = new Map<number, E2EEEvent[]>();
  readonly wire: [number, number, Uint8Array][] = [];
  tamper: ((src: number, to: number, data: Uint8Array) => Uint8Array[]) | null = null;

  async join(sessionId: number, user: string, opts: { secret?: Uint8Array; announcedAs?: string; pump?: boolean } = {}): Promise<RoomCrypto> {
    const crypto = new RoomCrypto({
      roomId: ROOM,
      secret: opts.secret ?? SECRET,
      sessionId,
      user,
      nick: user,
      identityPrivate: globalThis.crypto.getRandomValues(new Uint8Array(32)),
    });
    const name = opts.announcedAs ?? user;
    for (const other of this.members.values()) other.memberJoined(sessionId, name, this.now);
    crypto.start([...this.members].map(([sid, m]) => [sid, m.user] as const), this.now);
    this.members.set(sessionId, crypto);
    this.events.set(sessionId, []);
    if (opts.pump ?? true) await this.pump();
    return crypto;
  }

  async leave(sessionId: number): Promise<void> {
    this.members.delete(sessionId);
    for (const other of this.members.values()) other.memberLeft(sessionId, this.now);
    await this.pump();
  }

  collect(): void {
    for (const [sid, crypto] of this.members) {
      for (let e = crypto.nextEvent(); e !== null; e = crypto.nextEvent()) this.events.get(sid)?.push(e);
    }
  }

  async pump(): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      const batch: [number, number, Uint8Array][] = [];
      for (const [sid, crypto] of this.members) for (const [to, data] of crypto.peerMessagesToSend()) batch.push([sid, to, data]);
      this.collect();
      if (!batch.length) return;
      for (const [sid, to, data] of batch) {
        this.wire.push([sid, to, data]);
        for (const out of this.tamper ? this.tamper(sid, to, data) : [data]) {
          await this.members.get(to)?.peerReceived(sid, out, this.now);
        }
      }
    }
    throw new Error("members never stopped talking");
  }

  of<T extends E2EEEvent["type"]>(sid: number, type: T): Extract<E2EEEvent, { type: T }>[] {
    this.collect();
    return (this.events.get(sid) ?? []).filter((e): e is Extract<E2EEEvent, { type: T }> => e.type === type);
  }

  async advance(seconds: number): Promise<void> {
    this.now += seconds;
    for (const c of this.members.values()) c.handleTimer(this.now);
    await this.pump();
  }
}

const bytes = (s: string): Uint8Array => utf8.encode(s);

test("members verify each other with matching safety numbers, hear each other, chat and report", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  const c = await room.join(3, "carol");
  for (const [x, y] of [[1, 2], [1, 3], [2, 1], [2, 3], [3, 1], [3, 2]] as const) {
    const v = room.of(x, "MemberVerified").find((e) => e.sessionId === y);
    assert.ok(v, `${x} verified ${y}`);
    const mine = room.members.get(x) as RoomCrypto;
    const theirs = room.members.get(y) as RoomCrypto;
    assert.deepEqual(v.identity, theirs.identityPublic);
    assert.equal(v.safetyNumber, safetyNumber(mine.identityPublic, theirs.identityPublic));
  }
  // Keys (0,2) for alice after two joins, as PROTOCOL 8.3.4's table.
  assert.equal(a.senderKey.step, 2);
  assert.equal(b.senderKey.step, 1);
  assert.equal(c.senderKey.step, 0);
  for (const [from, to] of [[a, b], [b, c], [c, a], [a, c]] as const) {
    const frame = await from.sealVoice(bytes(`voice from ${from.user}`), room.now);
    assert.equal(utf8.decode((await to.openVoice(from.sessionId, frame, room.now)) as Uint8Array), `voice from ${from.user}`);
  }
  const chat = await a.sealChat("hi all");
  await b.openChat(1, chat, room.now);
  await c.openChat(1, chat, room.now);
  assert.deepEqual(room.of(2, "ChatOpened").map((e) => [e.sessionId, e.text]), [[1, "hi all"]]);
  await b.openChat(1, chat, room.now); // a replay
  assert.match((room.of(2, "PeerProblem")[0] as { message: string }).message, /chat message dropped: replayed SFrame counter/);
  b.sendReport(1, 0.153);
  await room.pump();
  assert.deepEqual(room.of(1, "ReportReceived").map((e) => [e.sessionId, e.loss]), [[2, 0.153]]);
  // A newcomer cannot open what was said before; a leaver cannot open what is said after.
  const before = await a.sealVoice(bytes("before dave"));
  const d = await room.join(4, "dave");
  await assert.rejects(d.openVoice(1, before, room.now), PacketError);
  await room.leave(3);
  assert.equal(a.senderKey.generation, 1);
  const after = await a.sealVoice(bytes("after carol"));
  assert.equal(await c.openVoice(1, after, room.now), null); // held forever, never opened
  assert.equal(utf8.decode((await d.openVoice(1, after, room.now)) as Uint8Array), "after carol");
  assert.equal(utf8.decode((await b.openVoice(1, after, room.now)) as Uint8Array), "after carol");
});

test("audio and chat flow through a rekey: held, then released in order", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  await room.join(3, "carol");
  room.members.delete(3);
  b.memberLeft(3, room.now); // bob rotates; alice hears of it later
  const keyMessages = b.peerMessagesToSend();
  assert.equal(keyMessages.length, 1);
  const frame = await b.sealVoice(bytes("new gen"));
  const chat = await b.sealChat("during the rekey");
  assert.equal(await a.openVoice(2, frame, room.now), null);
  await a.openChat(2, chat, room.now);
  assert.equal(room.of(1, "ChatOpened").length, 0);
  for (const [to, data] of keyMessages) await room.members.get(to)?.peerReceived(2, data, room.now);
  assert.deepEqual(room.of(1, "VoiceReleased").map((e) => utf8.decode(e.payload)), ["new gen"]);
  assert.deepEqual(room.of(1, "ChatOpened").map((e) => e.text), ["during the rekey"]);
});

test("chat gaps are reported, older seq dropped", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  const m0 = await a.sealChat("zero");
  await a.sealChat("one (withheld)");
  const m2 = await a.sealChat("two");
  await b.openChat(1, m0, room.now);
  await b.openChat(1, m2, room.now);
  assert.deepEqual(room.of(2, "ChatGap").map((e) => [e.sessionId, e.missing]), [[1, 1n]]);
  assert.deepEqual(room.of(2, "ChatOpened").map((e) => e.text), ["zero", "two"]);
  assert.throws(() => a.sealChat(""), LocalProtocolError);
  assert.throws(() => a.sealChat("x".repeat(2001)), LocalProtocolError);
  await a.sealChat("😀".repeat(2000)); // 2000 characters, as Python counts them
});

test("a member without the secret is rejected and gets nothing; nobody hears it", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  await room.join(2, "bob");
  const m = await room.join(6, "mallory", { secret: new Uint8Array(16).fill(9) });
  for (const sid of [1, 2]) {
    assert.deepEqual(room.of(sid, "MemberRejected").map((e) => e.sessionId), [6]);
    assert.ok(!room.of(sid, "MemberVerified").some((e) => e.sessionId === 6));
  }
  assert.deepEqual(room.of(6, "MemberRejected").map((e) => e.reason).sort(), [
    "the member rejected our handshake: different room secret?",
    "the member rejected our handshake: different room secret?",
  ]);
  await assert.rejects(a.openVoice(6, await m.sealVoice(bytes("hello?")), room.now), PacketError);
  await assert.rejects(m.openVoice(1, await a.sealVoice(bytes("private")), room.now), PacketError);
  await room.advance(6);
  assert.equal(room.of(6, "VoiceReleased").length, 0);
});

test("a server lying about a name is caught; a silent member times out", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  await room.join(5, "mallory", { announcedAs: "bob" });
  const [rejected] = room.of(1, "MemberRejected");
  assert.equal(rejected?.reason, "says it is 'mallory' but the server says 'bob'");
  assert.ok(!a.verified(5));
  assert.match(room.of(5, "MemberRejected")[0]?.reason ?? "", /rejected our handshake/);
  a.memberJoined(9, "ghost", room.now);
  assert.equal(a.getTimer(), room.now + 10);
  await room.advance(10);
  assert.deepEqual(room.of(1, "MemberRejected").map((e) => e.reason).slice(-1), ["did not prove the room secret within 10 s"]);
});

test("garbage and truncations from members are only ever reported, and limited", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  const sent = room.wire.filter(([src, to]) => src === 2 && to === 1).map(([, , d]) => d);
  for (const msg of sent) {
    for (let n = 0; n < msg.length; n++) await a.peerReceived(2, msg.subarray(0, n), room.now);
    await a.peerReceived(2, msg, room.now);
  }
  for (let i = 0; i < 200; i++) {
    await a.peerReceived(2, globalThis.crypto.getRandomValues(new Uint8Array(i % 120)), room.now);
    await a.openChat(2, globalThis.crypto.getRandomValues(new Uint8Array(i % 60)), room.now);
    await a.openVoice(2, globalThis.crypto.getRandomValues(new Uint8Array(i % 60)), room.now).catch((e: unknown) => assert.ok(e instanceof PacketError));
    await a.peerReceived(77, new Uint8Array([MessageKind.DATA, ...new Uint8Array(40)]), room.now);
  }
  const problems = room.of(1, "PeerProblem");
  assert.equal(problems.length, 10); // 5 for bob, 5 for strangers
  assert.ok(a.verified(2));
  const frame = await b.sealVoice(bytes("still fine"));
  assert.equal(utf8.decode((await a.openVoice(2, frame, room.now)) as Uint8Array), "still fine");
  await room.advance(10);
  // (Random frames that look like a next generation are held, and their expiry may add a line.)
  const summaries = room.of(1, "PeerProblem").slice(10).filter((e) => /more problem\(s\) not shown/.test(e.message));
  assert.equal(summaries.length, 2);
  assert.ok(summaries.some((s) => s.user === "" && /^195 more problem\(s\) not shown: end-to-end message from someone not in the room \(x195\)$/.test(s.message)));
  assert.ok(summaries.some((s) => s.user === "bob"));
});

test("member messages: encodings as PROTOCOL 8.3 / 8.7, hostile decodes", () => {
  assert.equal(toHex(encodeHello({ user: "bob", nick: "bob" })), "82a475736572a3626f62a46e69636ba3626f62");
  const key = new SenderKey(1, 2, Uint8Array.from({ length: 32 }, (_, i) => i));
  assert.equal(
    toHex(encodeKeyMessage(key)),
    "84a174a36b6579aa67656e65726174696f6e01a47374657002a8626173655f6b6579c420" + toHex(key.baseKey),
  );
  assert.equal(toHex(encodeReport(153, 26)), "83a174a27272ad6c6f73735f7065726d696c6c65cc99ac62757273745f74656e7468731a");
  // An old peer's report (no burst_tenths) still decodes: the burst is null.
  assert.deepEqual(decodePayload(fromHex("82a174a27272ad6c6f73735f7065726d696c6c65cc99")), {
    t: "rr",
    lossPermille: 153,
    burstTenths: null,
  });
  assert.equal(toHex(encodeChat(3, "hi")), "82a373657103a474657874a26869");
  assert.deepEqual(decodeChat(encodeChat(3, "hi")), { seq: 3n, text: "hi" });
  const cand = decodePayload(encode({ t: "cand", key: new Uint8Array(32), candidates: [["host", "10.0.0.1", 5000]] }));
  assert.equal(cand.t, "cand");
  const bad: unknown[] = [
    { generation: 1, step: 2, base_key: new Uint8Array(32) }, // no tag
    { t: "zz" },
    { t: "rr", loss_permille: 1001 },
    { t: "rr", loss_permille: 1.5 },
    { t: "rr", loss_permille: true },
    { t: "key", generation: 1, step: 256, base_key: new Uint8Array(32) },
    { t: "key", generation: 2 ** 32, step: 0, base_key: new Uint8Array(32) },
    { t: "key", generation: 1, step: 2, base_key: "a".repeat(32) },
    { t: "key", generation: 1, step: 2, base_key: new Uint8Array(31) },
    { t: "cand", key: new Uint8Array(32), candidates: [["h", "a", 0]] },
    [1],
    "str",
  ];
  for (const b of bad) assert.throws(() => decodePayload(encode(b)), (e: unknown) => e instanceof PeerError && /^malformed member message: /.test(e.message));
  assert.throws(() => decodePayload(new Uint8Array([0xc1])), PeerError);
  assert.throws(() => decodeHello(new Uint8Array([...encodeHello({ user: "a", nick: "b" }), 0])), PeerError);
  assert.throws(() => decodeHello(encode({ user: "a".repeat(65), nick: "" })), /malformed member hello/);
  assert.throws(() => decodeChat(encode({ seq: -1, text: "a" })), /malformed chat message/);
  assert.throws(() => decodeChat(encode({ seq: 2n ** 63n, text: "a" }, { useBigInt64: true })), /malformed chat message/);
  assert.throws(() => decodeChat(encode({ seq: 1, text: "" })), /malformed chat message/);
  assert.equal(decodeChat(encode({ seq: 2n ** 63n - 1n, text: "a" }, { useBigInt64: true })).seq, 2n ** 63n - 1n);
});

test("review: voice released after its sender left is dropped (the key install awaited WebCrypto meanwhile)", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  await room.join(3, "carol");
  room.members.delete(3);
  b.memberLeft(3, room.now);
  const keyMessages = b.peerMessagesToSend();
  assert.equal(await a.openVoice(2, await b.sealVoice(bytes("new gen")), room.now), null);
  await a.openChat(2, await b.sealChat("said before leaving"), room.now);
  // member_left for bob is handled while alice's install of bob's key opens the held
  // frames: a VoiceReleased then would make the app a stream for a member who is gone.
  const inbound = (a as unknown as { members: Map<number, { inbound: { install: (...x: never[]) => unknown } }> }).members.get(2)?.inbound;
  assert.ok(inbound);
  const install = inbound.install.bind(inbound);
  inbound.install = (...args: never[]) => {
    const released = install(...args);
    a.memberLeft(2, room.now);
    return released;
  };
  for (const [to, data] of keyMessages) await room.members.get(to)?.peerReceived(2, data, room.now);
  assert.equal(room.of(1, "VoiceReleased").length, 0);
  assert.deepEqual(room.of(1, "ChatOpened").map((e) => e.text), ["said before leaving"]); // it was said in the room
});

test("review: values of unknown fields are skipped as msgspec skips them; member messages are msgspec's bytes", () => {
  const h = (x: string): Uint8Array => fromHex(x.replace(/ /g, ""));
  // {"user": "bob", "nick": "", "z": {1: 2}}: msgspec skips "z" (an int key deep inside is
  // no Struct key); the reader refused it, so a member's hello that Python takes failed.
  assert.deepEqual(decodeHello(h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a 81 01 02")), { user: "bob", nick: "" });
  // msgspec nests to Python's recursion limit (~1000), deeper than control messages may.
  assert.equal(decodeHello(h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a " + "91".repeat(600) + "c0")).user, "bob");
  assert.throws(() => decodeHello(h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a " + "91".repeat(1100) + "c0")), /nested too deeply/);
  // A top-level key must still be a str, as for a msgspec Struct.
  assert.throws(() => decodeHello(h("83 a4 75736572 a3 626f62 a4 6e69636b a0 01 02")), /malformed member hello/);
  // Bytes as msgspec writes them (from Python: e2ee._encoder.encode of each message).
  assert.equal(toHex(encodeHello({ user: "bob", nick: "Bob" })), "82a475736572a3626f62a46e69636ba3426f62");
  assert.equal(toHex(encodeReport(153, 26)), "83a174a27272ad6c6f73735f7065726d696c6c65cc99ac62757273745f74656e7468731a");
  assert.equal(toHex(encodeChat(70000, "hi")), "82a3736571ce00011170a474657874a26869");
  assert.equal(
    toHex(encodeKeyMessage(new SenderKey(300, 7, new Uint8Array(32)))),
    "84a174a36b6579aa67656e65726174696f6ecd012ca473746570" + "07a8626173655f6b6579c420" + "00".repeat(32),
  );
});

test("rotations come at most once per interval; a newcomer verified meanwhile gets the fresh key", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  await room.join(2, "bob");
  await room.join(3, "carol");
  await room.leave(2);
  assert.equal(a.senderKey.generation, 1);
  await room.leave(3);
  assert.equal(a.senderKey.generation, 1);
  assert.ok(a.rotationPending);
  const d = await room.join(4, "dave");
  assert.ok(a.verified(4));
  assert.deepEqual(room.of(4, "MemberVerified").map((e) => e.sessionId), [1]);
  const early = await a.sealVoice(bytes("x"));
  assert.equal(await d.openVoice(1, early, room.now), null); // dave has no key of alice yet
  await room.advance(1);
  assert.equal(a.senderKey.generation, 2);
  assert.ok(!a.rotationPending);
  assert.equal(utf8.decode((await d.openVoice(1, await a.sealVoice(bytes("fresh")), room.now)) as Uint8Array), "fresh");
});

const flipLast = (data: Uint8Array): Uint8Array => {
  const out = Uint8Array.from(data);
  out[out.length - 1] = (out[out.length - 1] as number) ^ 1;
  return out;
};

test("both sides starting the handshake still verifies (the lower id keeps the initiator role)", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob", { pump: false });
  a.start([[2, "bob"]], room.now); // a misbehaving server made alice think she is new
  await room.pump();
  assert.ok(a.verified(2) && b.verified(1));
  assert.equal(utf8.decode((await b.openVoice(1, await a.sealVoice(bytes("x")), room.now)) as Uint8Array), "x");
});

test("forged copies and replays of every pair message do not break the handshake", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  room.tamper = (_src, _to, data) => [data, flipLast(data), data];
  const b = await room.join(2, "bob");
  assert.ok(a.verified(2) && b.verified(1));
  assert.equal(room.of(1, "MemberRejected").length + room.of(2, "MemberRejected").length, 0);
  assert.ok(room.of(1, "PeerProblem").length && room.of(2, "PeerProblem").length);
  assert.equal(utf8.decode((await b.openVoice(1, await a.sealVoice(bytes("fine")), room.now)) as Uint8Array), "fine");
});

test("a replayed old key message and reordered rekeys change nothing", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  await room.join(3, "carol");
  await room.join(4, "dave");
  const firstKey = room.wire.filter(([src, to]) => src === 1 && to === 2).at(-1)?.[2] as Uint8Array;
  const held: Uint8Array[] = [];
  room.tamper = (src, to, data) => (src === 1 && to === 2 ? (held.push(data), []) : [data]);
  await room.leave(3);
  await room.advance(1);
  await room.leave(4);
  room.tamper = null;
  assert.equal(held.length, 2);
  for (const data of held.reverse()) await b.peerReceived(1, data, room.now); // generation 2 first
  await b.peerReceived(1, firstKey, room.now);
  const problems = room.of(2, "PeerProblem").map((e) => e.message);
  assert.ok(problems.some((m) => /stale key/.test(m)));
  assert.ok(problems.some((m) => /replayed DATA message/.test(m)));
  assert.equal(utf8.decode((await b.openVoice(1, await a.sealVoice(bytes("newest")), room.now)) as Uint8Array), "newest");
});

test("a member that never verified costs no rekey", async () => {
  const room = new Room();
  const a = await room.join(1, "alice");
  const b = await room.join(2, "bob");
  const before = [a.senderKey, b.senderKey];
  for (let i = 0; i < 5; i++) {
    await room.join(6, "mallory", { secret: new Uint8Array(16) });
    await room.leave(6);
  }
  assert.deepEqual([a.senderKey, b.senderKey], before);
  assert.ok(!a.rotationPending);
  assert.equal(a.getTimer(), null);
});

test("PROTOCOL 3.15: an offered secret is taken only when the server's token matches it", async () => {
  const room = new Room();
  const owner = await room.join(1, "alice");
  const bob = await room.join(2, "bob");
  const carol = await room.join(3, "carol");
  const next = new Uint8Array(16).fill(0x42);
  assert.deepEqual(owner.offerSecret(next).sort(), [2, 3]);
  await room.pump();
  const token = deriveJoinToken(next, ROOM);
  // A token that differs in its last byte only: nothing adopted, the old secret stays.
  const wrong = Uint8Array.from(token);
  wrong[31] = (wrong[31] as number) ^ 1;
  assert.equal(await bob.tokenChanged(wrong), null);
  assert.equal(await bob.tokenChanged(token.slice(0, 16)), null);
  // A newcomer with the old invite still verifies with bob: his secret did not move.
  await room.join(4, "dave");
  assert.ok(bob.verified(4));
  // The matching token: bob, carol and the owner take the offered secret.
  for (const m of [bob, carol, owner]) assert.equal(toHex((await m.tokenChanged(token)) as Uint8Array), toHex(next));
  assert.equal(await bob.tokenChanged(token), null); // taken once; the offers are gone
  // From now on pair handshakes use the new secret: a newcomer with it verifies with
  // bob, carol and the owner; dave (old secret) is rejected by it.
  await room.join(5, "erin", { secret: next });
  for (const sid of [1, 2, 3]) assert.ok(room.of(5, "MemberVerified").some((e) => e.sessionId === sid), `erin verified ${sid}`);
  assert.ok(room.of(5, "MemberRejected").some((e) => e.sessionId === 4));
});

test("a secret offered by a member who left, or unheard, is never taken", async () => {
  const room = new Room();
  await room.join(1, "alice");
  const bob = await room.join(2, "bob");
  const next = new Uint8Array(16).fill(0x17);
  (room.members.get(1) as RoomCrypto).offerSecret(next);
  await room.pump();
  await room.leave(1);
  assert.equal(await bob.tokenChanged(deriveJoinToken(next, ROOM)), null);
  // Nobody offered anything: a token alone changes nothing.
  const carol = await room.join(3, "carol");
  assert.equal(await carol.tokenChanged(deriveJoinToken(SECRET, ROOM)), null);
  assert.throws(() => carol.offerSecret(new Uint8Array(15)), LocalProtocolError);
});

test("the secret message: msgspec's bytes, and a wrong size is a malformed member message", () => {
  const secret = new Uint8Array(16).fill(1);
  // msgspec.msgpack.encode(SecretMessage(bytes([1] * 16))).hex()
  assert.equal(toHex(encodeSecret(secret)), "82a174a6736563726574a6736563726574c410" + "01".repeat(16));
  assert.deepEqual(decodePayload(encodeSecret(secret)), { t: "secret", secret });
  assert.throws(() => decodePayload(encodeSecret(new Uint8Array(15))), /malformed member message: Expected `bytes` of length >= 16 - at `\$.secret`/);
});
