// Sliding-window replay protection for uint64 media counters (RFC 6479, WireGuard style;
// PROTOCOL.md 5.5, wire/replay.py). A ring of bits indexed by counter mod size: bit for
// counter c is valid while highest - size < c <= highest. Call accept() only after the
// packet's tag verified, or a forger could move the window.

export const REPLAY_WINDOW = 2048; // counters: at 50 packets/s, 40 s of reordering
export const COUNTER_LIMIT = 2n ** 64n; // counters are uint64 on the wire

export class ReplayWindow {
  readonly size: number;
  readonly #bits: Uint32Array;
  #highest = -1n;

  constructor(size: number = REPLAY_WINDOW) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError("replay window size must be at least 1");
    this.size = size;
    this.#bits = new Uint32Array(Math.ceil(size / 32));
  }

  /** Highest counter accepted so far; -1n before the first. */
  get highest(): bigint {
    return this.#highest;
  }

  #slot(counter: bigint): [number, number] {
    const i = Number(counter % BigInt(this.size));
    return [i >>> 5, 1 << (i & 31)];
  }

  /** Records `counter`; false (and no change) if replayed, too old or out of range. */
  accept(counter: bigint): boolean {
    if (counter < 0n || counter >= COUNTER_LIMIT) return false;
    const highest = this.#highest;
    if (counter > highest) {
      const shift = counter - highest;
      if (shift >= BigInt(this.size)) {
        this.#bits.fill(0);
      } else {
        // Forget the counters the window slides past: they share slots with the new ones.
        // Slot numbers in plain numbers: BigInt math per slot cost ~50 ns each.
        let i = Number((highest + 1n) % BigInt(this.size));
        for (let n = Number(shift); n > 0; n--) {
          this.#bits[i >>> 5]! &= ~(1 << (i & 31));
          if (++i === this.size) i = 0;
        }
      }
      const [w, b] = this.#slot(counter);
      this.#bits[w]! |= b;
      this.#highest = counter;
      return true;
    }
    if (highest - counter >= BigInt(this.size)) return false;
    const [w, b] = this.#slot(counter);
    if ((this.#bits[w]! & b) !== 0) return false;
    this.#bits[w]! |= b;
    return true;
  }
}
