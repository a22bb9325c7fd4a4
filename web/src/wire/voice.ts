// Voice payloads above the hop layer (PROTOCOL.md 6.1 and 6.3), mirroring
// src/bangor/wire/voice.py. A VoiceFrame is sealed end to end (SFrame) before the hop
// layer; the relay prefixes the sender's session id when it forwards.

import { PacketError } from "./errors.ts";
import { readU16, readU32 } from "./bytes.ts";

// seq u32 | packet u16 | info u8
const HEAD = 7;
const LEN = 2;
const SENDER = 4;
// The counters wrap: seq (u32; the jitter buffer and sender count modulo it too) and
// the packet number (u16).
export const SEQ_MODULO = 2 ** 32;
export const PACKET_MODULO = 2 ** 16;
/** Frames of an earlier tick one packet may carry again (RFC 2198 style redundancy). */
export const MAX_REDUNDANT = 3;
const COUNT_MASK = 0x03; // info bits 0-1: copies in this packet
const DEPTH_SHIFT = 2; // info bits 2-3: the depth the sender uses now
const RESERVED = 0xf0;

/**
 * One Opus packet with the sender's counters and, under loss, copies of earlier ones.
 * `redundant` holds the Opus packets of ticks seq - redundant.length .. seq - 1,
 * oldest first; `depth` is how many the sender repeats now when it can.
 */
export interface VoiceFrame {
  readonly seq: number;
  readonly opus: Uint8Array;
  readonly packet: number;
  readonly redundant: readonly Uint8Array[];
  readonly depth: number;
}

export function voiceFrame(
  seq: number,
  opus: Uint8Array,
  packet = 0,
  redundant: readonly Uint8Array[] = [],
  depth = 0,
): VoiceFrame {
  return Object.freeze({ seq, opus, packet, redundant: Object.freeze([...redundant]), depth });
}

function mod(n: number, m: number): number {
  return ((n % m) + m) % m;
}

export function serializeVoiceFrame(frame: VoiceFrame): Uint8Array {
  const count = frame.redundant.length;
  if (count > MAX_REDUNDANT || !(frame.depth >= 0 && frame.depth <= MAX_REDUNDANT)) {
    throw new RangeError(`at most ${MAX_REDUNDANT} redundant frames`);
  }
  let size = HEAD + count * LEN + frame.opus.length;
  for (const r of frame.redundant) size += r.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, mod(frame.seq, SEQ_MODULO));
  view.setUint16(4, mod(frame.packet, PACKET_MODULO));
  out[6] = count | (frame.depth << DEPTH_SHIFT);
  let at = HEAD;
  for (const r of frame.redundant) {
    view.setUint16(at, r.length);
    at += LEN;
  }
  for (const r of frame.redundant) {
    out.set(r, at);
    at += r.length;
  }
  out.set(frame.opus, at);
  return out;
}

/** Parse a VoiceFrame; PacketError (same messages as Python) if malformed. */
export function parseVoiceFrame(data: Uint8Array): VoiceFrame {
  if (data.length <= HEAD) throw new PacketError("voice frame too short");
  const seq = readU32(data, 0);
  const packet = readU16(data, 4);
  const info = data[6] as number;
  if (info & RESERVED) throw new PacketError("voice frame has unknown flags");
  const count = info & COUNT_MASK;
  let pos = HEAD + count * LEN;
  if (data.length <= pos) throw new PacketError("voice frame too short for its redundancy");
  const redundant: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const length = readU16(data, HEAD + i * LEN);
    if (length === 0 || pos + length >= data.length) {
      throw new PacketError("voice frame redundancy lengths do not fit");
    }
    redundant.push(data.slice(pos, pos + length));
    pos += length;
  }
  return voiceFrame(seq, data.slice(pos), packet, redundant, info >> DEPTH_SHIFT);
}

/** What the relay sends on: the sender's session id, then the opaque payload. */
export function packRelayed(senderId: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SENDER + payload.length);
  new DataView(out.buffer).setUint32(0, senderId >>> 0);
  out.set(payload, SENDER);
  return out;
}

export function unpackRelayed(data: Uint8Array): { sender: number; payload: Uint8Array } {
  if (data.length <= SENDER) throw new PacketError("relayed voice payload too short");
  return { sender: readU32(data, 0), payload: data.subarray(SENDER) };
}
