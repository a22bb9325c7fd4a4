import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_DECODER_RESTARTS, MAX_ENCODER_RESTARTS, OpusDecoder, OpusEncoder } from "../../src/app/codec.ts";

// A browser whose AudioEncoder has no Opus: configure() is accepted, then every encoder
// fails at once through its error callback (as Chromium reports NotSupportedError).
class FailingEncoder {
  static made = 0;
  state = "unconfigured";
  constructor(private readonly init: { error: (e: Error) => void }) {
    FailingEncoder.made += 1;
  }
  configure(): void {
    this.state = "configured";
    queueMicrotask(() => {
      this.state = "closed";
      this.init.error(new Error("Unsupported codec"));
    });
  }
  encode(): void {
    if (this.state !== "configured") throw new Error("InvalidStateError");
  }
  close(): void {
    this.state = "closed";
  }
}

class FakeAudioData {
  close(): void {}
}

test("an encoder that fails every time is given up, not restarted forever", async () => {
  const g = globalThis as Record<string, unknown>;
  g.AudioEncoder = FailingEncoder;
  g.AudioData = FakeAudioData;
  try {
    const encoder = new OpusEncoder();
    const errors: string[] = [];
    encoder.onError = (e) => errors.push(e.message);
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    assert.equal(FailingEncoder.made, MAX_ENCODER_RESTARTS + 1);
    assert.equal(encoder.failed, true);
    assert.equal(errors.length, MAX_ENCODER_RESTARTS + 1);
    assert.match(errors.at(-1)!, /gave up/);
    // A frame to a failed encoder is refused, not thrown: its tick goes out empty.
    assert.equal(encoder.encode(new Float32Array(960)), false);
  } finally {
    delete g.AudioEncoder;
    delete g.AudioData;
  }
});

test("a decoder that fails every time is given up: frames are concealed, no loop", async () => {
  class FailingDecoder {
    static made = 0;
    state = "unconfigured";
    constructor(private readonly init: { error: (e: Error) => void }) {
      FailingDecoder.made += 1;
    }
    configure(): void {
      this.state = "configured";
      queueMicrotask(() => {
        this.state = "closed";
        this.init.error(new Error("Unsupported codec"));
      });
    }
    decode(): void {
      if (this.state !== "configured") throw new Error("InvalidStateError");
    }
    close(): void {
      this.state = "closed";
    }
  }
  const g = globalThis as Record<string, unknown>;
  g.AudioDecoder = FailingDecoder;
  g.EncodedAudioChunk = class {};
  try {
    const decoder = new OpusDecoder();
    const frames: Float32Array[] = [];
    decoder.onFrame = (pcm) => frames.push(pcm);
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    assert.equal(FailingDecoder.made, MAX_DECODER_RESTARTS + 1);
    assert.equal(decoder.failed, true);
    decoder.decode(new Uint8Array([0xf8, 1, 2]));
    assert.equal(frames.length, 1); // concealed, in order, without a throw
  } finally {
    delete g.AudioDecoder;
    delete g.EncodedAudioChunk;
  }
});
