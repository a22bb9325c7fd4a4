import { test, after } from "node:test";
import assert from "node:assert/strict";
import { concat, fromHex, toHex } from "../../src/wire/bytes.ts";
import { DecodeError, LocalProtocolError } from "../../src/wire/errors.ts";
import {
  decodeClientMessage,
  decodeServerMessage,
  encode,
  msg,
  type ClientMessage,
  type Message,
  type ServerMessage,
} from "../../src/wire/control.ts";
import { MpWriter } from "../../src/wire/msgpack.ts";
import { PythonPeer } from "../python.ts";

const member = (sessionId: number, user: string, nick = user) => ({ sessionId, user, nick });
const CLIENT: ClientMessage[] = [
  msg.hello("alice", "pw", "Ali"),
  msg.hello("", "", ""),
  { t: "hello", version: 2 ** 40, user: "é".repeat(64), password: "p".repeat(1024), nick: "😀".repeat(64), resume: new Uint8Array(28).fill(9) },
  msg.create("Lounge"),
  msg.create("x".repeat(64), 510000),
  msg.join("0123456789abcdef"),
  msg.join("0123456789abcdef", new Uint8Array(32).fill(0xee)),
  msg.list(),
  msg.rotate("0123456789abcdef", new Uint8Array(32).fill(1)),
  msg.delete("fedcba9876543210"),
  msg.kick("0123456789abcdef", { sessionId: 0xa1a1a1a1 }),
  msg.kick("0123456789abcdef", { user: "é".repeat(64), ban: true }),
  msg.unban("0123456789abcdef", "é".repeat(64)),
  msg.listBans("0123456789abcdef"),
  msg.leave(),
  msg.say(new Uint8Array(8256).fill(7)),
  msg.say(new Uint8Array([1])),
  msg.peer(0xa1a1a1a1, new Uint8Array(49).fill(1)),
  msg.peer(0, new Uint8Array(4096)),
  msg.ping(0),
  msg.ping(2 ** 53 - 1),
  msg.bye(),
];
const SERVER: ServerMessage[] = [
  { t: "welcome", sessionId: 7, user: "a", serverVersion: "0", mediaSecret: new Uint8Array(32), resume: new Uint8Array(28).fill(0xa0) },
  { t: "welcome", sessionId: 0xb2175c32, user: "alice", serverVersion: "0.1.0", mediaSecret: new Uint8Array(32).fill(3), resume: new Uint8Array(0) },
  { t: "created", roomId: "0123456789abcdef", name: "Lounge" },
  { t: "joined", roomId: "0123456789abcdef", name: "L", you: member(1, "bob"), members: [], maxBitrate: 0 },
  {
    t: "joined",
    roomId: "fedcba9876543210",
    name: "",
    you: member(2 ** 32 - 1, "b", "B"),
    members: Array.from({ length: 20 }, (_, i) => member(i, `u${i}`)),
    maxBitrate: 24000,
  },
  { t: "left", roomId: "0123456789abcdef" },
  { t: "rooms", rooms: [] },
  {
    t: "rooms",
    rooms: Array.from({ length: 3 }, (_, i) => ({ roomId: `${i}123456789abcdef`, name: `room ${i}`, owner: "alice", members: i * 1000 })),
  },
  { t: "rotated", roomId: "0123456789abcdef" },
  { t: "deleted", roomId: "0123456789abcdef" },
  { t: "kicked", roomId: "0123456789abcdef", sessionId: 0, user: "eve", banned: true },
  { t: "unbanned", roomId: "0123456789abcdef", user: "eve" },
  { t: "bans", roomId: "0123456789abcdef", users: [], more: 0 },
  { t: "bans", roomId: "0123456789abcdef", users: Array.from({ length: 500 }, (_, i) => `é${i}`), more: 2 ** 32 - 1 },
  { t: "token", token: new Uint8Array(32).fill(0xab) },
  msg.error(15, "removed from the room by its owner", { fatal: true }),
  { t: "member_joined", member: member(5, "carol", "") },
  { t: "member_left", sessionId: 5 },
  { t: "chat", sender: 9, data: new Uint8Array(300).fill(2) },
  { t: "peer_from", sender: 9, data: new Uint8Array(4096) },
  { t: "pong", nonce: 12345 },
  msg.error(6, "room is full", { ref: "join" }),
  msg.error(13, "server is busy checking logins; try again in 0.5 s", { fatal: true, ref: "hello", retryAfter: 0.5 }),
  msg.error(-5, "", { retryAfter: 3600 }),
  msg.error(14, "the room is served by 10.0.0.2:7878", { fatal: true, ref: "join", location: "10.0.0.2:7878" }),
];

