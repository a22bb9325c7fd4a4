// The seam between the page and the sans-I/O cores (web/src/wire, web/src/media): what
// the glue in client.ts needs from them, in one place. Until those modules are merged
// the factory says so; once they are, it builds the real ones.

import { BangorError } from "../wire/errors.ts";

export interface ServerError {
  code: number;
  message: string;
  ref: string;
  retryAfter: number;
}

export interface MemberInfo {
  id: number;
  user: string;
  nick: string;
}

export interface Welcome {
  sessionId: number;
  user: string;
  mediaSecret: Uint8Array;
}

export interface Joined {
  roomId: string;
  name: string;
  you: MemberInfo;
  members: MemberInfo[];
  maxBitrate: number;
}

/** What the server pushes in a call. */
export type Push =
  | { type: "member_joined"; member: MemberInfo }
  | { type: "member_left"; id: number }
  | { type: "chat"; sender: number; data: Uint8Array }
  | { type: "peer_from"; sender: number; data: Uint8Array }
  | { type: "other" };

export type ControlEvent =
  | { type: "handshake"; remoteStatic: Uint8Array }
  | { type: "welcome"; welcome: Welcome }
  | { type: "joined"; joined: Joined }
  | { type: "failed"; error: ServerError; ref: string }
  | { type: "push"; push: Push }
  | { type: "ended"; reason: string; error: ServerError | null }
  | { type: "other" };

export interface ControlCore {
  receiveData(data: Uint8Array, now: number): void;
  receiveEof(now: number): void;
  dataToSend(): Uint8Array;
  nextEvent(): ControlEvent | null;
  getTimer(): number | null;
  handleTimer(now: number): void;
  hello(user: string, password: string, nick: string): void;
  joinRoom(roomIdHex: string): void;
  sendChat(sealed: Uint8Array): void;
  sendPeer(to: number, data: Uint8Array): void;
  leave(): void;
}

export interface InviteInfo {
  host: string;
  port: number;
  roomId: Uint8Array;
  secret: Uint8Array;
  fingerprint: Uint8Array;
}

/** What the media session tells the page. */
export type MediaEvent =
  | { type: "chat"; sender: number; text: string }
  | { type: "verified"; sender: number; user: string; identity: Uint8Array }
  | { type: "rejected"; sender: number; user: string; reason: string }
  | { type: "problem"; sender: number; message: string }
  | { type: "relay_up" }
  | { type: "other" };

/** One member's frame to play this tick: an Opus packet, or conceal a lost one. */
export interface Playout {
  sender: number;
  opus: Uint8Array | null;
}

export interface MediaStatsView {
  sent: number;
  received: number;
  played: number;
  rttMs: number | null;
  speaking: number[];
  redundancy: number;
}

export interface MediaCore {
  start(members: MemberInfo[], now: number): Promise<void>;
  memberJoined(member: MemberInfo, now: number): Promise<void>;
  memberLeft(id: number, now: number): Promise<void>;
  receivePeer(sender: number, data: Uint8Array, now: number): Promise<void>;
  receiveChat(sender: number, data: Uint8Array, now: number): Promise<void>;
  sealChat(text: string): Promise<Uint8Array>;
  receiveDatagram(data: Uint8Array, now: number): Promise<void>;
  /** This tick's Opus packet (null: muted or gated); then the frames to play. */
  sendVoice(opus: Uint8Array | null, now: number): Promise<void>;
  playout(now: number): Playout[];
  datagramsToSend(): Uint8Array[];
  peerMessagesToSend(): [number, Uint8Array][];
  nextEvent(): MediaEvent | null;
  getTimer(): number | null;
  handleTimer(now: number): Promise<void>;
  stats(now: number): MediaStatsView;
  /** What the send plan wants of the Opus encoder now. */
  encoderHint(): { bitrate: number; packetlossperc: number };
  identityPublic(): Uint8Array;
}

export interface Cores {
  parseInvite(text: string): InviteInfo;
  fingerprint(remoteStatic: Uint8Array): Uint8Array;
  formatFingerprint(fp: Uint8Array): string;
  newControl(): ControlCore;
  newMedia(options: {
    welcome: Welcome;
    joined: Joined;
    invite: InviteInfo;
    identityPrivate: Uint8Array;
  }): MediaCore;
  safetyNumber(localPublic: Uint8Array, remotePublic: Uint8Array): string;
  identityFingerprint(publicKey: Uint8Array): string;
}

export function loadCores(): Cores {
  throw new BangorError("this build of the page has no protocol modules yet");
}
