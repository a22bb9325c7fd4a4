// The server key fingerprint (PROTOCOL.md 2.4): what invites pin and what people compare.

import { blake2s } from "@noble/hashes/blake2.js";
import { equal, toHex } from "./bytes.ts";
import { KeyPinError } from "./errors.ts";

export const FINGERPRINT_SIZE = 16;
export const FINGERPRINT_GROUP = 4; // hex digits per group in the display form

/** First 16 bytes of BLAKE2s-256 of the server's static public key. */
export function fingerprint(publicKey: Uint8Array): Uint8Array {
  return blake2s(publicKey).slice(0, FINGERPRINT_SIZE);
}

/** Display form: lowercase hex in groups of four joined by ":", e.g. `0001:0203:…:0e0f`. */
export function formatFingerprint(fp: Uint8Array): string {
  const hex = toHex(fp);
  const groups: string[] = [];
  for (let i = 0; i < hex.length; i += FINGERPRINT_GROUP) groups.push(hex.slice(i, i + FINGERPRINT_GROUP));
  return groups.join(":");
}

/**
 * The pin check of PROTOCOL.md 2.5 for a join by invite: the handshake's server key must
 * have the invite's fingerprint, else KeyPinError with the CLI's words.
 */
export function checkPinnedKey(remoteStatic: Uint8Array, expected: Uint8Array): void {
  const got = fingerprint(remoteStatic);
  if (!equal(got, expected)) {
    throw new KeyPinError(
      `WARNING: the server's key does not match the invite code (expected ${formatFingerprint(expected)}, ` +
        `got ${formatFingerprint(got)}). Someone may be intercepting the connection; not joining.`,
    );
  }
}