test("the worked bytes of PROTOCOL.md 3.1 and 3.7", () => {
  assert.equal(toHex(encode(msg.ping(5))), "82a174a470696e67a56e6f6e636505");
  const full = fromHex(
    "85a174a56572726f72a4636f646506a76d657373616765ac726f6f6d2069732066756c6ca5666174616cc2a3726566a46a6f696e",
  );
  // The old 52 bytes (no retry_after) decode with the default...
  assert.deepEqual(decodeServerMessage(full), msg.error(6, "room is full", { ref: "join" }));
  // ...and today's encoder writes 73, the sixth key appended.
  const now = encode(msg.error(6, "room is full", { ref: "join" }));
  assert.equal(now.length, 73);
  assert.equal(toHex(now), "86" + toHex(full).slice(2) + "ab72657472795f6166746572cb0000000000000000");
  const busy = encode(msg.error(13, "server is busy checking logins; try again in 0.5 s", { fatal: true, ref: "hello", retryAfter: 0.5 }));
  assert.equal(busy.length, 113);
  assert.ok(toHex(busy).endsWith("cb3fe0000000000000"));
  // MOVED (PROTOCOL.md 3.14): 120 bytes; `location` is written only when set.
  const moved = encode(msg.error(14, "the room is served by 10.0.0.2:7878", { fatal: true, ref: "join", location: "10.0.0.2:7878" }));
  assert.equal(moved.length, 120);
  assert.ok(toHex(moved).endsWith("a86c6f636174696f6ead31302e302e302e323a37383738"));
  assert.equal((decodeServerMessage(moved) as { location: string }).location, "10.0.0.2:7878");
  const peer = encode(msg.peer(0xa1a1a1a1, new Uint8Array(49)));
  assert.equal(peer.length, 72);
  assert.equal(toHex(peer.slice(0, 23)), "83a174a470656572a2746fcea1a1a1a1a464617461c431");
});

test("every message round-trips, on its own side only", () => {
  for (const m of CLIENT) {
    assert.deepEqual(decodeClientMessage(encode(m)), m);
    assert.throws(() => decodeServerMessage(encode(m)), new RegExp(`Invalid value '${m.t}' - at \`\\$.t\``));
  }
  for (const m of SERVER) {
    assert.deepEqual(decodeServerMessage(encode(m)), m);
    assert.throws(() => decodeClientMessage(encode(m)), DecodeError);
  }
});

test("every truncation of every message is a DecodeError", () => {
  for (const m of [...CLIENT, ...SERVER]) {
    const data = encode(m);
    const decodeJs = CLIENT.includes(m as ClientMessage) ? decodeClientMessage : decodeServerMessage;
    for (let n = 0; n < data.length; n++) assert.throws(() => decodeJs(data.slice(0, n)), DecodeError, `${m.t} cut at ${n}`);
  }
});

