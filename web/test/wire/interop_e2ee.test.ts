// Cross tests of the end-to-end layer against the Python implementation (the truth):
// SFrame, identity, pair channels and whole RoomCrypto members, both directions.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { concat, fromHex, toHex, utf8 } from "../../src/wire/bytes.ts";
import { PacketError } from "../../src/wire/errors.ts";
import { RoomCrypto, type E2EEEvent } from "../../src/wire/e2ee.ts";
import { identityFingerprint, identityPublicKey, safetyNumber } from "../../src/wire/identity.ts";
import { PairChannel, PeerMessage, PeerVerified, deriveRoomPsk, pairPrologue } from "../../src/wire/pairwise.ts";
import { SFrameKey, parseHeader } from "../../src/wire/sframe.ts";
import { PythonPeer, type Json } from "../python.ts";

const py = new PythonPeer("interop_e2ee.py");
after(() => py.close());

const rand = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));
const ROOM = fromHex("0123456789abcdef");
const SECRET = rand(16);

test("SFrame frames sealed by JS open in Python and vice versa", async () => {
  for (const [kid, ctr] of [[0n, 0n], [7n, 8n], [0x0102n, 70000n], [2n ** 64n - 1n, 2n ** 64n - 1n]] as const) {
    const base = rand(32);
    const meta = rand(27);
    const plain = rand(100);
    const k = new SFrameKey(kid, base);
    const frame = await k.seal(ctr, meta, plain);
    const opened = await py.call({ op: "sframe_open", base_key: toHex(base), metadata: toHex(meta), frame: toHex(frame) });
    assert.equal(opened.plaintext, toHex(plain));
    assert.equal(opened.kid, String(kid));
    assert.equal(opened.ctr, String(ctr));
    const sealed = await py.call({ op: "sframe_seal", base_key: toHex(base), kid: String(kid), ctr: String(ctr), metadata: toHex(meta), plaintext: toHex(plain) });
    const pyFrame = fromHex(sealed.frame as string);
    assert.deepEqual(pyFrame, frame);
    const { size } = parseHeader(pyFrame);
    assert.deepEqual(await k.open(ctr, pyFrame.subarray(0, size), meta, pyFrame.subarray(size)), plain);
    const bad = Uint8Array.from(frame);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
    assert.match(((await py.tryCall({ op: "sframe_open", base_key: toHex(base), metadata: toHex(meta), frame: toHex(bad) })).error as string), /authentication failed/);
  }
});

test("identity keys, fingerprints, safety numbers and the room PSK agree", async () => {
  for (let i = 0; i < 3; i++) {
    const a = rand(32);
    const b = rand(32);
    const pa = await py.call({ op: "identity", private: toHex(a) });
    assert.equal(pa.public, toHex(identityPublicKey(a)));
    assert.equal(pa.fingerprint, identityFingerprint(identityPublicKey(a)));
    const n = await py.call({ op: "safety", local: toHex(identityPublicKey(a)), remote: toHex(identityPublicKey(b)) });
    assert.equal(n.number, safetyNumber(identityPublicKey(a), identityPublicKey(b)));
    const secret = rand(16);
    assert.equal((await py.call({ op: "psk", secret: toHex(secret), room_id: toHex(ROOM) })).psk, toHex(deriveRoomPsk(secret, ROOM)));
  }
});

interface PyStep {
  events: { type: string; identity?: string; hello?: string; payload?: string }[];
  messages: string[];
  established: boolean;
  failed: boolean;
}

async function pyPair(req: Json): Promise<PyStep> {
  return (await py.call(req)) as unknown as PyStep;
}

