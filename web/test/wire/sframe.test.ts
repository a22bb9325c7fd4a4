import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { concat, fromHex, toHex, utf8 } from "../../src/wire/bytes.ts";
import { LocalProtocolError, PacketError } from "../../src/wire/errors.ts";
import {
  AES_128_GCM_SHA256_128,
  SFrameContext,
  SFrameHeader,
  SFrameKey,
  deriveKeySalt,
  expandLabel,
  extract,
  makeKid,
  parseHeader,
  ratchet,
  splitKid,
} from "../../src/wire/sframe.ts";

// The vectors hold uint64 values beyond 2**53: quote them before JSON.parse loses digits.
const raw = readFileSync(fileURLToPath(new URL("../../../tests/data/sframe_vectors.json", import.meta.url)), "utf8");
const VECTORS = JSON.parse(raw.replace(/"(kid|ctr)": (\d+)/g, '"$1": "$2"')) as {
  header: { kid: string; ctr: string; encoded: string }[];
  sframe: Record<string, string | number>[];
};
const KEY = Uint8Array.from({ length: 16 }, (_, i) => i);

test("RFC 9605 header vectors encode, parse, and truncations are refused", () => {
  assert.equal(VECTORS.header.length, 289);
  for (const v of VECTORS.header) {
    const kid = BigInt(v.kid);
    const ctr = BigInt(v.ctr);
    const encoded = fromHex(v.encoded);
    const header = new SFrameHeader(kid, ctr);
    assert.equal(toHex(header.serialize()), v.encoded);
    const [parsed, size] = SFrameHeader.parse(concat(encoded, fromHex("aa55")));
    assert.equal(parsed.kid, kid);
    assert.equal(parsed.ctr, ctr);
    assert.equal(size, encoded.length);
    assert.equal(toHex(new SFrameKey(kid, KEY).header(ctr)), v.encoded);
    for (let n = 0; n < encoded.length; n++) {
      assert.throws(() => parseHeader(encoded.subarray(0, n)), (e: unknown) => e instanceof PacketError && /truncated/.test(e.message));
    }
  }
});

test("non-minimal headers and out-of-range values are refused", () => {
  assert.throws(() => parseHeader(fromHex("8805")), /KID not minimally encoded/); // KID 5 extended
  assert.throws(() => parseHeader(fromHex("900001")), /KID not minimally encoded/); // leading zero
  assert.throws(() => parseHeader(fromHex("0805")), /CTR not minimally encoded/);
  assert.throws(() => parseHeader(fromHex("090010")), /CTR not minimally encoded/);
  assert.throws(() => new SFrameHeader(-1n, 0n), LocalProtocolError);
  assert.throws(() => new SFrameHeader(0n, 1n << 64n), LocalProtocolError);
});

test("RFC 9605 AES_128_GCM_SHA256_128 encryption vector", async () => {
  const vecs = VECTORS.sframe.filter((v) => v.cipher_suite === AES_128_GCM_SHA256_128.suiteId);
  assert.equal(vecs.length, 1);
  for (const v of vecs) {
    const kid = BigInt(v.kid as string);
    const ctr = BigInt(v.ctr as string);
    const base = fromHex(v.base_key as string);
    assert.equal(toHex(extract(base)), v.sframe_secret);
    const [key, salt] = deriveKeySalt(base, kid);
    assert.equal(toHex(key), v.sframe_key);
    assert.equal(toHex(salt), v.sframe_salt);
    const k = new SFrameKey(kid, base);
    assert.equal(toHex(k.nonce(ctr)), v.nonce);
    const frame = await k.seal(ctr, fromHex(v.metadata as string), fromHex(v.pt as string));
    assert.equal(toHex(frame), v.ct);
    const { size } = parseHeader(frame);
    const pt = await k.open(ctr, frame.subarray(0, size), fromHex(v.metadata as string), frame.subarray(size));
    assert.equal(toHex(pt), v.pt);
  }
});

