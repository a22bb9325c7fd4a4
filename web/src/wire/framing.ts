// Length-prefixed frames of the control channel (PROTOCOL.md 2.1, wire/framing.py):
// every Noise message is preceded by its 2-byte big-endian length. The decoder holds at
// most one partial frame, so a peer cannot make us buffer without bound.

import { concat, u16 } from "./bytes.ts";
import { FramingError, LocalProtocolError } from "./errors.ts";

export const MAX_FRAME_SIZE = 65535;
export const LENGTH_PREFIX = 2;

export function encodeFrame(payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_FRAME_SIZE) {
    throw new LocalProtocolError(`frame of ${payload.length} bytes exceeds ${MAX_FRAME_SIZE}`);
  }
  return concat(u16(payload.length), payload);
}

/** Splits a byte stream into frame payloads; keeps any partial frame. */
export class FrameDecoder {
  #prefix: number[] = []; // bytes of a length prefix split across reads
  #length: number | null = null; // payload length of the frame being read
  #parts: Uint8Array[] = [];
  #have = 0;
  #failed = false;

  /** Bytes held for an incomplete frame (prefix included). */
  get buffered(): number {
    return this.#prefix.length + (this.#length !== null ? LENGTH_PREFIX : 0) + this.#have;
  }

  /** Consumes `data`; returns the payload of every frame it completes. */
  feed(data: Uint8Array): Uint8Array[] {
    if (this.#failed) throw new FramingError("stream is broken after a framing error");
    const frames: Uint8Array[] = [];
    let pos = 0;
    while (pos < data.length) {
      if (this.#length === null) {
        while (this.#prefix.length < LENGTH_PREFIX && pos < data.length) this.#prefix.push(data[pos++] as number);
        if (this.#prefix.length < LENGTH_PREFIX) break;
        const length = ((this.#prefix[0] as number) << 8) | (this.#prefix[1] as number);
        this.#prefix = [];
        if (length === 0) {
          // An empty Noise message is never valid: garbage that breaks the stream.
          this.#failed = true;
          throw new FramingError("empty frame");
        }
        this.#length = length;
      }
      const take = Math.min(this.#length - this.#have, data.length - pos);
      this.#parts.push(data.slice(pos, pos + take));
      this.#have += take;
      pos += take;
      if (this.#have === this.#length) {
        frames.push(this.#parts.length === 1 ? (this.#parts[0] as Uint8Array) : concat(...this.#parts));
        this.#parts = [];
        this.#have = 0;
        this.#length = null;
      }
    }
    return frames;
  }
}
