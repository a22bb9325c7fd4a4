import { test, after } from "node:test";
import assert from "node:assert/strict";
import { concat, fromHex, toHex, utf8 } from "../../src/wire/bytes.ts";
import { DecodeError, FramingError, HandshakeError, KeyPinError, LocalProtocolError, RemoteProtocolError } from "../../src/wire/errors.ts";
import { encode, msg, type ServerMessage } from "../../src/wire/control.ts";
import { checkPinnedKey, fingerprint } from "../../src/wire/fingerprint.ts";
import { FrameDecoder, encodeFrame } from "../../src/wire/framing.ts";
import { HandshakeState, PROLOGUE, generatePrivateKey, publicKey, type CipherState } from "../../src/wire/noise.ts";
import { CLIENT_SENDS, ControlSession, REPLIES, SERVER_SENDS, State, TRACKED, type SessionEvent } from "../../src/wire/session.ts";
import { PythonPeer } from "../python.ts";

/** A scripted server end in JS: the Noise responder and raw frames, no rules. */
class FakeServer {
  readonly key = generatePrivateKey();
  readonly hs: HandshakeState;
  readonly decoder = new FrameDecoder();
  transport: { send: CipherState; receive: CipherState } | null = null;
  received: Uint8Array[] = [];

  constructor(prologue = PROLOGUE, readonly payload2 = new Uint8Array(0)) {
    this.hs = new HandshakeState({ pattern: "XX", initiator: false, staticPrivate: this.key, prologue });
  }

  /** Feeds the client's bytes; returns what the server answers (handshake message 2). */
  feed(data: Uint8Array): Uint8Array {
    const out: Uint8Array[] = [];
    for (const frame of this.decoder.feed(data)) {
      if (this.transport) {
        this.received.push(this.transport.receive.decrypt(frame));
      } else {
        this.hs.readMessage(frame);
        if (this.hs.isComplete) this.transport = this.hs.transport();
        else out.push(encodeFrame(this.hs.writeMessage(this.payload2)));
      }
    }
    return concat(...out);
  }

  sendRaw(plain: Uint8Array): Uint8Array {
    return encodeFrame(this.transport!.send.encrypt(plain));
  }

  send(m: ServerMessage): Uint8Array {
    return this.sendRaw(encode(m));
  }
}

function drain(s: ControlSession): SessionEvent[] {
  const out: SessionEvent[] = [];
  for (let e = s.nextEvent(); e !== null; e = s.nextEvent()) out.push(e);
  return out;
}

function connected(options: ConstructorParameters<typeof ControlSession>[0] = {}) {
  const server = new FakeServer();
  const client = new ControlSession(options);
  const m1 = client.dataToSend();
  assert.equal(m1.length, 34); // PROTOCOL.md 2.2: 00 20 + 32
  const m2 = server.feed(m1);
  assert.equal(m2.length, 98);
  client.receiveData(m2, 0);
  const m3 = client.dataToSend();
  assert.equal(m3.length, 66);
  server.feed(m3);
  const [done] = drain(client);
  assert.equal(done?.type, "handshake_done");
  assert.deepEqual(client.remoteStatic, publicKey(server.key));
  return { server, client };
}

function loggedIn(now = 0) {
  const { server, client } = connected();
  const hello = client.hello("alice", "pw");
  server.feed(client.dataToSend());
  client.receiveData(server.send({ t: "welcome", sessionId: 7, user: "alice", serverVersion: "0.1.0", mediaSecret: new Uint8Array(32), resume: new Uint8Array(0) }), now);
  assert.deepEqual(drain(client).map((e) => e.type), ["request_done"]);
  assert.equal(client.state, State.LOGGED_IN);
  return { server, client, hello };
}

const joined: ServerMessage = {
  t: "joined",
  roomId: "0123456789abcdef",
  name: "L",
  you: { sessionId: 7, user: "alice", nick: "alice" },
  members: [],
  maxBitrate: 0,
};

