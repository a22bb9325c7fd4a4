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
const SPREAD = 0x10; // info bit 4: two masks say which earlier ticks the copies are of
const RESERVED = 0xe0;
/** Farthest tick a spread copy may be of (a mask bit each). */
export const MAX_SPREAD = 8;

function maskOf(distances: readonly number[]): number {
  let mask = 0;
  for (const d of distances) mask |= 1 << (d - 1);
  return mask;
}

/** Nearest first. */
function distancesOf(mask: number): number[] {
  const out = [];
  for (let i = 0; i < MAX_SPREAD; i++) if ((mask >> i) & 1) out.push(i + 1);
  return out;
}

function same(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * One Opus packet with the sender's counters and, under loss, copies of earlier ones
 * (oldest first); `depth` is how many the sender repeats now when it can. Consecutive
 * (`plan` empty): the copies are of ticks seq - redundant.length .. seq - 1. Spread
 * (voice.py): `plan` holds the distances back of the ticks the sender repeats (rising,
 * 1..MAX_SPREAD, depth of them) and `distances` those of the copies, in their order.
 */
export interface VoiceFrame {
  readonly seq: number;
  readonly opus: Uint8Array;
  readonly packet: number;
  readonly redundant: readonly Uint8Array[];
  readonly depth: number;
  readonly distances: readonly number[];
  readonly plan: readonly number[];
}

export function voiceFrame(
  seq: number,
  opus: Uint8Array,
  packet = 0,
  redundant: readonly Uint8Array[] = [],
  depth = 0,
  distances: readonly number[] = [],
  plan: readonly number[] = [],
): VoiceFrame {
  return Object.freeze({
    seq,
    opus,
    packet,
    redundant: Object.freeze([...redundant]),
    depth,
    distances: Object.freeze([...distances]),
    plan: Object.freeze([...plan]),
  });
}

/** How many ticks after a frame its last copy comes (the listener's wait). */
export function reachOf(frame: VoiceFrame): number {
  return frame.plan.length ? (frame.plan[frame.plan.length - 1] as number) : frame.depth;
}

/** [seq, Opus packet] of each copy the frame carries, oldest first. */
export function copiesOf(frame: VoiceFrame): [number, Uint8Array][] {
  const count = frame.redundant.length;
  return frame.redundant.map((r, i) => {
    const d = frame.distances.length ? (frame.distances[i] as number) : count - i;
    return [mod(frame.seq - d, SEQ_MODULO), r];
  });
}

function mod(n: number, m: number): number {
  return ((n % m) + m) % m;
}

export function serializeVoiceFrame(frame: VoiceFrame): Uint8Array {
  const count = frame.redundant.length;
  if (count > MAX_REDUNDANT || !(frame.depth >= 0 && frame.depth <= MAX_REDUNDANT)) {
    throw new RangeError(`at most ${MAX_REDUNDANT} redundant frames`);
  }
  const spread = frame.plan.length > 0 || frame.distances.length > 0;
  if (spread) {
    const { plan, distances } = frame;
    if (!same(plan, distancesOf(maskOf(plan))) || plan.length !== frame.depth) {
      throw new RangeError(`plan: rising distances 1..${MAX_SPREAD}, as many as depth`);
    }
    if (!same(distances, distancesOf(maskOf(distances)).reverse()) || distances.length !== count) {
      throw new RangeError("distances: one per copy, falling");
    }
    if (maskOf(distances) & ~maskOf(plan)) throw new RangeError("a copy outside the plan");
  }
  const head = HEAD + (spread ? 2 : 0);
  let size = head + count * LEN + frame.opus.length;
  for (const r of frame.redundant) size += r.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, mod(frame.seq, SEQ_MODULO));
  view.setUint16(4, mod(frame.packet, PACKET_MODULO));
  out[6] = count | (frame.depth << DEPTH_SHIFT) | (spread ? SPREAD : 0);
  if (spread) {
    out[7] = maskOf(frame.plan);
    out[8] = maskOf(frame.distances);
  }
  let at = head;
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
  const depth = (info >> DEPTH_SHIFT) & 0x03;
  let start = HEAD;
  let plan: number[] = [];
  let distances: number[] = [];
  if (info & SPREAD) {
    start += 2;
    if (data.length <= start) throw new PacketError("voice frame too short");
    const planMask = data[7] as number;
    const carried = data[8] as number;
    plan = distancesOf(planMask);
    distances = distancesOf(carried).reverse();
    if (plan.length !== depth || distances.length !== count || carried & ~planMask) {
      throw new PacketError("voice frame spread masks do not match its counts");
    }
  }
  let pos = start + count * LEN;
  if (data.length <= pos) throw new PacketError("voice frame too short for its redundancy");
  const redundant: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const length = readU16(data, start + i * LEN);
    if (length === 0 || pos + length >= data.length) {
      throw new PacketError("voice frame redundancy lengths do not fit");
    }
    redundant.push(data.slice(pos, pos + length));
    pos += length;
  }
  return voiceFrame(seq, data.slice(pos), packet, redundant, depth, distances, plan);
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
