import { test } from "node:test";
import assert from "node:assert/strict";
import { describeServerError, userFromName } from "../../src/app/client.ts";
import { parseConfig } from "../../src/app/config.ts";
import { checkMember, loadIdentity, IDENTITY_ITEM, KNOWN_ITEM } from "../../src/app/identity.ts";
import { pageParams } from "../../src/app/params.ts";
import { endpointUrl } from "../../src/app/transport.ts";
import { CloseCode, ConnectError } from "../../src/wire/errors.ts";

const HASH = "ab".repeat(32);
const good = { protocol: 1, webtransport: { port: 7601, path: "/bangor/1" }, certificate_hashes: [HASH], accounts: true };

test("the link: invite from the fragment, name, user, autojoin, processing, vad", () => {
  const p = pageParams({ search: "?name=Caf%C3%A9&user=ana&autojoin=1&processing=off&vad=off", hash: "#bangor:0abcd-efgh" });
  assert.deepEqual(p, {
    invite: "bangor:0abcd-efgh",
    name: "Café",
    user: "ana",
    autojoin: true,
    processing: false,
    vad: false,
    selftest: "",
  });
  const q = pageParams({ search: "", hash: "#bangor%3A0ab%20" });
  assert.equal(q.invite, "bangor:0ab");
  assert.equal(q.autojoin, false);
  assert.equal(q.processing, true);
  assert.equal(q.vad, true);
  // A fragment that is not valid percent-encoding is taken as typed (the parser judges it).
  assert.equal(pageParams({ search: "", hash: "#%E0%A4%A" }).invite, "%E0%A4%A");
});

test("config.json: the server's answer is checked like any input", () => {
  assert.deepEqual(parseConfig(good), {
    protocol: 1,
    port: 7601,
    path: "/bangor/1",
    certificateHashes: [HASH],
    accounts: true,
  });
  assert.equal(parseConfig({ ...good, certificate_hashes: [] }).certificateHashes.length, 0);
  assert.equal(parseConfig({ ...good, accounts: undefined }).accounts, false);
  const bad: unknown[] = [
    null,
    [],
    "x",
    { ...good, protocol: 2 },
    { ...good, webtransport: null },
    { ...good, webtransport: { port: 0, path: "/bangor/1" } },
    { ...good, webtransport: { port: 70000, path: "/bangor/1" } },
    { ...good, webtransport: { port: 1.5, path: "/bangor/1" } },
    { ...good, webtransport: { port: 7601, path: "bangor" } },
    { ...good, webtransport: { port: 7601, path: "/a b" } },
    { ...good, webtransport: { port: 7601, path: "/" + "a".repeat(200) } },
    { ...good, certificate_hashes: "ab" },
    { ...good, certificate_hashes: ["AB".repeat(32)] },
    { ...good, certificate_hashes: [HASH.slice(2)] },
    { ...good, certificate_hashes: [HASH, HASH, HASH, HASH, HASH] },
    { ...good, accounts: "yes" },
  ];
  for (const data of bad) assert.throws(() => parseConfig(data), ConnectError, JSON.stringify(data));
});

test("the WebTransport URL: the page's host, the config's port and path", () => {
  const config = parseConfig(good);
  assert.equal(endpointUrl(config, "example.org"), "https://example.org:7601/bangor/1");
  assert.equal(endpointUrl(config, "::1"), "https://[::1]:7601/bangor/1");
});

test("an open server's account name comes from the nick", () => {
  assert.equal(userFromName("Ana"), "Ana");
  assert.equal(userFromName("Café Ana"), "Cafe_Ana");
  assert.equal(userFromName("  <b>!!"), "b");
  assert.equal(userFromName("😀"), "web");
  assert.equal(userFromName("x".repeat(50)).length, 32);
  for (const name of ["a b", "é", "Ω", "../etc", "a\u202eb"]) assert.match(userFromName(name), /^[A-Za-z0-9_.-]{1,32}$/);
});