test("handshake, hello, welcome; states and the sending table", () => {
  const { server, client } = connected();
  assert.equal(client.state, State.HELLO);
  assert.throws(() => client.joinRoom("0123456789abcdef"), /cannot send JoinRoom in state HELLO/);
  const hello = client.hello("alice", "pw", "Ali");
  assert.throws(() => client.hello("a", "b"), /hello was sent already/);
  server.feed(client.dataToSend());
  assert.deepEqual(server.received.map(toHex), [toHex(encode(msg.hello("alice", "pw", "Ali")))]);
  const welcome: ServerMessage = { t: "welcome", sessionId: 7, user: "alice", serverVersion: "0.1.0", mediaSecret: new Uint8Array(32), resume: new Uint8Array(0) };
  client.receiveData(server.send(welcome), 10);
  const [done] = drain(client);
  assert.ok(done?.type === "request_done" && done.request === hello);
  assert.deepEqual(done.reply, welcome);
  assert.equal(client.getTimer(), 12);
  assert.throws(() => client.send(msg.ping(1)), /sends its own pings/);
  assert.throws(() => client.hello("a", "b"), /cannot send Hello in state LOGGED_IN/);
});

test("requests are settled in order; refusals; pushes; leave without an answer", () => {
  const { server, client } = loggedIn();
  const leave0 = client.leaveRoom(); // outside a room: never answered
  const join = client.joinRoom("0123456789abcdef");
  client.receiveData(server.send(joined), 1);
  const events = drain(client);
  assert.deepEqual(events.map((e) => e.type), ["request_done", "request_done"]);
  assert.ok(events[0]!.type === "request_done" && events[0]!.request === leave0 && events[0]!.reply === null);
  assert.ok(events[1]!.type === "request_done" && events[1]!.request === join);
  assert.equal(client.state, State.IN_ROOM);
  const create = client.createRoom("x");
  client.sendChat(new Uint8Array([1]));
  client.receiveData(
    concat(
      server.send(msg.error(4, "too many chat messages; not sent", { ref: "say" })),
      server.send(msg.error(8, "you already have a room named x", { ref: "create" })),
      server.send({ t: "member_joined", member: { sessionId: 9, user: "bob", nick: "bob" } }),
      server.send({ t: "chat", sender: 9, data: new Uint8Array([5]) }),
      server.send({ t: "peer_from", sender: 9, data: new Uint8Array([6]) }),
      server.send({ t: "member_left", sessionId: 9 }),
    ),
    2,
  );
  const more = drain(client);
  assert.deepEqual(more.map((e) => e.type), ["refused", "request_failed", "pushed", "pushed", "pushed", "pushed"]);
  assert.ok(more[1]!.type === "request_failed" && more[1]!.request === create);
  const leave = client.leaveRoom();
  client.receiveData(server.send({ t: "left", roomId: "0123456789abcdef" }), 3);
  const [left] = drain(client);
  assert.ok(left?.type === "request_done" && left.request === leave);
  assert.equal(client.state, State.LOGGED_IN);
  client.bye();
  assert.equal(client.state, State.CLOSING);
  server.feed(client.dataToSend());
  assert.equal(toHex(server.received.at(-1)!), toHex(encode(msg.bye())));
  assert.throws(() => client.leaveRoom(), /cannot send LeaveRoom: the session is closing/);
});

test("pings every interval, RTT from pongs, dead server after deadAfter", () => {
  const { server, client } = loggedIn(100);
  assert.equal(client.getTimer(), 102);
  client.handleTimer(101); // not due: nothing
  assert.equal(client.dataToSend().length, 0);
  client.handleTimer(102);
  server.feed(client.dataToSend());
  assert.deepEqual(server.received.at(-1), encode(msg.ping(0)));
  client.receiveData(server.send({ t: "pong", nonce: 0 }), 102.25);
  assert.deepEqual(drain(client), []);
  assert.equal(client.rtt, 0.25);
  assert.equal(client.getTimer(), 104);
  client.handleTimer(104);
  client.handleTimer(106);
  const join = client.joinRoom("0123456789abcdef");
  client.handleTimer(108); // last heard 102.25: silent for 5.75 s, still alive
  assert.equal(client.state, State.LOGGED_IN);
  client.handleTimer(110); // 7.75 s: gone
  const [end] = drain(client);
  assert.ok(end?.type === "session_ended" && end.reason === "timeout");
  assert.deepEqual(end.unanswered, [join]); // pings are not reported
  assert.equal(client.state, State.CLOSED);
  assert.equal(client.getTimer(), null);
});

