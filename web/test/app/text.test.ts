import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { escapeRemote } from "../../src/app/text.ts";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

test("bidi, zero-width, controls and separators become visible escapes", () => {
  assert.equal(escapeRemote("bob"), "bob");
  assert.equal(escapeRemote("héllo wörld ☕ 日本"), "héllo wörld ☕ 日本");
  assert.equal(escapeRemote("\u202eevil"), "\\u202eevil");
  assert.equal(escapeRemote("a\u200bb"), "a\\u200bb");
  assert.equal(escapeRemote("\x1b[2K\rbob verified"), "\\x1b[2K\\x0dbob verified");
  assert.equal(escapeRemote("line\u2028break"), "line\\u2028break");
  assert.equal(escapeRemote("tag\u{e0001}"), "tag\\U000e0001");
  assert.equal(escapeRemote("\ud800"), "\\ud800"); // a lone surrogate (Cs)
});

test("the same escapes as Python's text.escape", () => {
  const python = resolve(web, process.env.BANGOR_PYTHON ?? "../.venv/bin/python");
  const samples = ["\u202eevil", "a\u200bb", "\x1b[2K\r", "x\u2029y", "tag\u{e0001}", "\u00adsoft", "ok"];
  const script = "import json,sys\nfrom bangor.text import escape\nprint(json.dumps([escape(s) for s in json.load(sys.stdin)]))";
  const run = spawnSync(python, ["-c", script], {
    input: JSON.stringify(samples),
    env: { ...process.env, PYTHONPATH: resolve(web, "..", "src") },
    encoding: "utf-8",
  });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), samples.map(escapeRemote));
});