for (const jsInitiates of [true, false]) {
  test(`pair channel handshake and DATA, ${jsInitiates ? "JS" : "Python"} initiating`, async () => {
    const jsKey = rand(32);
    const pyKey = rand(32);
    const [ini, res] = jsInitiates ? [10, 20] : [20, 10];
    const prologue = pairPrologue(ROOM, ini, res);
    const psk = deriveRoomPsk(SECRET, ROOM);
    const id = `pair-${jsInitiates}`;
    const js = new PairChannel({ initiator: jsInitiates, identityPrivate: jsKey, psk, prologue, hello: utf8.encode("js hello") });
    await pyPair({ op: "pair_new", id, initiator: !jsInitiates, identity: toHex(pyKey), psk: toHex(psk), prologue: toHex(prologue), hello: toHex(utf8.encode("py hello")) });
    const jsEvents: unknown[] = [];
    const pyEvents: PyStep["events"] = [];
    let toPy: Uint8Array[] = [];
    let toJs: string[] = [];
    if (jsInitiates) {
      js.start();
      toPy = js.messagesToSend();
    } else {
      toJs = (await pyPair({ op: "pair_start", id })).messages;
    }
    while (toPy.length || toJs.length) {
      for (const m of toPy) {
        const r = await pyPair({ op: "pair_receive", id, data: toHex(m) });
        pyEvents.push(...r.events);
        toJs.push(...r.messages);
      }
      toPy = [];
      for (const m of toJs) jsEvents.push(...js.receive(fromHex(m)));
      toJs = [];
      toPy = js.messagesToSend();
    }
    assert.ok(js.established);
    const v = jsEvents[0];
    assert.ok(v instanceof PeerVerified);
    assert.deepEqual(v.remoteIdentity, identityPublicKey(pyKey));
    assert.equal(utf8.decode(v.hello), "py hello");
    assert.deepEqual(pyEvents[0], { type: "verified", identity: toHex(identityPublicKey(jsKey)), hello: toHex(utf8.encode("js hello")) });
    js.send(utf8.encode("to python"));
    const got = await pyPair({ op: "pair_receive", id, data: toHex(js.messagesToSend()[0] as Uint8Array) });
    assert.deepEqual(got.events, [{ type: "message", payload: toHex(utf8.encode("to python")) }]);
    const sent = await pyPair({ op: "pair_send", id, payload: toHex(utf8.encode("to js")) });
    const [m] = js.receive(fromHex(sent.messages[0] as string));
    assert.ok(m instanceof PeerMessage);
    assert.equal(utf8.decode(m.payload), "to js");
    assert.throws(() => js.receive(fromHex(sent.messages[0] as string)), /replayed DATA message/);
  });
}

test("pair channel with a wrong PSK cannot complete (JS initiator, Python responder)", async () => {
  const prologue = pairPrologue(ROOM, 1, 2);
  const js = new PairChannel({ initiator: true, identityPrivate: rand(32), psk: deriveRoomPsk(rand(16), ROOM), prologue, hello: new Uint8Array(0) });
  await pyPair({ op: "pair_new", id: "wrong", initiator: false, identity: toHex(rand(32)), psk: toHex(deriveRoomPsk(SECRET, ROOM)), prologue: toHex(prologue), hello: "" });
  js.start();
  const hs2 = await pyPair({ op: "pair_receive", id: "wrong", data: toHex(js.messagesToSend()[0] as Uint8Array) });
  js.receive(fromHex(hs2.messages[0] as string));
  const r = (await py.tryCall({ op: "pair_receive", id: "wrong", data: toHex(js.messagesToSend()[0] as Uint8Array) })) as Json;
  assert.match(r.error as string, /could not prove the room secret/);
});

// --- whole members -------------------------------------------------------------------

class Call {
  now = 0;
  readonly jsEvents: E2EEEvent[] = [];
  readonly pyEvents: Json[] = [];
  constructor(
    readonly js: RoomCrypto,
    readonly pyId: string,
  ) {}

  take(reply: Json): [number, string][] {
    this.pyEvents.push(...((reply.events as Json[] | undefined) ?? []));
    return (reply.messages as [number, string][] | undefined) ?? [];
  }

  /** Relay pair messages both ways until both are quiet. */
  async pump(first: [number, string][] = []): Promise<void> {
    let fromPy = first;
    for (let i = 0; i < 100; i++) {
      const fromJs = this.js.peerMessagesToSend();
      if (!fromJs.length && !fromPy.length) break;
      const next: [number, string][] = [];
      for (const [, data] of fromJs) next.push(...this.take(await py.call({ op: "rc_peer", id: this.pyId, sender: this.js.sessionId, data: toHex(data), now: this.now })));
      for (const [to, data] of fromPy) if (to === this.js.sessionId) await this.js.peerReceived(this.pySession, fromHex(data), this.now);
      fromPy = next;
    }
    for (let e = this.js.nextEvent(); e !== null; e = this.js.nextEvent()) this.jsEvents.push(e);
  }

  pySession = 0;
}