test("a pong for no ping, a reply for nothing, a message out of state: garbage", () => {
  const cases: [ServerMessage, RegExp][] = [
    [{ t: "pong", nonce: 5 }, /unexpected Pong in state LOGGED_IN: it answers no pending request/],
    [{ t: "created", roomId: "0123456789abcdef", name: "x" }, /unexpected RoomCreated in state LOGGED_IN: it answers no pending request/],
    [{ t: "chat", sender: 1, data: new Uint8Array(1) }, /unexpected Chat in state LOGGED_IN/],
    [{ t: "welcome", sessionId: 1, user: "u", serverVersion: "v", mediaSecret: new Uint8Array(32), resume: new Uint8Array(0) }, /unexpected Welcome in state LOGGED_IN/],
  ];
  for (const [m, re] of cases) {
    const { server, client } = loggedIn();
    client.receiveData(server.send(m), 1);
    assert.throws(() => client.nextEvent(), (e) => e instanceof RemoteProtocolError && re.test(e.message));
    assert.equal(client.state, State.CLOSED);
  }
  const { server, client } = loggedIn();
  client.receiveData(server.sendRaw(utf8.encode("not msgpack")), 1);
  assert.throws(() => client.nextEvent(), DecodeError);
  assert.equal(client.state, State.CLOSED);
  client.receiveData(new Uint8Array([0, 0]), 2); // ignored once ended
});

test("PROTOCOL 3.15: a join carries the token; TokenChanged is a push in a room, garbage before", () => {
  const token = new Uint8Array(32).fill(0x5a);
  const { server, client } = loggedIn();
  const pushed: ServerMessage = { t: "token", token };
  // Before any room: the server may not send it, and the session ends.
  client.receiveData(server.send(pushed), 1);
  assert.throws(() => client.nextEvent(), (e) => e instanceof RemoteProtocolError && /unexpected TokenChanged in state LOGGED_IN/.test(e.message));
  assert.equal(client.state, State.CLOSED);

  const b = loggedIn();
  b.client.joinRoom("0123456789abcdef", token);
  b.server.feed(b.client.dataToSend());
  assert.equal(toHex(b.server.received.at(-1)!), toHex(encode(msg.join("0123456789abcdef", token))));
  assert.ok(toHex(b.server.received.at(-1)!).endsWith("a5746f6b656ec420" + "5a".repeat(32))); // "token": bin 32
  b.client.receiveData(concat(b.server.send(joined), b.server.send(pushed)), 2);
  const events = drain(b.client);
  assert.deepEqual(events.map((e) => e.type), ["request_done", "pushed"]);
  assert.ok(events[1]!.type === "pushed" && events[1]!.message.t === "token");
  assert.deepEqual((events[1] as { message: { token: Uint8Array } }).message.token, token);
  assert.equal(b.client.state, State.IN_ROOM);
  // A short token is malformed: the decoder refuses it before the state is judged.
  b.client.receiveData(b.server.sendRaw(fromHex("82a174a5746f6b656ea5746f6b656ec40100")), 3); // {t: token, token: bin 1}
  assert.throws(() => b.client.nextEvent(), (e) => e instanceof DecodeError && /Expected `bytes` of length >= 32 - at `\$.token`/.test(e.message));
});

test("a fatal error ends the session with the unanswered requests; so does EOF", () => {
  const { server, client } = loggedIn();
  const join = client.joinRoom("0123456789abcdef");
  client.receiveData(server.send(msg.error(10, "server is shutting down", { fatal: true })), 1);
  const [end] = drain(client);
  assert.ok(end?.type === "session_ended" && end.reason === "error" && end.error?.code === 10);
  assert.deepEqual(end.unanswered, [join]);
  const b = loggedIn();
  b.client.receiveEof(1);
  const [eof] = drain(b.client);
  assert.ok(eof?.type === "session_ended" && eof.reason === "eof");
});

