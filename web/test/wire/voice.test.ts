import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PacketError } from "../../src/wire/errors.ts";
import { fromHex, toHex } from "../../src/wire/bytes.ts";
import {
  copiesOf,
  packRelayed,
  reachOf,
  parseVoiceFrame,
  serializeVoiceFrame,
  unpackRelayed,
  voiceFrame,
  type VoiceFrame,
} from "../../src/wire/voice.ts";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..", "..");

// The worked example of PROTOCOL.md 6.1 (info 0x0a: depth 2 << 2 | count 2).
const EXAMPLE = "00 00 00 07 01 02 0a 00 01 00 02 11 22 22 aa aa aa";

function py(request: object): any {
  const python = resolve(web, process.env.BANGOR_PYTHON ?? "../.venv/bin/python");
  const run = spawnSync(python, [resolve(here, "..", "interop_voice.py")], {
    input: JSON.stringify(request),
    env: { ...process.env, PYTHONPATH: resolve(web, "..", "src") },
    encoding: "utf8",
  });
  assert.ifError(run.error); // no Python at that path: set BANGOR_PYTHON
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

function asJson(f: VoiceFrame) {
  return {
    seq: f.seq,
    packet: f.packet,
    depth: f.depth,
    redundant: f.redundant.map(toHex),
    opus: toHex(f.opus),
    distances: [...f.distances],
    plan: [...f.plan],
    copies: copiesOf(f).map(([seq, r]) => [seq, toHex(r)]),
    reach: reachOf(f),
  };
}

// PROTOCOL.md 6.1's spread example: copies of ticks 8 and 4 back (info 0x1a, masks 0x88).
const SPREAD_EXAMPLE = "00 00 00 07 01 02 1a 88 88 00 01 00 02 11 22 22 aa aa aa";

const FRAMES = [
  voiceFrame(7, fromHex("aaaaaa"), 0x0102, [fromHex("11"), fromHex("2222")], 2),
  voiceFrame(0, fromHex("f8"), 0),
  voiceFrame(2 ** 32 - 1, fromHex("01020304"), 0xffff, [fromHex("05")], 3),
  voiceFrame(123456, new Uint8Array(300).fill(7), 42, [new Uint8Array(280).fill(1), new Uint8Array(290).fill(2), new Uint8Array(3).fill(3)], 3),
  voiceFrame(5, fromHex("99"), 1, [], 1),
  voiceFrame(7, fromHex("aaaaaa"), 0x0102, [fromHex("11"), fromHex("2222")], 2, [8, 4], [4, 8]),
  voiceFrame(1, fromHex("55"), 1, [], 2, [], [4, 8]),
  voiceFrame(20, fromHex("66"), 9, [fromHex("01"), fromHex("02"), fromHex("03")], 3, [8, 5, 3], [3, 5, 8]),
  voiceFrame(2, fromHex("77"), 3, [fromHex("01")], 1, [1], [1]),
];

// Malformed inputs and the message Python gives for each.
const MALFORMED: [string, string][] = [
  ["", "voice frame too short"],
  ["00000007010200", "voice frame too short"],
  ["0000000701022000aa", "voice frame has unknown flags"],
  ["0000000701021000aa", "voice frame too short"],
  ["00000007010219808000011122", "voice frame spread masks do not match its counts"],
  ["00000007010215010200011122", "voice frame spread masks do not match its counts"],
  ["00000007010216030100011122", "voice frame spread masks do not match its counts"],
  ["00000007010280aa", "voice frame has unknown flags"],
  ["000000070102010001", "voice frame too short for its redundancy"],
  ["000000070102020001", "voice frame too short for its redundancy"],
  ["0000000701020100001122", "voice frame redundancy lengths do not fit"],
  ["00000007010201000211aa", "voice frame redundancy lengths do not fit"],
  ["0000000701020100021122", "voice frame redundancy lengths do not fit"],
  ["00000007010202000100021122", "voice frame redundancy lengths do not fit"],
];

test("the worked example of PROTOCOL.md 6.1", () => {
  const frame = FRAMES[0]!;
  assert.equal(toHex(serializeVoiceFrame(frame)), EXAMPLE.replaceAll(" ", ""));
  const parsed = parseVoiceFrame(fromHex(EXAMPLE));
  assert.deepEqual(asJson(parsed), asJson(frame));
  assert.ok(Object.isFrozen(parsed));
});

test("the spread example of PROTOCOL.md 6.1 places copies by their real seq", () => {
  const frame = FRAMES[5]!;
  assert.equal(toHex(serializeVoiceFrame(frame)), SPREAD_EXAMPLE.replaceAll(" ", ""));
  const parsed = parseVoiceFrame(fromHex(SPREAD_EXAMPLE));
  assert.deepEqual(asJson(parsed), asJson(frame));
  assert.deepEqual(copiesOf(parsed).map(([seq, r]) => [seq, toHex(r)]), [[2 ** 32 - 1, "11"], [3, "2222"]]);
  assert.equal(reachOf(parsed), 8);
  assert.equal(reachOf(FRAMES[0]!), 2);
  assert.deepEqual(copiesOf(FRAMES[0]!).map(([seq]) => seq), [5, 6]);
  const bad: [number[], number[], number][] = [
    [[], [8, 4], 2], // plan not rising
    [[], [9], 1], // beyond MAX_SPREAD
    [[2, 4], [2, 4], 2], // copies not farthest first
    [[3], [2, 4], 2], // a copy outside the plan
  ];
  for (const [distances, plan, depth] of bad) {
    const copies = distances.map(() => fromHex("01"));
    assert.throws(() => serializeVoiceFrame(voiceFrame(10, fromHex("01"), 0, copies, depth, distances, plan)), RangeError);
  }
});

test("round trip and counters wrap", () => {
  for (const f of FRAMES) assert.deepEqual(asJson(parseVoiceFrame(serializeVoiceFrame(f))), asJson(f));
  const wrapped = parseVoiceFrame(serializeVoiceFrame(voiceFrame(2 ** 32 + 3, fromHex("01"), 2 ** 16 + 5)));
  assert.equal(wrapped.seq, 3);
  assert.equal(wrapped.packet, 5);
  assert.throws(() => serializeVoiceFrame(voiceFrame(1, fromHex("01"), 0, [], 4)), RangeError);
  const four = [fromHex("01"), fromHex("02"), fromHex("03"), fromHex("04")];
  assert.throws(() => serializeVoiceFrame(voiceFrame(1, fromHex("01"), 0, four, 3)), RangeError);
});

test("malformed frames raise PacketError with Python's messages", () => {
  for (const [hex, message] of MALFORMED) {
    assert.throws(() => parseVoiceFrame(fromHex(hex)), (e: unknown) => e instanceof PacketError && e.message === message, hex);
  }
});

test("relayed prefix", () => {
  const data = packRelayed(0xb2175c32, fromHex("abcd"));
  assert.equal(toHex(data), "b2175c32abcd");
  const { sender, payload } = unpackRelayed(data);
  assert.equal(sender, 0xb2175c32);
  assert.equal(toHex(payload), "abcd");
  for (const bad of ["", "b2175c32"]) {
    assert.throws(() => unpackRelayed(fromHex(bad)), (e: unknown) => e instanceof PacketError && e.message === "relayed voice payload too short");
  }
});

test("interop with Python's wire/voice.py, both directions", () => {
  const jsPacked = FRAMES.map((f) => toHex(serializeVoiceFrame(f)));
  const out = py({
    pack: FRAMES.map(asJson),
    parse: [...jsPacked, ...MALFORMED.map(([hex]) => hex)],
    relay: [{ sender: 0xb2175c32, payload: "abcd" }, { sender: 1, payload: "00" }],
    unrelay: ["b2175c32abcd", "00000001", ""],
  });
  // Python's bytes are JS's bytes, and each opens the other's.
  assert.deepEqual(out.packed, jsPacked);
  for (const [i, hex] of (out.packed as string[]).entries()) {
    assert.deepEqual(asJson(parseVoiceFrame(fromHex(hex))), asJson(FRAMES[i]!));
  }
  assert.deepEqual(out.parsed.slice(0, FRAMES.length), FRAMES.map(asJson));
  assert.deepEqual(
    out.parsed.slice(FRAMES.length).map((p: { error: string }) => p.error),
    MALFORMED.map(([, message]) => message),
  );
  assert.deepEqual(out.relayed, [toHex(packRelayed(0xb2175c32, fromHex("abcd"))), toHex(packRelayed(1, fromHex("00")))]);
  assert.deepEqual(out.unrelayed, [
    { sender: 0xb2175c32, payload: "abcd" },
    { error: "relayed voice payload too short" },
    { error: "relayed voice payload too short" },
  ]);
});
