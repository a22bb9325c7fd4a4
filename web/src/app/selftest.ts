// The page's audio path without a server: microphone -> capture worklet -> Opus encode
// -> Opus decode -> playback worklet, for a number of frames. The browser test runs it
// (?selftest=audio) to prove the worklets and WebCodecs work in the browser it drives;
// a user never sees it.

import { AudioEngine, level } from "./audio.ts";
import { OpusDecoder, OpusEncoder } from "./codec.ts";

export interface SelfTestResult {
  captured: number;
  encoded: number;
  decoded: number;
  concealed: number;
  bytes: number;
  /** Loudest decoded frame (RMS): proves sound went through, not just silence. */
  peakLevel: number;
}

export async function audioSelfTest(frames: number, processing: boolean): Promise<SelfTestResult> {
  const engine = await AudioEngine.open({ processing });
  if (engine.micError) {
    engine.close();
    throw new Error(`no microphone: ${engine.micError}`);
  }
  const encoder = new OpusEncoder();
  const decoder = new OpusDecoder();
  const result: SelfTestResult = { captured: 0, encoded: 0, decoded: 0, concealed: 0, bytes: 0, peakLevel: 0 };
  try {
    await new Promise<void>((resolve) => {
      decoder.onFrame = (pcm) => {
        result.decoded += 1;
        result.peakLevel = Math.max(result.peakLevel, level(pcm));
        engine.play(1, pcm);
        if (result.decoded >= frames) resolve();
      };
      encoder.onPacket = (opus) => {
        result.encoded += 1;
        result.bytes += opus.length;
        // Every tenth frame "lost": the concealment path runs too.
        if (result.encoded % 10 === 0) {
          result.concealed += 1;
          decoder.conceal();
        } else {
          decoder.decode(opus);
        }
      };
      engine.onFrame = (pcm) => {
        result.captured += 1;
        encoder.encode(pcm);
      };
    });
  } finally {
    encoder.close();
    decoder.close();
    engine.close();
  }
  return result;
}