test("a broken channel: bad handshake, payload, tampered transport, empty frame, truncation", () => {
  const wrong = new FakeServer(utf8.encode("bangor/2 other"));
  const c1 = new ControlSession();
  assert.throws(() => c1.receiveData(wrong.feed(c1.dataToSend()), 0), HandshakeError);
  assert.equal(c1.state, State.CLOSED);

  const chatty = new FakeServer(PROLOGUE, new Uint8Array([1]));
  const c2 = new ControlSession();
  assert.throws(() => c2.receiveData(chatty.feed(c2.dataToSend()), 0), /unexpected payload in handshake message/);

  const { server, client } = loggedIn();
  const frame = server.send({ t: "pong", nonce: 1 });
  frame[5]! ^= 1;
  assert.throws(() => client.receiveData(frame, 1), /noise transport message failed authentication/);
  assert.equal(client.state, State.CLOSED);

  const e = loggedIn();
  assert.throws(() => e.client.receiveData(new Uint8Array([0, 0]), 1), FramingError);

  // Handshake message 2 cut anywhere and fed whole as if complete: a clean HandshakeError.
  const s = new FakeServer();
  const c3 = new ControlSession();
  const m2 = s.feed(c3.dataToSend()).slice(2);
  for (let n = 1; n < m2.length; n++) {
    const c = new ControlSession();
    new FakeServer().feed(c.dataToSend());
    assert.throws(() => c.receiveData(encodeFrame(m2.slice(0, n)), 0), HandshakeError, `cut at ${n}`);
  }
  // Split across reads it is simply waited for.
  c3.receiveData(encodeFrame(m2).slice(0, 50), 0);
  assert.equal(c3.state, State.HANDSHAKE);
  c3.receiveData(encodeFrame(m2).slice(50), 0);
  assert.equal(c3.state, State.HELLO);
});

test("the pin hook refuses a server before message 3 and before any hello", () => {
  const server = new FakeServer();
  const client = new ControlSession({ checkServerKey: (k) => checkPinnedKey(k, new Uint8Array(16)) });
  assert.throws(() => client.receiveData(server.feed(client.dataToSend()), 0), KeyPinError);
  assert.equal(client.dataToSend().length, 0);
  assert.equal(client.state, State.CLOSED);
  const ok = new FakeServer();
  const c = new ControlSession({ checkServerKey: (k) => checkPinnedKey(k, fingerprint(publicKey(ok.key))) });
  c.receiveData(ok.feed(c.dataToSend()), 0);
  assert.equal(c.state, State.HELLO);
  assert.throws(() => new ControlSession().send(msg.bye()), LocalProtocolError);
});

// -- against Python's ControlSession in the server role ---------------------------------

const py = new PythonPeer("interop_wire.py");
after(() => py.close());

type Feed = { out: string; events: Array<Record<string, unknown>>; state: string; raised: string | null };