test("the encoder refuses what the peer would refuse", () => {
  assert.throws(() => encode(msg.create("")), LocalProtocolError);
  assert.throws(() => encode(msg.join("ABCDEF0123456789")), /matching regex/);
  assert.throws(() => encode(msg.say(new Uint8Array(8257))), /<= 8256/);
  assert.throws(() => encode(msg.peer(2 ** 32, new Uint8Array(1))), /<= 4294967295/);
  assert.throws(() => encode(msg.ping(1.5)), /bad value/);
  assert.throws(() => encode({ t: "nope" } as unknown as Message), /unknown message type/);
});

// Raw maps for the hostile cases; each is checked against Python's words below.
function raw(build: (w: MpWriter) => void): Uint8Array {
  const w = new MpWriter();
  build(w);
  return w.bytes();
}
const ping = (nonce: (w: MpWriter) => void) => raw((w) => (w.mapHeader(2).str("t").str("ping").str("nonce"), nonce(w)));
const HOSTILE_CLIENT: [string, Uint8Array][] = [
  ["not msgpack", Uint8Array.of(0xc1)],
  ["empty", new Uint8Array(0)],
  ["an int", Uint8Array.of(5)],
  ["an array", Uint8Array.of(0x91, 1)],
  ["no tag", raw((w) => w.mapHeader(1).str("x").int(1))],
  ["server tag", raw((w) => w.mapHeader(1).str("t").str("welcome"))],
  ["unknown tag", raw((w) => w.mapHeader(1).str("t").str("nope"))],
  ["int tag", raw((w) => w.mapHeader(1).str("t").int(5))],
  ["missing field", raw((w) => w.mapHeader(1).str("t").str("ping"))],
  ["str for int", ping((w) => w.str("a"))],
  ["negative", ping((w) => w.int(-1))],
  ["over u63", ping((w) => w.int(2n ** 63n))],
  ["bool for int", ping((w) => w.bool(true))],
  ["float for int", ping((w) => w.float(1))],
  ["nil for int", ping((w) => w.nil())],
  ["empty say", raw((w) => w.mapHeader(2).str("t").str("say").str("data").bin(new Uint8Array(0)))],
  ["str for bytes", raw((w) => w.mapHeader(2).str("t").str("say").str("data").str("abc"))],
  ["long say", raw((w) => w.mapHeader(2).str("t").str("say").str("data").bin(new Uint8Array(8257)))],
  ["bad room id", raw((w) => w.mapHeader(2).str("t").str("join").str("room_id").str("ABC"))],
  ["long name", raw((w) => w.mapHeader(2).str("t").str("create").str("name").str("x".repeat(65)))],
  ["long join token", raw((w) => w.mapHeader(3).str("t").str("join").str("room_id").str("0123456789abcdef").str("token").bin(new Uint8Array(33)))],
  ["short rotate token", raw((w) => w.mapHeader(3).str("t").str("rotate").str("room_id").str("0123456789abcdef").str("token").bin(new Uint8Array(0)))],
  ["long kick user", raw((w) => w.mapHeader(3).str("t").str("kick").str("room_id").str("0123456789abcdef").str("user").str("x".repeat(65)))],
  ["empty unban user", raw((w) => w.mapHeader(3).str("t").str("unban").str("room_id").str("0123456789abcdef").str("user").str(""))],
  ["bitrate", raw((w) => w.mapHeader(3).str("t").str("create").str("name").str("x").str("max_bitrate").int(510001))],
  ["to", raw((w) => w.mapHeader(3).str("t").str("peer").str("to").int(2 ** 32).str("data").bin(new Uint8Array(1)))],
  ["trailing", concat(encode(msg.ping(1)), Uint8Array.of(0))],
  ["truncated", encode(msg.ping(1)).slice(0, -2)],
  ["int key", raw((w) => w.mapHeader(3).int(1).int(2).str("t").str("ping").str("nonce").int(1))],
  ["bin key", raw((w) => w.mapHeader(2).str("t").str("ping").bin(Uint8Array.of(0x6e)).int(1))],
  ["bad utf-8", concat(Uint8Array.of(0x82, 0xa1, 0x74, 0xa4), Uint8Array.of(0x70, 0x69, 0x70, 0xc3))],
  ["deep", concat(fromHex("83a174a470696e67a56e6f6e636501a178"), new Uint8Array(2000).fill(0x91), Uint8Array.of(1))],
];
const joined = (you: (w: MpWriter) => void, members: (w: MpWriter) => void = (w) => w.arrayHeader(0)) =>
  raw((w) => {
    w.mapHeader(5).str("t").str("joined").str("room_id").str("0123456789abcdef").str("name").str("n").str("you");
    you(w);
    w.str("members");
    members(w);
  });