async function newPy(id: string, sessionId: number, user: string, secret = SECRET): Promise<string> {
  return (await py.call({ op: "rc_new", id, room_id: toHex(ROOM), secret: toHex(secret), session_id: sessionId, user, nick: user, identity: toHex(rand(32)) })).public as string;
}

for (const jsFirst of [true, false]) {
  test(`RoomCrypto JS <-> Python: verify, keys, voice, chat, rr, cand (${jsFirst ? "JS" : "Python"} in the room first)`, async () => {
    const JS = 0x1000 + (jsFirst ? 1 : 2);
    const PY = 0x1000 + (jsFirst ? 2 : 1);
    const pyId = `member-${jsFirst}`;
    const js = new RoomCrypto({ roomId: ROOM, secret: SECRET, sessionId: JS, user: "web", nick: "Web", identityPrivate: rand(32) });
    const pyPublic = await newPy(pyId, PY, "cli");
    const call = new Call(js, pyId);
    call.pySession = PY;
    if (jsFirst) {
      // Python is the newcomer: it initiates.
      js.memberJoined(PY, "cli", 0);
      await call.pump(call.take(await py.call({ op: "rc_start", id: pyId, members: [[JS, "web"]], now: 0 })));
    } else {
      await call.take(await py.call({ op: "rc_member_joined", id: pyId, session_id: JS, user: "web", now: 0 }));
      js.start([[PY, "cli"]], 0);
      await call.pump();
    }
    const verified = call.jsEvents.find((e) => e.type === "MemberVerified");
    assert.ok(verified && verified.type === "MemberVerified");
    assert.equal(toHex(verified.identity), pyPublic);
    const pyVerified = call.pyEvents.find((e) => e.type === "MemberVerified");
    assert.ok(pyVerified);
    assert.equal(pyVerified.identity, toHex(js.identityPublic));
    const pySafety = (await py.call({ op: "safety", local: pyPublic, remote: toHex(js.identityPublic) })).number;
    assert.equal(verified.safetyNumber, pySafety);
    // The member that was there first ratcheted once for the newcomer.
    const pyKey = await py.call({ op: "rc_key", id: pyId });
    assert.equal(jsFirst ? js.senderKey.step : pyKey.step, 1);
    // Voice both ways.
    const frame = await js.sealVoice(utf8.encode("from the browser"), 0);
    assert.equal((await py.call({ op: "rc_open_voice", id: pyId, sender: JS, frame: toHex(frame), now: 0 })).plaintext, toHex(utf8.encode("from the browser")));
    const pyFrame = fromHex((await py.call({ op: "rc_seal_voice", id: pyId, payload: toHex(utf8.encode("from the cli")) })).frame as string);
    assert.equal(utf8.decode((await js.openVoice(PY, pyFrame, 0)) as Uint8Array), "from the cli");
    await assert.rejects(js.openVoice(PY, pyFrame, 0), PacketError); // replay
    // Chat both ways.
    const said = await js.sealChat("héllo 😀");
    call.take(await py.call({ op: "rc_open_chat", id: pyId, sender: JS, data: toHex(said), now: 0 }));
    assert.deepEqual(call.pyEvents.filter((e) => e.type === "ChatOpened"), [{ type: "ChatOpened", session_id: JS, text: "héllo 😀" }]);
    const pyChat = fromHex((await py.call({ op: "rc_seal_chat", id: pyId, text: "hi web" })).data as string);
    await js.openChat(PY, pyChat, 0);
    // Reception reports both ways, and a CLI member's candidates (ignored by the browser).
    js.sendReport(PY, 0.25, 2.64);
    await call.pump(call.take(await py.call({ op: "rc_report", id: pyId, to: JS, loss: 0.5, burst: 3.0 })));
    await call.pump(call.take(await py.call({ op: "rc_candidates", id: pyId, to: JS, key: toHex(rand(32)), candidates: [["host", "192.0.2.1", 7601]] })));
    assert.deepEqual(call.pyEvents.filter((e) => e.type === "ReportReceived"), [{ type: "ReportReceived", session_id: JS, loss: 0.25, burst: 2.6 }]);
    assert.deepEqual(call.jsEvents.filter((e) => e.type === "ChatOpened"), [{ type: "ChatOpened", sessionId: PY, text: "hi web" }]);
    assert.deepEqual(call.jsEvents.filter((e) => e.type === "ReportReceived"), [{ type: "ReportReceived", sessionId: PY, loss: 0.5, burst: 3 }]);
    assert.deepEqual(call.jsEvents.filter((e) => e.type === "PeerProblem" || e.type === "MemberRejected"), []);
    assert.deepEqual(call.pyEvents.filter((e) => e.type === "PeerProblem" || e.type === "MemberRejected"), []);
    // A third member (Python) joins and leaves: the browser rotates and Python gets the key.
    const third = `third-${jsFirst}`;
    await newPy(third, 0x2000, "other");
    js.memberJoined(0x2000, "other", 1);
    const hs1 = call.take(await py.call({ op: "rc_start", id: third, members: [[JS, "web"]], now: 1 }));
    const thirdCall = new Call(js, third);
    thirdCall.pySession = 0x2000;
    await thirdCall.pump(hs1);
    assert.ok(js.verified(0x2000));
    js.memberLeft(0x2000, 2);
    call.take(await py.call({ op: "rc_member_left", id: pyId, session_id: 0x2000, now: 2 }));
    assert.equal(js.senderKey.generation, 1);
    const rekeyed = await js.sealVoice(utf8.encode("after the leave"), 2);
    await call.pump();
    assert.equal((await py.call({ op: "rc_open_voice", id: pyId, sender: JS, frame: toHex(rekeyed), now: 2 })).plaintext, toHex(utf8.encode("after the leave")));
    const pyAfter = fromHex((await py.call({ op: "rc_seal_voice", id: pyId, payload: "00" })).frame as string);
    assert.deepEqual(await js.openVoice(PY, pyAfter, 2), new Uint8Array([0]));
  });
}

