// Member identity: device identity keys, safety numbers and fingerprints (pure functions);
// mirrors src/bangor/wire/identity.py and PROTOCOL.md 8.8.
//
// Each device has a long-term X25519 identity key: the Noise static key of its pair
// handshakes. Two members check they talk to each other (and not to someone in between)
// by comparing a safety number out of band. Like Signal's NumericFingerprint, each half
// comes from one side's public key alone, so both ends compute the same sorted string.

import { x25519 } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concat } from "./bytes.ts";
import { LocalProtocolError } from "./errors.ts";
import { fingerprint, formatFingerprint } from "./fingerprint.ts";
import { generatePrivateKey } from "./noise.ts";

export const KEY_SIZE = 32; // X25519 private and public keys
// Bumped if the derivation changes, so old and new numbers never look comparable.
export const VERSION = 0;
const VERSION_BYTES = new Uint8Array([0, VERSION]);
export const ITERATIONS = 5200; // Signal's work factor: slows a search for a matching half
export const GROUP_BYTES = 5; // 40 bits reduced mod 10**5
export const GROUP_DIGITS = 5;
const GROUP_MODULUS = 10n ** BigInt(GROUP_DIGITS);
export const HALF_GROUPS = 4; // per side: 20 digits, ~66 bits

export interface IdentityKeyPair {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

function checkPublic(publicKey: Uint8Array): void {
  if (publicKey.length !== KEY_SIZE) {
    throw new LocalProtocolError(`identity public key must be ${KEY_SIZE} bytes, not ${publicKey.length}`);
  }
}

/** The X25519 public key of `privateKey` (32 raw bytes, as Python's private_bytes_raw). */
export function identityPublicKey(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_SIZE) {
    throw new LocalProtocolError(`X25519 private key must be ${KEY_SIZE} bytes`);
  }
  return x25519.getPublicKey(privateKey);
}

/** A fresh identity key pair from the platform's CSPRNG. */
export function generateIdentityKey(): IdentityKeyPair {
  const privateKey = generatePrivateKey();
  return Object.freeze({ privateKey, publicKey: identityPublicKey(privateKey) });
}

/** One side's 20 digits, from its own public key only. */
export function safetyHalf(publicKey: Uint8Array): string {
  checkPublic(publicKey);
  // d = version || key, then d = SHA512(d || key), ITERATIONS times.
  let digest = concat(VERSION_BYTES, publicKey);
  for (let i = 0; i < ITERATIONS; i++) digest = sha512(concat(digest, publicKey));
  const groups: string[] = [];
  for (let i = 0; i < HALF_GROUPS; i++) {
    let v = 0n;
    for (const b of digest.subarray(i * GROUP_BYTES, (i + 1) * GROUP_BYTES)) v = (v << 8n) | BigInt(b);
    groups.push((v % GROUP_MODULUS).toString().padStart(GROUP_DIGITS, "0"));
  }
  return groups.join(" ");
}

/** The safety number two members compare: 8 groups of 5 digits, the same on both ends. */
export function safetyNumber(localPublic: Uint8Array, remotePublic: Uint8Array): string {
  checkPublic(localPublic);
  checkPublic(remotePublic);
  // Sorted (as strings, like Python's sorted) so each side gets the same string.
  const halves = [safetyHalf(localPublic), safetyHalf(remotePublic)].sort();
  return halves.join(" ");
}

/** A member's key fingerprint, printed like server fingerprints: BLAKE2s(key)[0:16], `xxxx:…`. */
export function identityFingerprint(publicKey: Uint8Array): string {
  checkPublic(publicKey);
  return formatFingerprint(fingerprint(publicKey));
}