const err = (extra: (w: MpWriter) => void, n: number) =>
  raw((w) => {
    w.mapHeader(3 + n).str("t").str("error").str("code").int(1).str("message").str("m");
    extra(w);
  });
const HOSTILE_SERVER: [string, Uint8Array][] = [
  ["long ban list", raw((w) => { w.mapHeader(3).str("t").str("bans").str("room_id").str("0123456789abcdef").str("users").arrayHeader(501); for (let i = 0; i < 501; i++) w.str("b"); })],
  ["short secret", raw((w) => w.mapHeader(5).str("t").str("welcome").str("session_id").int(1).str("user").str("u").str("server_version").str("v").str("media_secret").bin(new Uint8Array(31)))],
  ["long secret", raw((w) => w.mapHeader(5).str("t").str("welcome").str("session_id").int(1).str("user").str("u").str("server_version").str("v").str("media_secret").bin(new Uint8Array(33)))],
  ["negative retry", err((w) => w.str("retry_after").float(-1), 1)],
  ["nan retry", err((w) => w.str("retry_after").float(NaN), 1)],
  ["long retry", err((w) => w.str("retry_after").float(3600.5), 1)],
  ["int fatal", err((w) => w.str("fatal").int(1), 1)],
  ["member missing nick", joined((w) => w.mapHeader(2).str("session_id").int(1).str("user").str("u"))],
  ["member as array", joined((w) => w.arrayHeader(3).int(1).str("u").str("n"))],
  ["members as map", joined((w) => w.mapHeader(3).str("session_id").int(1).str("user").str("u").str("nick").str("n"), (w) => w.mapHeader(0))],
  ["bad member id", joined((w) => w.mapHeader(3).str("session_id").int(1).str("user").str("u").str("nick").str("n"), (w) => w.arrayHeader(1).mapHeader(3).str("session_id").int(-1).str("user").str("u").str("nick").str("n"))],
  ["client tag", encode(msg.bye())],
  ["short token", raw((w) => w.mapHeader(2).str("t").str("token").str("token").bin(new Uint8Array(31)))],
  ["long token", raw((w) => w.mapHeader(2).str("t").str("token").str("token").bin(new Uint8Array(33)))],
  ["no token", raw((w) => w.mapHeader(1).str("t").str("token"))],
  ["rooms not a list", raw((w) => w.mapHeader(2).str("t").str("rooms").str("rooms").mapHeader(0))],
  ["room without owner", raw((w) => w.mapHeader(2).str("t").str("rooms").str("rooms").arrayHeader(1).mapHeader(3).str("room_id").str("0123456789abcdef").str("name").str("n").str("members").int(1))],
  ["too many rooms", raw((w) => {
    w.mapHeader(2).str("t").str("rooms").str("rooms").arrayHeader(1001);
    for (let i = 0; i < 1001; i++) w.mapHeader(4).str("room_id").str("0123456789abcdef").str("name").str("").str("owner").str("").str("members").int(0);
  })],
];

const py = new PythonPeer("interop_wire.py");
after(() => py.close());

