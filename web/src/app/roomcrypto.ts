// Until wire/e2ee.ts is merged: the shape of its RoomCrypto as client glue uses it.
// (Replaced by a re-export of the real class once it is.)
import { BangorError } from "../wire/errors.ts";

type E2EEEvent =
  | { type: "MemberVerified"; sessionId: number; user: string; identity: Uint8Array; safetyNumber: string; fingerprint: string }
  | { type: "MemberRejected"; sessionId: number; user: string; reason: string }
  | { type: "PeerProblem"; sessionId: number; message: string; user: string }
  | { type: "VoiceReleased"; sessionId: number; payload: Uint8Array }
  | { type: "ChatOpened"; sessionId: number; text: string }
  | { type: "ChatGap"; sessionId: number; missing: bigint }
  | { type: "ReportReceived"; sessionId: number; loss: number };

export class RoomCrypto {
  readonly identityPublic = new Uint8Array(32);
  constructor(_options: {
    roomId: Uint8Array;
    secret: Uint8Array;
    sessionId: number;
    user: string;
    nick: string;
    identityPrivate: Uint8Array;
  }) {
    throw new BangorError("this build of the page has no end-to-end module yet");
  }
  start(_members: Iterable<readonly [number, string]>, _now: number): void {}
  memberJoined(_id: number, _user: string, _now: number): void {}
  memberLeft(_id: number, _now: number): void {}
  peerReceived(_s: number, _d: Uint8Array, _now: number): Promise<void> {
    return Promise.resolve();
  }
  openChat(_s: number, _d: Uint8Array, _now: number): Promise<void> {
    return Promise.resolve();
  }
  sealChat(_t: string): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array());
  }
  sealVoice(_p: Uint8Array, _now?: number): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array());
  }
  openVoice(_s: number, _p: Uint8Array, _now: number): Promise<Uint8Array | null> {
    return Promise.resolve(null);
  }
  sendReport(_id: number, _loss: number): void {}
  peerMessagesToSend(): [number, Uint8Array][] {
    return [];
  }
  nextEvent(): E2EEEvent | null {
    return null;
  }
  getTimer(): number | null {
    return null;
  }
  handleTimer(_now: number): void {}
}