test("server refusals read as sentences", () => {
  const error = (code: number, message = "") => ({ code, message, ref: "hello", retryAfter: 0 });
  assert.match(describeServerError(error(CloseCode.PASSWORD_REQUIRED)), /account name and password/);
  assert.match(describeServerError(error(CloseCode.AUTH_FAILED, "wrong password")), /login refused: wrong password/);
  assert.match(describeServerError(error(CloseCode.MOVED, "the room is served by 10.0.0.2:7878")), /^moved: the room is served by 10\.0\.0\.2:7878; reconnect/);
  assert.equal(describeServerError(error(CloseCode.LIMIT, "server is full")), "server is full");
  assert.equal(describeServerError(error(CloseCode.REMOVED, "you are banned from this room")), "removed: you are banned from this room");
  assert.match(describeServerError(error(99)), /code 99/);
});

test("the identity key lasts across visits; a member's changed key is noticed", () => {
  const items = new Map<string, string>();
  const storage = {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, v),
  };
  Object.defineProperty(globalThis, "localStorage", { value: storage, configurable: true });
  try {
    const key = loadIdentity();
    assert.equal(key.length, 32);
    assert.deepEqual(loadIdentity(), key);
    items.set(IDENTITY_ITEM, "not hex");
    assert.notDeepEqual(loadIdentity(), key); // a corrupt key is replaced, not used
    const a = new Uint8Array(32).fill(1);
    const b = new Uint8Array(32).fill(2);
    assert.equal(checkMember("h:1", "ana", a), "new");
    assert.equal(checkMember("h:1", "ana", a), "known");
    assert.equal(checkMember("h:1", "ana", b), "changed");
    assert.equal(checkMember("h:1", "ana", b), "known");
    assert.equal(checkMember("h:2", "ana", b), "new"); // per server
  } finally {
    delete (globalThis as { localStorage?: unknown }).localStorage;
  }
  assert.equal(checkMember("h:1", "ana", new Uint8Array(32)), "unknown"); // no storage
});

test("corrupt or full storage never stops a join or a verification", () => {
  const items = new Map<string, string>();
  let full = false;
  const storage = {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => {
      if (full) throw new Error("QuotaExceededError");
      items.set(k, v);
    },
  };
  Object.defineProperty(globalThis, "localStorage", { value: storage, configurable: true });
  try {
    const a = new Uint8Array(32).fill(1);
    const b = new Uint8Array(32).fill(2);
    // A server's entry that is not an object of users is dropped, not written into.
    for (const entry of ["x", 5, true, ["a"], null]) {
      items.set(KNOWN_ITEM, JSON.stringify({ "h:1": entry }));
      assert.equal(checkMember("h:1", "ana", a), "new", JSON.stringify(entry));
      assert.equal(checkMember("h:1", "ana", a), "known");
    }
    items.set(KNOWN_ITEM, JSON.stringify({ "h:1": { ana: "not a list", bo: [1, null] } }));
    assert.equal(checkMember("h:1", "ana", a), "new");
    assert.equal(checkMember("h:1", "bo", a), "new");
    // An account named __proto__ is remembered like any other: its changed key is noticed.
    items.delete(KNOWN_ITEM);
    assert.equal(checkMember("h:1", "__proto__", a), "new");
    assert.equal(checkMember("h:1", "__proto__", a), "known");
    assert.equal(checkMember("h:1", "__proto__", b), "changed");
    assert.equal(checkMember("h:1", "constructor", a), "new");
    // Storage that will not take the key: the key lasts for this visit, no exception.
    items.delete(IDENTITY_ITEM);
    full = true;
    assert.equal(loadIdentity().length, 32);
    assert.equal(checkMember("h:1", "cy", a), "unknown");
  } finally {
    delete (globalThis as { localStorage?: unknown }).localStorage;
  }
});