test("JS client and Python server: handshake, login, rooms, chat, pings, bye", async () => {
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  await py.call({ op: "server_new", static: toHex(serverKey) });
  const client = new ControlSession({ staticPrivate: clientKey, checkServerKey: (k) => checkPinnedKey(k, fingerprint(publicKey(serverKey))) });
  let now = 0;
  const toServer = async () => (await py.call({ op: "server_feed", data: toHex(client.dataToSend()), now })) as unknown as Feed;
  const fromServer = (out: string) => {
    client.receiveData(fromHex(out), now);
    return drain(client);
  };
  const send = async (message: Record<string, unknown>) => fromServer((await py.call({ op: "server_send", message })).out as string);

  let feed = await toServer(); // message 1
  let events = fromServer(feed.out); // message 2
  assert.equal(events[0]?.type, "handshake_done");
  feed = await toServer(); // message 3
  assert.equal(feed.raised, null);
  assert.equal(feed.events[0]?.event, "HandshakeDone");
  assert.equal(feed.events[0]?.remote_static, toHex(publicKey(clientKey)));
  assert.equal(feed.events[0]?.handshake_hash, toHex(client.handshakeHash!));
  assert.equal(feed.state, "HELLO");

  const hello = client.hello("alice", "secret", "Ali");
  feed = await toServer();
  assert.deepEqual(feed.events, [{ event: "RequestReceived", message: { t: "hello", version: 1, user: "alice", password: "secret", nick: "Ali", resume: { $bytes: "" } } }]);
  events = await send({ t: "welcome", session_id: 7, user: "alice", server_version: "0.1.0", media_secret: { $bytes: "00".repeat(32) } });
  assert.ok(events[0]?.type === "request_done" && events[0].request === hello);
  assert.equal(client.state, State.LOGGED_IN);

  client.createRoom("Lounge", 24000);
  feed = await toServer();
  assert.deepEqual(feed.events[0]?.message, { t: "create", name: "Lounge", max_bitrate: 24000 });
  events = await send({ t: "created", room_id: "0123456789abcdef", name: "Lounge" });
  assert.equal(events[0]?.type, "request_done");

  client.joinRoom("0123456789abcdef");
  await toServer();
  const you = { session_id: 7, user: "alice", nick: "Ali" };
  events = await send({ t: "joined", room_id: "0123456789abcdef", name: "Lounge", you, members: [{ session_id: 9, user: "bob", nick: "bob" }], max_bitrate: 24000 });
  assert.ok(events[0]?.type === "request_done" && events[0].reply?.t === "joined" && events[0].reply.members[0]?.sessionId === 9);
  assert.equal(client.state, State.IN_ROOM);

  client.sendChat(new Uint8Array([1, 2]));
  client.sendPeer(9, new Uint8Array([3]));
  feed = await toServer();
  assert.deepEqual(feed.events.map((e) => e.message), [{ t: "say", data: { $bytes: "0102" } }, { t: "peer", to: 9, data: { $bytes: "03" } }]);
  events = await send({ t: "chat", sender: 9, data: { $bytes: "ff" } });
  assert.ok(events[0]?.type === "pushed" && events[0].message.t === "chat");
  events = fromServer((await py.call({ op: "server_send", message: { t: "error", code: 4, message: "too many chat messages; not sent", ref: "say" } })).out as string);
  assert.equal(events[0]?.type, "refused");

  now = 2; // the first ping is due 2 s after welcome; Python answers it itself
  client.handleTimer(now);
  feed = await toServer();
  assert.deepEqual(feed.events, []);
  now = 2.5;
  assert.deepEqual(fromServer(feed.out), []);
  assert.equal(client.rtt, 0.5);

  client.leaveRoom();
  await toServer();
  events = await send({ t: "left", room_id: "0123456789abcdef" });
  assert.equal(client.state, State.LOGGED_IN);
  client.bye();
  feed = await toServer();
  assert.deepEqual(feed.events, [{ event: "SessionEnded", reason: "bye" }]);
  assert.equal(feed.state, "CLOSED");
});

test("a fatal error from Python ends the JS session with the unanswered hello", async () => {
  await py.call({ op: "server_new", static: toHex(generatePrivateKey()) });
  const client = new ControlSession();
  const pump = async () => {
    const feed = (await py.call({ op: "server_feed", data: toHex(client.dataToSend()), now: 0 })) as unknown as Feed;
    client.receiveData(fromHex(feed.out), 0);
    return feed;
  };
  await pump();
  await pump();
  drain(client);
  const hello = client.hello("bob", "");
  await pump();
  const reply = await py.call({ op: "server_fail", code: 12, message: "this server needs a password", ref: "hello" });
  client.receiveData(fromHex(reply.out as string), 0);
  const [end] = drain(client);
  assert.ok(end?.type === "session_ended" && end.reason === "error");
  assert.deepEqual(end.error, msg.error(12, "this server needs a password", { fatal: true, ref: "hello" }));
  assert.deepEqual(end.unanswered, [hello]);
});

test("a JS client with the wrong prologue fails against Python", async () => {
  await py.call({ op: "server_new", static: toHex(generatePrivateKey()) });
  const client = new ControlSession({ prologue: utf8.encode("bangor/2 Noise_XX_25519_ChaChaPoly_BLAKE2s") });
  const feed = (await py.call({ op: "server_feed", data: toHex(client.dataToSend()), now: 0 })) as unknown as Feed;
  assert.throws(() => client.receiveData(fromHex(feed.out), 0), HandshakeError);
});

test("the tables mirror Python's (src/bangor/wire/session.py)", async () => {
  const theirs = await py.call({ op: "tables" });
  const sorted = (tags: Iterable<string>) => [...tags].sort();
  const byState = (t: Readonly<Partial<Record<State, ReadonlySet<string>>>>) =>
    Object.fromEntries(Object.entries(t).map(([state, tags]) => [state, sorted(tags as ReadonlySet<string>)]));
  assert.deepEqual(byState(CLIENT_SENDS), theirs.client_sends);
  assert.deepEqual(byState(SERVER_SENDS), theirs.server_sends);
  assert.deepEqual(REPLIES, theirs.replies);
  assert.deepEqual(sorted(TRACKED), theirs.tracked);
});
