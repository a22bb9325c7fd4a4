import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { fromHex, toHex } from "../../src/wire/bytes.ts";
import { HandshakeError, LocalProtocolError } from "../../src/wire/errors.ts";
import {
  CipherState,
  HandshakeState,
  NoiseAuthError,
  PROTOCOL_XX,
  PROTOCOL_XXPSK3,
  generatePrivateKey,
  hkdf,
  hmacHash,
  publicKey,
  type Pattern,
} from "../../src/wire/noise.ts";
import { PythonPeer } from "../python.ts";

interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_psks?: string[];
  init_static: string;
  init_ephemeral: string;
  resp_prologue: string;
  resp_psks?: string[];
  resp_static: string;
  resp_ephemeral: string;
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
}

const vectorsPath = fileURLToPath(new URL("../../../tests/data/noise_vectors.json", import.meta.url));
const vectors = (JSON.parse(readFileSync(vectorsPath, "utf8")) as { vectors: Vector[] }).vectors;
const patternOf: Record<string, Pattern> = { [PROTOCOL_XX]: "XX", [PROTOCOL_XXPSK3]: "XXpsk3" };

test("the vector file has the XX and XXpsk3 cases", () => {
  const names = vectors.map((v) => v.protocol_name).filter((n) => n in patternOf);
  assert.deepEqual(names.sort(), [PROTOCOL_XX, PROTOCOL_XXPSK3]);
});

for (const v of vectors.filter((x) => x.protocol_name in patternOf)) {
  test(`cacophony vector ${v.protocol_name}`, () => {
    const pattern = patternOf[v.protocol_name] as Pattern;
    const psk = (list?: string[]) => (list?.[0] === undefined ? undefined : fromHex(list[0]));
    const init = new HandshakeState({
      pattern,
      initiator: true,
      staticPrivate: fromHex(v.init_static),
      ephemeralPrivate: fromHex(v.init_ephemeral),
      prologue: fromHex(v.init_prologue),
      psk: psk(v.init_psks),
    });
    const resp = new HandshakeState({
      pattern,
      initiator: false,
      staticPrivate: fromHex(v.resp_static),
      ephemeralPrivate: fromHex(v.resp_ephemeral),
      prologue: fromHex(v.resp_prologue),
      psk: psk(v.resp_psks),
    });
    let i = 0;
    for (; i < 3; i++) {
      const m = v.messages[i]!;
      const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init];
      const ct = w.writeMessage(fromHex(m.payload));
      assert.equal(toHex(ct), m.ciphertext, `handshake message ${i}`);
      assert.equal(toHex(r.readMessage(ct)), m.payload);
    }
    assert.ok(init.isComplete && resp.isComplete);
    assert.equal(toHex(init.getHandshakeHash()), v.handshake_hash);
    assert.equal(toHex(resp.getHandshakeHash()), v.handshake_hash);
    assert.deepEqual(init.remoteStatic, publicKey(fromHex(v.resp_static)));
    assert.deepEqual(resp.remoteStatic, publicKey(fromHex(v.init_static)));
    const ti = init.transport();
    const tr = resp.transport();
    for (; i < v.messages.length; i++) {
      const m = v.messages[i]!;
      // Messages keep alternating after the handshake: initiator on even indices.
      const [w, r] = i % 2 === 0 ? [ti, tr] : [tr, ti];
      const ct = w.send.encrypt(fromHex(m.payload));
      assert.equal(toHex(ct), m.ciphertext, `transport message ${i}`);
      assert.equal(toHex(r.receive.decrypt(ct)), m.payload);
    }
  });
}

test("HMAC-BLAKE2s (64-byte block) and HKDF agree with node's OpenSSL", () => {
  for (const keyLen of [0, 32, 64, 100]) {
    const key = new Uint8Array(keyLen).fill(1);
    const data = new TextEncoder().encode("abc");
    assert.equal(toHex(hmacHash(key, data)), createHmac("blake2s256", key).update(data).digest("hex"));
  }
  const ck = new Uint8Array(32).fill(3);
  const ikm = new Uint8Array([4, 5]);
  const temp = createHmac("blake2s256", ck).update(ikm).digest();
  const o1 = createHmac("blake2s256", temp).update(Uint8Array.of(1)).digest();
  const o2 = createHmac("blake2s256", temp).update(Buffer.concat([o1, Uint8Array.of(2)])).digest();
  const o3 = createHmac("blake2s256", temp).update(Buffer.concat([o2, Uint8Array.of(3)])).digest();
  assert.deepEqual(hkdf(ck, ikm, 3).map(toHex), [o1, o2, o3].map((b) => b.toString("hex")));
});

function pair(pattern: Pattern, psk?: Uint8Array, prologue = new Uint8Array([1, 2])) {
  const i = new HandshakeState({ pattern, initiator: true, staticPrivate: generatePrivateKey(), prologue, psk });
  const r = new HandshakeState({ pattern, initiator: false, staticPrivate: generatePrivateKey(), prologue, psk });
  return [i, r] as const;
}

test("a psk mismatch fails at message 3 with HandshakeError and the state is dead", () => {
  const i = new HandshakeState({ pattern: "XXpsk3", initiator: true, staticPrivate: generatePrivateKey(), psk: new Uint8Array(32).fill(1) });
  const r = new HandshakeState({ pattern: "XXpsk3", initiator: false, staticPrivate: generatePrivateKey(), psk: new Uint8Array(32).fill(2) });
  r.readMessage(i.writeMessage());
  i.readMessage(r.writeMessage());
  const m3 = i.writeMessage();
  assert.throws(() => r.readMessage(m3), HandshakeError);
  assert.throws(() => r.readMessage(m3), LocalProtocolError);
});