test("RoomCrypto: a browser member with another room secret is rejected by Python and rejects it", async () => {
  const js = new RoomCrypto({ roomId: ROOM, secret: rand(16), sessionId: 1, user: "web", nick: "web", identityPrivate: rand(32) });
  await newPy("wrong-secret", 2, "cli");
  const call = new Call(js, "wrong-secret");
  call.pySession = 2;
  call.take(await py.call({ op: "rc_member_joined", id: "wrong-secret", session_id: 1, user: "web", now: 0 }));
  js.start([[2, "cli"]], 0);
  await call.pump();
  assert.deepEqual(call.pyEvents.map((e) => [e.type, e.reason]), [["MemberRejected", "the member could not prove the room secret"]]);
  assert.deepEqual(call.jsEvents.map((e) => (e.type === "MemberRejected" ? e.reason : e.type)), ["the member rejected our handshake: different room secret?"]);
  assert.ok(!js.verified(2));
  const frame = fromHex((await py.call({ op: "rc_seal_voice", id: "wrong-secret", payload: "01" })).frame as string);
  await assert.rejects(js.openVoice(2, frame, 0), PacketError);
  const extra = concat(new Uint8Array([4]), rand(40));
  await js.peerReceived(2, extra, 0); // ignored silently: rejected
  assert.equal(js.nextEvent(), null);
});

