// The media core's settings, with the defaults of src/bangor/settings.py
// (ClientSettings) for a relay-only member. Times in seconds, as `now`.

/** A VoiceFrame never exceeds this (copies are left out first): settings.MAX_VOICE_FRAME. */
export const MAX_VOICE_FRAME = 1100;

export interface MediaSettings {
  /** Our capture and play-out tick (the Opus frame we send), ms. */
  readonly frameMs: number;
  /** Opus bit rate we send at, bit/s (the room's cap may lower it). */
  readonly bitrate: number;
  /** Opus in-band FEC, sized to reported loss while redundancy is off. */
  readonly fec: boolean;
  /** Most earlier frames one packet repeats (0..MAX_REDUNDANT). */
  readonly maxRedundancy: number;
  /** Reported loss at which depth 1, 2, 3 starts. */
  readonly redundancyThresholds: readonly number[];
  /** Seconds a loss report keeps redundancy up. */
  readonly lossHold: number;
  /** Listeners' mean loss burst from which copies are spread out (settings.py); 0: never. */
  readonly spreadBurst: number;
  /** Copies per packet while spread, from 10 % loss (settings.py's max_burst_redundancy). */
  readonly maxBurstRedundancy: number;
  /** Seconds of full redundancy before the first report arrives. */
  readonly redundancyStartup: number;
  readonly reportInterval: number;
  /** Fewer packets from a sender in an interval: no report (it is not talking). */
  readonly minReportPackets: number;
  readonly keepaliveInterval: number;
  readonly jitterTargetMs: number;
  readonly jitterMaxMs: number;
}

export const DEFAULT_SETTINGS: MediaSettings = Object.freeze({
  frameMs: 20,
  bitrate: 40_000,
  fec: true,
  maxRedundancy: 2,
  redundancyThresholds: Object.freeze([0.01, 0.03, 0.1]),
  lossHold: 10.0,
  spreadBurst: 1.6,
  maxBurstRedundancy: 3,
  redundancyStartup: 10.0,
  reportInterval: 1.0,
  minReportPackets: 10,
  keepaliveInterval: 2.0,
  jitterTargetMs: 40,
  jitterMaxMs: 500,
});

/** A duration in whole frames, rounded up, at least one (sender.at_least_one). */
export function atLeastOne(ms: number, frameMs: number): number {
  return Math.max(Math.ceil(ms / frameMs - 1e-9), 1);
}