test("a prologue mismatch fails at message 2", () => {
  const i = new HandshakeState({ pattern: "XX", initiator: true, staticPrivate: generatePrivateKey(), prologue: new Uint8Array([1]) });
  const r = new HandshakeState({ pattern: "XX", initiator: false, staticPrivate: generatePrivateKey(), prologue: new Uint8Array([2]) });
  r.readMessage(i.writeMessage());
  assert.throws(() => i.readMessage(r.writeMessage()), /noise handshake failed/);
});

test("truncated or tampered handshake messages are refused", () => {
  const [i, r] = pair("XX");
  const m1 = i.writeMessage();
  assert.throws(() => r.readMessage(m1.slice(0, 31)), /shorter than 32/);
  r.readMessage(m1); // the short one did not consume the state
  const m2 = r.writeMessage();
  assert.throws(() => i.readMessage(m2.slice(0, 95)), /shorter than 96/);
  const bad = Uint8Array.from(m2);
  bad[40]! ^= 1;
  assert.throws(() => i.readMessage(bad), HandshakeError);
});

test("a low-order ephemeral from the peer is a HandshakeError", () => {
  const [, r] = pair("XX");
  r.readMessage(new Uint8Array(32)); // the zero point: DH gives zero at "ee"
  assert.throws(() => r.writeMessage(), HandshakeError);
});

test("turns, psk rules and transport authentication", () => {
  const [i, r] = pair("XXpsk3", new Uint8Array(32));
  assert.throws(() => r.writeMessage(), /not our turn/);
  assert.throws(() => i.readMessage(new Uint8Array(48)), /not our turn/);
  assert.throws(() => i.split(), /not complete/);
  r.readMessage(i.writeMessage(new Uint8Array([7])));
  i.readMessage(r.writeMessage());
  r.readMessage(i.writeMessage());
  assert.throws(() => i.writeMessage(), /already complete/);
  const a = i.transport();
  const b = r.transport();
  const ct = a.send.encryptWithAd(new Uint8Array([9]), new Uint8Array([1, 2, 3]));
  assert.throws(() => b.receive.decryptWithAd(new Uint8Array([8]), ct), NoiseAuthError);
  assert.equal(b.receive.nonce, 0); // a failed decrypt does not move the nonce
  assert.deepEqual(b.receive.decryptWithAd(new Uint8Array([9]), ct), new Uint8Array([1, 2, 3]));
  assert.throws(() => b.receive.decrypt(new Uint8Array(15)), /shorter than its tag/);
  assert.throws(() => new HandshakeState({ pattern: "XXpsk3", initiator: true, staticPrivate: generatePrivateKey() }), /psk must be 32/);
  assert.throws(() => new HandshakeState({ pattern: "XX", initiator: true, staticPrivate: generatePrivateKey(), psk: new Uint8Array(32) }), /takes no psk/);
  const c = new CipherState(new Uint8Array(32));
  const before = c.encrypt(new Uint8Array(0));
  c.setNonce(0);
  c.rekey();
  assert.notDeepEqual(c.encrypt(new Uint8Array(0)), before);
});

// -- against Python's noiseprotocol -------------------------------------------------

const py = new PythonPeer("interop_noise.py");
after(() => py.close());

for (const pattern of ["XX", "XXpsk3"] as const) {
  for (const jsInitiator of [true, false]) {
    test(`${pattern} with Python, JS ${jsInitiator ? "initiator" : "responder"}`, async () => {
      const id = `${pattern}-${jsInitiator}`;
      const psk = pattern === "XXpsk3" ? new Uint8Array(32).fill(0x42) : undefined;
      const prologue = new TextEncoder().encode("bangor/1 test");
      const jsKey = generatePrivateKey();
      const pyKey = generatePrivateKey();
      const js = new HandshakeState({ pattern, initiator: jsInitiator, staticPrivate: jsKey, prologue, psk });
      await py.call({
        op: "new",
        id,
        protocol: pattern === "XX" ? PROTOCOL_XX : PROTOCOL_XXPSK3,
        initiator: !jsInitiator,
        prologue: toHex(prologue),
        static: toHex(pyKey),
        psk: psk === undefined ? undefined : toHex(psk),
      });
      for (let n = 0; n < 3; n++) {
        const payload = new Uint8Array([n, n, n]);
        if (js.isMyTurn) {
          const reply = await py.call({ op: "read", id, message: toHex(js.writeMessage(payload)) });
          assert.equal(reply.payload, toHex(payload));
        } else {
          const reply = await py.call({ op: "write", id, payload: toHex(payload) });
          assert.deepEqual(js.readMessage(fromHex(reply.message as string)), payload);
        }
      }
      const state = await py.call({ op: "state", id });
      assert.equal(state.finished, true);
      assert.equal(state.hash, toHex(js.getHandshakeHash()));
      assert.equal(state.rs, toHex(publicKey(jsKey)));
      assert.deepEqual(js.remoteStatic, publicKey(pyKey));
      const t = js.transport();
      for (let n = 0; n < 3; n++) {
        const msg = new TextEncoder().encode(`js to py ${n}`);
        const back = await py.call({ op: "decrypt", id, ciphertext: toHex(t.send.encrypt(msg)) });
        assert.equal(back.plaintext, toHex(msg));
        const reply = await py.call({ op: "encrypt", id, plaintext: toHex(new Uint8Array([n])) });
        assert.deepEqual(t.receive.decrypt(fromHex(reply.ciphertext as string)), new Uint8Array([n]));
      }
    });
  }
}