test("PROTOCOL 8.10 worked bytes: voice and chat frames, ratchet", async () => {
  const base = Uint8Array.from({ length: 32 }, (_, i) => i);
  const secret = extract(base);
  const voiceKey = expandLabel(secret, utf8.encode("bangor/1 voice"), 32);
  assert.equal(toHex(voiceKey), "3668bca1774b1adf1c7b7e21256ad87ae79dc67194ba5ee8eed5d920741f2d71");
  const kid = makeKid(0n, 1, 2);
  assert.equal(kid, 0x0102n);
  const [key, salt] = deriveKeySalt(voiceKey, kid);
  assert.equal(toHex(key), "25af703c76d78d4a3c1e41b1bc6483cf");
  assert.equal(toHex(salt), "61fb3dc899000a9a91a50373");
  const k = new SFrameKey(kid, voiceKey);
  assert.equal(toHex(k.nonce(5n)), "61fb3dc899000a9a91a50376");
  const room = fromHex("0123456789abcdef");
  const meta = concat(utf8.encode("bangor/1 voice "), room, fromHex("b2175c32"));
  assert.equal(meta.length, 27);
  const frame = await k.seal(5n, meta, fromHex("00000005000000f8fffe"));
  assert.equal(toHex(frame), "950102404cf0f4e569dd27b6912f3e355f48564bbfde35999c80988a95");

  const chatKey = expandLabel(secret, utf8.encode("bangor/1 chat"), 32);
  assert.equal(toHex(chatKey), "49f87757b2b022a307a4f37a9ad74fc79454b677a49db64317aa37c2f6616362");
  const ck = new SFrameKey(kid, chatKey);
  const chatMeta = concat(utf8.encode("bangor/1 chat "), room, fromHex("b2175c32"));
  const chat = await ck.seal(0n, chatMeta, fromHex("82a373657103a474657874a26869"));
  assert.equal(toHex(chat), "900102efa23f3faddade4c334608c0d096ce5e7a1952147519" + "8e5f6b97d39fa6c3");
  assert.equal(toHex(ratchet(base)), "1e31370b2f041d5c893dbba4b27bc3e67956a51ae6221a427445cab04059fd65");
});

test("KID layout", () => {
  assert.deepEqual(splitKid(makeKid(3n, 255, 7)), [3n, 255, 7]);
  assert.throws(() => makeKid(0n, 256, 0), LocalProtocolError);
  assert.throws(() => makeKid(0n, 0, 256), LocalProtocolError);
  assert.throws(() => makeKid(1n << 48n, 0, 0), LocalProtocolError);
});

test("context: round trip, tamper, replay, wrong metadata, unknown KID", async () => {
  const send = new SFrameContext();
  const recv = new SFrameContext();
  send.addSendKey(7n, KEY);
  recv.addReceiveKey(7n, KEY);
  const meta = utf8.encode("m");
  const frames = [];
  for (let i = 0; i < 10; i++) frames.push(await send.encrypt(7n, meta, utf8.encode(`f${i}`)));
  // Out of order, then a replay.
  for (const i of [3, 0, 9, 1]) {
    const [kid, pt] = await recv.decrypt(meta, frames[i] as Uint8Array);
    assert.equal(kid, 7n);
    assert.equal(utf8.decode(pt), `f${i}`);
  }
  await assert.rejects(recv.decrypt(meta, frames[3] as Uint8Array), /replayed SFrame counter/);
  const bad = Uint8Array.from(frames[4] as Uint8Array);
  bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
  await assert.rejects(recv.decrypt(meta, bad), /SFrame authentication failed/);
  // The forgery did not move the window: the real frame still opens.
  await recv.decrypt(meta, frames[4] as Uint8Array);
  await assert.rejects(recv.decrypt(utf8.encode("n"), frames[5] as Uint8Array), PacketError);
  await assert.rejects(recv.decrypt(meta, (frames[6] as Uint8Array).subarray(0, 10)), /shorter than the tag/);
  await assert.rejects(recv.decrypt(meta, new Uint8Array(0)), /empty frame/);
  const other = new SFrameContext();
  other.addSendKey(8n, KEY);
  await assert.rejects(recv.decrypt(meta, await other.encrypt(8n, meta, meta)), /unknown SFrame key id/);
  // Nonce reuse guards.
  send.removeSendKey(7n);
  assert.throws(() => send.addSendKey(7n, KEY), /already used/);
  assert.throws(() => recv.addReceiveKey(7n, new Uint8Array(16)), /other key material/);
  recv.addReceiveKey(7n, KEY); // same key: kept
  assert.throws(() => send.addSendKey(9n, new Uint8Array(15)), /at least 16/);
  const limited = new SFrameContext(undefined, { sendLimit: 1n });
  limited.addSendKey(1n, KEY);
  await limited.encrypt(1n, meta, meta);
  assert.throws(() => limited.encrypt(1n, meta, meta), /exhausted/);
});