for (const [side, cases] of [["client", HOSTILE_CLIENT], ["server", HOSTILE_SERVER]] as const) {
  test(`hostile ${side} messages fail as in Python, with the same words`, async () => {
    const decodeJs = side === "client" ? decodeClientMessage : decodeServerMessage;
    for (const [name, data] of cases) {
      const reply = await py.tryCall({ op: "control_decode", side, data: toHex(data) });
      assert.equal(reply.type, "DecodeError", `${name}: Python decoded it`);
      assert.throws(() => decodeJs(data), (e) => e instanceof DecodeError && e.message === reply.error, `${name}: ${String(reply.error)}`);
    }
  });
}

test("accepted oddities agree: unknown keys, ints for floats, tag anywhere", async () => {
  const cases: [string, Uint8Array][] = [
    ["unknown keys", raw((w) => w.mapHeader(4).str("t").str("ping").str("nonce").int(1).str("x").arrayHeader(2).int(1).mapHeader(1).int(1).int(2).str("y").nil())],
    ["tag last", raw((w) => w.mapHeader(2).str("nonce").int(1).str("t").str("ping"))],
    ["uint8 form", raw((w) => w.mapHeader(2).str("t").str("ping").str("nonce").int(200))],
    ["huge version", raw((w) => w.mapHeader(4).str("t").str("hello").str("version").int(2n ** 64n - 1n).str("user").str("a").str("password").str(""))],
  ];
  for (const [name, data] of cases) {
    const reply = await py.call({ op: "control_decode", side: "client", data: toHex(data) });
    assert.equal(JSON.stringify(reply.message), JSON.stringify(toPy(decodeClientMessage(data))), name);
  }
  const intRetry = err((w) => w.str("retry_after").int(5), 1);
  assert.equal(decodeServerMessage(intRetry).t === "error" && (decodeServerMessage(intRetry) as { retryAfter: number }).retryAfter, 5);
  assert.equal((await py.call({ op: "control_decode", side: "server", data: toHex(intRetry) })).error, undefined);
});

// JSON of Python's interop script: snake_case keys, bytes as {"$bytes": hex}.
function toPy(v: unknown): unknown {
  if (v instanceof Uint8Array) return { $bytes: toHex(v) };
  if (Array.isArray(v)) return v.map(toPy);
  if (typeof v === "object" && v !== null) {
    // An error's empty `location` is not written, so Python has no key for it.
    const entries = Object.entries(v).filter(([k, x]) => !(k === "location" && x === ""));
    return Object.fromEntries(entries.map(([k, x]) => [k.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase()), toPy(x)]));
  }
  return v;
}

test("every message type: encoded by JS, decoded by Python, and back", async () => {
  for (const m of [...CLIENT, ...SERVER]) {
    const side = CLIENT.includes(m as ClientMessage) ? "client" : "server";
    const decoded = await py.call({ op: "control_decode", side, data: toHex(encode(m)) });
    assert.deepEqual(decoded.message, toPy(m), m.t);
    const theirs = await py.call({ op: "control_encode", message: toPy(m) });
    assert.equal(theirs.data, toHex(encode(m)), `${m.t}: the same bytes`);
  }
});

test("every msgpack int, str and bin form is written as msgspec writes it", async () => {
  const ints = [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1];
  const strs = ["", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "x".repeat(65536), "é😀"];
  const messages: ServerMessage[] = [
    ...ints.map((code) => msg.error(code, "m")),
    ...strs.map((message) => msg.error(1, message)),
    ...[1, 255, 256, 4096].map((n): ServerMessage => ({ t: "peer_from", sender: 1, data: new Uint8Array(n) })),
    { t: "joined", roomId: "0123456789abcdef", name: "n", you: member(1, "u"), members: Array.from({ length: 16 }, (_, i) => member(i, "u")), maxBitrate: 0 },
  ];
  for (const m of messages) {
    const theirs = await py.call({ op: "control_encode", message: toPy(m) });
    assert.equal(theirs.data, toHex(encode(m)), JSON.stringify(toPy(m)).slice(0, 80));
    assert.deepEqual(decodeServerMessage(fromHex(theirs.data as string)), m);
  }
});
