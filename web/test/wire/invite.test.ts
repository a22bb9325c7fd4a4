import { test, after } from "node:test";
import assert from "node:assert/strict";
import { blake2s } from "@noble/hashes/blake2.js";
import { concat, fromHex, toHex, u16, utf8 } from "../../src/wire/bytes.ts";
import { InviteError } from "../../src/wire/errors.ts";
import { ALPHABET, Invite, normalizeHost } from "../../src/wire/invite.ts";
import { PythonPeer } from "../python.ts";

const EXAMPLE =
  "bangor:044pr-vv3c5-p6gvv-kegev-00938-nkrka-ydxw0-00000-00000-00000-00000-00000-00820-c20a1-g7104-gm2rc-1m70z-rqxve-n0";
const fp = Uint8Array.from({ length: 16 }, (_, i) => i);
const example = () => new Invite("LocalHost", 7600, fromHex("0123456789abcdef"), new Uint8Array(16), fp);

test("the worked example of PROTOCOL.md 7.2", () => {
  const inv = example();
  assert.equal(inv.host, "localhost");
  assert.equal(
    toHex(inv.toBytes()),
    "01096c6f63616c686f73741db00123456789abcdef00000000000000000000000000000000000102030405060708090a0b0c0d0e0fe2fddbaa",
  );
  assert.equal(inv.encode(), EXAMPLE);
  const back = Invite.parse(EXAMPLE);
  assert.deepEqual([back.host, back.port, back.roomIdHex, toHex(back.secret), toHex(back.fingerprint)], [
    "localhost",
    7600,
    "0123456789abcdef",
    "00".repeat(16),
    toHex(fp),
  ]);
  assert.ok(!back.toString().includes("0000000000000000"), "the secret stays out of toString");
});

test("parsing forgives case, spaces, dashes, a missing colon and look-alikes", () => {
  const code = EXAMPLE.slice("bangor:".length);
  for (const text of [
    EXAMPLE.toUpperCase(),
    ` ${EXAMPLE.replace(/-/g, " ")}\n`,
    "bangor" + code,
    code,
    code.replace(/0/g, "o").replace(/1/g, "l"),
    code.replace(/1/g, "I"),
  ]) {
    assert.equal(Invite.parse(text).encode(), EXAMPLE, text);
  }
});

function codeOf(data: Uint8Array): string {
  let bits = "";
  for (const b of data) bits += b.toString(2).padStart(8, "0");
  while (bits.length % 5) bits += "0";
  let out = "";
  for (let i = 0; i < bits.length; i += 5) out += ALPHABET[parseInt(bits.slice(i, i + 5), 2)];
  return out;
}

function withSum(body: Uint8Array): Uint8Array {
  return concat(body, blake2s(concat(utf8.encode("bangor invite"), body)).slice(0, 4));
}

function err(text: string, message: string): void {
  assert.throws(() => Invite.parse(text), (e) => e instanceof InviteError && e.message === message, `${text} -> ${message}`);
}

test("every error of PROTOCOL.md 7.4, in order", () => {
  const good = example().toBytes();
  const code = codeOf(good);
  err("", "invite code is empty");
  err(" - bangor: ", "invite code is empty");
  err(code.slice(0, 10) + "u" + code.slice(11), "invite code has invalid characters");
  err("bangor:" + code + ".", "invite code has invalid characters");
  err("0", "invite code is truncated"); // fewer than 2 bytes
  err("044", "invite code is truncated");
  for (const n of [4, 20, 60, code.length - 1]) err(code.slice(0, n), "invite code is truncated");
  const typo = code.slice(0, 20) + (code[20] === "a" ? "b" : "a") + code.slice(21);
  err(typo, "invite code checksum does not match (mistyped or tampered)");
  err(code + "0", "invite code checksum does not match (mistyped or tampered)"); // a spare character
  const bad = Uint8Array.from(good);
  bad[0] = 2;
  err(codeOf(withSum(bad.slice(0, -4))), "unsupported invite version 2");
  const longer = withSum(concat(good.slice(0, -4), new Uint8Array([0])));
  err(codeOf(longer), "invite code is malformed");
  const noHost = withSum(concat(Uint8Array.of(1, 0), new Uint8Array(2 + 8 + 16 + 16 + 1)));
  err(codeOf(noHost), "invite code is malformed");
  const host = (h: Uint8Array, port = 7600) =>
    codeOf(withSum(concat(Uint8Array.of(1, h.length), h, u16(port), new Uint8Array(40))));
  err(host(utf8.encode("bad host")), "invite code has a bad host");
  err(host(Uint8Array.of(0x68, 0xe9)), "invite code has a bad host");
  err(host(utf8.encode("a..b")), "invite code has a bad host");
  err(host(utf8.encode("ok"), 0), "invite code has a bad port");
  assert.equal(Invite.parse(host(utf8.encode("[::0001]"))).host, "::1");
});

