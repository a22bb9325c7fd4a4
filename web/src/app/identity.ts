// This device's identity key (so the safety numbers members compare stay the same
// across visits) and the identity keys of members seen before (trust on first use, as
// the CLI's known_members.json: a changed key is reported once, then remembered too).
// Kept in localStorage: per origin, so per server, which is the scope that matters.

import { fromHex, toHex } from "../wire/bytes.ts";
import { generateIdentityKey } from "../wire/identity.ts";

export const IDENTITY_ITEM = "bangor.identity.v1";
export const KNOWN_ITEM = "bangor.known_members.v1";
/** Keys remembered per user before the oldest are forgotten (a bound on storage). */
export const MAX_KEYS_PER_USER = 8;

export type Trust = "new" | "known" | "changed" | "unknown";

function storage(): Storage | null {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // storage disabled: keys last for this visit only
  }
}

/** The device's X25519 private key, made on first use. */
export function loadIdentity(): Uint8Array {
  const store = storage();
  const saved = store?.getItem(IDENTITY_ITEM);
  if (saved && /^[0-9a-f]{64}$/.test(saved)) return fromHex(saved);
  const key = generateIdentityKey().privateKey;
  try {
    store?.setItem(IDENTITY_ITEM, toHex(key));
  } catch {
    // storage full or read-only: the key lasts for this visit (joining must not fail on it)
  }
  return key;
}

type Known = Record<string, Record<string, string[]>>; // server -> user -> hex keys

function loadKnown(store: Storage): Known {
  try {
    const data: unknown = JSON.parse(store.getItem(KNOWN_ITEM) ?? "{}");
    if (typeof data === "object" && data !== null && !Array.isArray(data)) return data as Known;
  } catch {
    // corrupt: start over (the worst case is one more "new" key)
  }
  return {};
}

/** Classify a verified member's identity key and remember it. */
export function checkMember(server: string, user: string, identity: Uint8Array): Trust {
  const store = storage();
  if (!store) return "unknown";
  const known = loadKnown(store);
  // Any entry may be corrupt (edited, or from another version): one that is not an
  // object of users is dropped, not written into (a string or number would throw).
  const entry: unknown = known[server];
  const users = (known[server] =
    typeof entry === "object" && entry !== null && !Array.isArray(entry) ? (entry as Record<string, string[]>) : {});
  // Own properties only, and defined, not assigned: an account named "__proto__" would
  // otherwise read Object.prototype and set the prototype, and its key would never be kept.
  const saved: unknown = Object.hasOwn(users, user) ? users[user] : undefined;
  const keys = Array.isArray(saved) ? saved.filter((k): k is string => typeof k === "string") : [];
  const hex = toHex(identity);
  if (keys.includes(hex)) return "known";
  const trust: Trust = keys.length ? "changed" : "new";
  keys.push(hex);
  Object.defineProperty(users, user, {
    value: keys.slice(-MAX_KEYS_PER_USER),
    enumerable: true,
    writable: true,
    configurable: true,
  });
  try {
    store.setItem(KNOWN_ITEM, JSON.stringify(known));
  } catch {
    return "unknown";
  }
  return trust;
}