test("member message decoding accepts and refuses exactly what Python's msgspec does", async () => {
  const { decodeChat, decodeHello, decodePayload, encodeChat, encodeHello, encodeKeyMessage, encodeReport } = await import("../../src/wire/e2ee.ts");
  const { SenderKey } = await import("../../src/wire/senderkeys.ts");
  const decoders = { hello: decodeHello, payload: decodePayload, chat: decodeChat } as const;
  const valid: [keyof typeof decoders, Uint8Array][] = [
    ["hello", encodeHello({ user: "bob", nick: "Bob" })],
    ["payload", encodeKeyMessage(new SenderKey(300, 7, rand(32)))],
    ["payload", encodeReport(153, 26)],
    ["chat", encodeChat(3, "hi")],
  ];
  const h = (s: string): Uint8Array => fromHex(s.replace(/ /g, ""));
  const crafted: [keyof typeof decoders, Uint8Array][] = [
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 cb 3ff0000000000000")], // loss 1.0 (a float)
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01")], // an old peer's: no burst
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 ac 62757273745f74656e746873 c0")], // burst nil
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 ac 62757273745f74656e746873 a1 78")], // burst str
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 ac 62757273745f74656e746873 ff")], // burst -1
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 ac 62757273745f74656e746873 ce 00010000")], // 65536
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 ac 62757273745f74656e746873 cd ffff")], // 65535
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 cf 0000000000000001")], // 1 as a uint64
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 d0 ff")], // -1
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 a1 78 d4 01 00")], // ext in an unknown field
    ["payload", h("83 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 01 01")], // an int key
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65 01 00")], // trailing byte
    ["payload", h("82 a1 74 a2 72 72 ad 6c6f73735f7065726d696c6c65")], // truncated
    ["chat", h("82 a3 736571 03 a4 74657874 a2 ff fe")], // invalid UTF-8
    ["chat", h("82 a3 736571 03 a4 74657874 c4 02 6869")], // bin, not str
    ["hello", h("82 a4 75736572 a3 626f62 a4 6e69636b c0")], // nick nil
    ["hello", h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a " + "91".repeat(200) + "c0")], // nested unknown field
    ["hello", h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a 81 01 02")], // an int key in a skipped value
    ["hello", h("83 a4 75736572 a3 626f62 a4 6e69636b a0 a1 7a " + "91".repeat(600) + "c0")], // deeper than control allows
    ["hello", h("81 a4 75736572 a3 626f62")],
    ["payload", h("c1")],
    ["payload", h("")],
    ["payload", h("90")],
  ];
  const cases = [...valid, ...crafted];
  // Every truncation and single-byte change of the valid ones too.
  for (const [what, data] of valid) {
    for (let n = 0; n < data.length; n++) cases.push([what, data.subarray(0, n)]);
    for (let i = 0; i < data.length; i++) {
      for (const x of [0x01, 0x80, 0xff]) {
        const d = Uint8Array.from(data);
        d[i] = (d[i] as number) ^ x;
        cases.push([what, d]);
      }
    }
  }
  let accepted = 0;
  for (const [what, data] of cases) {
    const want = await py.call({ op: "decode", what, data: toHex(data) });
    let ok = true;
    try {
      decoders[what](data);
    } catch (e) {
      ok = false;
      assert.ok(e instanceof Error && e.name === "PeerError", `${what} ${toHex(data)}: ${String(e)}`);
    }
    assert.equal(ok, want.ok, `${what} ${toHex(data)}: python says ${JSON.stringify(want)}`);
    if (ok) accepted++;
  }
  assert.ok(accepted > valid.length); // some mutations are valid messages, and both agree
});

test("RoomCrypto: the browser takes the room secret a Python owner rotates to (PROTOCOL.md 3.15)", async () => {
  const JS = 0x3001;
  const OWNER = 0x3002;
  const js = new RoomCrypto({ roomId: ROOM, secret: SECRET, sessionId: JS, user: "web", nick: "web", identityPrivate: rand(32) });
  await newPy("owner", OWNER, "alice");
  const call = new Call(js, "owner");
  call.pySession = OWNER;
  js.memberJoined(OWNER, "alice", 0);
  await call.pump(call.take(await py.call({ op: "rc_start", id: "owner", members: [[JS, "web"]], now: 0 })));
  assert.ok(js.verified(OWNER));
  const next = rand(16);
  await call.pump(call.take(await py.call({ op: "rc_offer_secret", id: "owner", secret: toHex(next) })));
  const token = fromHex((await py.call({ op: "join_token", secret: toHex(SECRET), room_id: toHex(ROOM) })).token as string);
  assert.equal(await js.tokenChanged(token), null); // the old secret's token: no offer fits
  const newToken = fromHex((await py.call({ op: "join_token", secret: toHex(next), room_id: toHex(ROOM) })).token as string);
  assert.equal(toHex((await js.tokenChanged(newToken)) as Uint8Array), toHex(next));
  assert.equal((await py.call({ op: "rc_token_changed", id: "owner", token: toHex(newToken) })).secret, toHex(next));
  // A Python newcomer with the new invite verifies with the browser.
  await newPy("newcomer", 0x3003, "dave", next);
  js.memberJoined(0x3003, "dave", 1);
  const late = new Call(js, "newcomer");
  late.pySession = 0x3003;
  await late.pump(late.take(await py.call({ op: "rc_start", id: "newcomer", members: [[JS, "web"]], now: 1 })));
  assert.ok(js.verified(0x3003));
  assert.deepEqual(late.jsEvents.filter((e) => e.type === "MemberRejected" || e.type === "PeerProblem"), []);
});