test("constructor checks", () => {
  assert.throws(() => new Invite("h", 0, new Uint8Array(8), new Uint8Array(16), fp), /bad port/);
  assert.throws(() => new Invite("h", 1, new Uint8Array(7), new Uint8Array(16), fp), /room id must be 8 bytes/);
  assert.throws(() => new Invite("h", 1, new Uint8Array(8), new Uint8Array(15), fp), /secret must be 16 bytes/);
  assert.throws(() => new Invite("h", 1, new Uint8Array(8), new Uint8Array(16), fp.slice(1)), /fingerprint must be 16 bytes/);
  assert.throws(() => new Invite("x".repeat(254), 1, new Uint8Array(8), new Uint8Array(16), fp), /bad host/);
});

// -- against Python -------------------------------------------------------------------

const py = new PythonPeer("interop_wire.py");
after(() => py.close());

const HOSTS = [
  "LocalHost",
  "a.b.",
  "-a.com",
  "a".repeat(63) + ".com",
  "127.1",
  "127.0.0.01",
  "10.0.0.255",
  "::ffff:1.2.3.4",
  "[::0001]",
  "Bücher.de",
  "ÄÖ.com",
  "fe80::1%eth0",
  "a_b.c",
  "1::2:3:4:5:6:7",
  "0:0:1:0:0:0:1:0",
  "::",
  "A:B::C",
  "2001:DB8:0:0:1:0:0:1",
  ("x".repeat(62) + ".").repeat(4) + "x",
];
const BAD_HOSTS = ["a..b", ".a", "", "[]", "a".repeat(64) + ".com", "x".repeat(254), "a b", "a/b", "1:2:3:4:5:6:7:8:9"];

test("normalizeHost agrees with Python", async () => {
  for (const h of HOSTS) {
    const reply = await py.call({ op: "normalize_host", host: h });
    assert.equal(normalizeHost(h), reply.host, h);
  }
  for (const h of BAD_HOSTS) {
    const reply = await py.tryCall({ op: "normalize_host", host: h });
    assert.equal(reply.type, "InviteError", h);
    assert.throws(() => normalizeHost(h), InviteError, h);
  }
});

test("invites made by Python parse in JS, and the other way", async () => {
  for (const [i, h] of HOSTS.entries()) {
    const fields = {
      host: h,
      port: 1 + i * 3000,
      room_id: toHex(Uint8Array.from({ length: 8 }, (_, k) => k * i)),
      secret: toHex(Uint8Array.from({ length: 16 }, (_, k) => 255 - k - i)),
      fingerprint: toHex(Uint8Array.from({ length: 16 }, (_, k) => k + i)),
    };
    const made = await py.call({ op: "invite_encode", ...fields });
    const inv = Invite.parse(made.code as string);
    assert.deepEqual([inv.host, inv.port, inv.roomIdHex, toHex(inv.secret), toHex(inv.fingerprint)], [
      made.host,
      fields.port,
      fields.room_id,
      fields.secret,
      fields.fingerprint,
    ]);
    const mine = new Invite(h, fields.port, fromHex(fields.room_id), fromHex(fields.secret), fromHex(fields.fingerprint));
    assert.equal(mine.encode(), made.code, h);
    const parsed = await py.call({ op: "invite_parse", text: mine.encode() });
    assert.equal(parsed.host, inv.host);
  }
  assert.equal((await py.call({ op: "invite_parse", text: example().encode() })).host, "localhost");
});

test("Python and JS refuse the same broken codes with the same words", async () => {
  const code = EXAMPLE.slice(7).replace(/-/g, "");
  const cases = ["", "u", "0", code.slice(0, 30), code.slice(0, -1), code + "0", code.slice(0, 9) + "z" + code.slice(10), "bangor:" + code + "!"];
  // Not meant as invites (no prefix, not starting with "0"): said so, as invite.py does.
  cases.push("hello", "https://example.com/", "z" + code.slice(1), "o" + code.slice(1, 30), "bangor:u");
  for (const text of cases) {
    const reply = await py.tryCall({ op: "invite_parse", text });
    assert.equal(reply.type, "InviteError", text);
    assert.throws(() => Invite.parse(text), (e) => e instanceof InviteError && e.message === reply.error, text);
  }
});

test("review: a huge pasted code is refused in linear time", () => {
  // The base32 decoder used to shift one BigInt per character: quadratic, 200 000
  // characters took seconds and a million froze the tab (an invite can come from a link).
  const start = performance.now();
  assert.throws(() => Invite.parse("bangor:" + "z".repeat(1_000_000)), InviteError);
  assert.ok(performance.now() - start < 2000, `took ${performance.now() - start} ms`);
});
