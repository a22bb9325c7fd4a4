// The seam between the page and the sans-I/O cores: the control session (wire/session),
// RoomCrypto (wire/e2ee) and the media session (media/session) put together as one
// call's protocol, with the events the page shows. The cores decide; this only routes
// between them (as client/app.py's _Call and media/session.py do in Python).

import { checkPinnedKey, fingerprint, formatFingerprint } from "../wire/fingerprint.ts";
import type { ErrorMessage, Member, ServerMessage } from "../wire/control.ts";
import { Invite } from "../wire/invite.ts";
import { clientHop } from "../wire/media.ts";
import { ControlSession, type SessionEvent } from "../wire/session.ts";
import { MediaSession } from "../media/session.ts";
import type { EncoderHint } from "../media/sender.ts";
import { RoomCrypto } from "../wire/e2ee.ts";
import { deriveJoinToken } from "../wire/pairwise.ts";

export { fingerprint, formatFingerprint };

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
  /** The room's owner rotated it: its new join token (PROTOCOL.md 3.15). */
  | { type: "token"; token: Uint8Array }
  | { type: "other" };

export type ControlEvent =
  | { type: "handshake"; remoteStatic: Uint8Array }
  | { type: "welcome"; welcome: Welcome }
  | { type: "joined"; joined: Joined }
  | { type: "failed"; error: ServerError; ref: string }
  | { type: "push"; push: Push }
  | { type: "ended"; reason: string; error: ServerError | null }
  | { type: "other" };

const member = (m: Member): MemberInfo => ({ id: m.sessionId, user: m.user, nick: m.nick });
const serverError = (e: ErrorMessage): ServerError => ({
  code: e.code,
  message: e.message,
  ref: e.ref,
  retryAfter: e.retryAfter,
});

function push(message: ServerMessage): Push {
  switch (message.t) {
    case "member_joined":
      return { type: "member_joined", member: member(message.member) };
    case "member_left":
      return { type: "member_left", id: message.sessionId };
    case "chat":
      return { type: "chat", sender: message.sender, data: message.data };
    case "peer_from":
      return { type: "peer_from", sender: message.sender, data: message.data };
    case "token":
      return { type: "token", token: message.token };
    default:
      return { type: "other" };
  }
}

const END_REASONS: Record<string, string> = {
  bye: "the server closed the session",
  eof: "the server closed the connection",
  timeout: "the server stopped answering",
  error: "the server closed the session",
};

function controlEvent(event: SessionEvent): ControlEvent {
  switch (event.type) {
    case "handshake_done":
      return { type: "handshake", remoteStatic: event.remoteStatic };
    case "request_done": {
      const reply = event.reply;
      if (reply?.t === "welcome") {
        return { type: "welcome", welcome: { sessionId: reply.sessionId, user: reply.user, mediaSecret: reply.mediaSecret } };
      }
      if (reply?.t === "joined") {
        return {
          type: "joined",
          joined: {
            roomId: reply.roomId,
            name: reply.name,
            you: member(reply.you),
            members: reply.members.map(member),
            maxBitrate: reply.maxBitrate,
          },
        };
      }
      return { type: "other" };
    }
    case "request_failed":
      return { type: "failed", error: serverError(event.error), ref: event.request.tag };
    case "refused":
      return { type: "failed", error: serverError(event.error), ref: event.error.ref };
    case "pushed":
      return { type: "push", push: push(event.message) };
    case "session_ended":
      return {
        type: "ended",
        reason: END_REASONS[event.reason] ?? "the session ended",
        error: event.error ? serverError(event.error) : null,
      };
  }
}

/** The control session of one call, its server key pinned to the invite's fingerprint. */
export class Control {
  readonly session: ControlSession;

  constructor(invite: Invite) {
    // The pin is checked before our third handshake message: a wrong server never
    // sees a hello, let alone a password.
    this.session = new ControlSession({ checkServerKey: (key) => checkPinnedKey(key, invite.fingerprint) });
  }

  receiveData(data: Uint8Array, now: number): void {
    this.session.receiveData(data, now);
  }
  receiveEof(now: number): void {
    this.session.receiveEof(now);
  }
  dataToSend(): Uint8Array {
    return this.session.dataToSend();
  }
  nextEvent(): ControlEvent | null {
    const event = this.session.nextEvent();
    return event ? controlEvent(event) : null;
  }
  getTimer(): number | null {
    return this.session.getTimer();
  }
  handleTimer(now: number): void {
    this.session.handleTimer(now);
  }
  hello(user: string, password: string, nick: string): void {
    this.session.hello(user, password, nick);
  }
  /** Join the invite's room, showing the join token its secret derives (3.15). */
  joinRoom(invite: Invite): void {
    this.session.joinRoom(invite.roomIdHex, deriveJoinToken(invite.secret, invite.roomId));
  }
  sendChat(sealed: Uint8Array): void {
    this.session.sendChat(sealed);
  }
  sendPeer(to: number, data: Uint8Array): void {
    this.session.sendPeer(to, data);
  }
  /** Leave the room and say goodbye (nothing to wait for: the page is going). */
  leave(): void {
    try {
      this.session.leaveRoom();
      this.session.bye();
    } catch {
      // the session had ended already
    }
  }
}

/** What the media side tells the page. */
export type MediaEvent =
  | { type: "chat"; sender: number; text: string }
  | { type: "verified"; sender: number; user: string; identity: Uint8Array; safetyNumber: string; fingerprint: string }
  | { type: "rejected"; sender: number; user: string; reason: string }
  | { type: "problem"; sender: number; message: string }
  | { type: "relay_up" }
  | { type: "speaking"; sender: number; speaking: boolean };

/** One member's frame to play this tick: an Opus packet, or conceal a lost one (null). */
export interface Playout {
  sender: number;
  opus: Uint8Array | null;
}

/** RoomCrypto and MediaSession of one call, wired to each other. */
export class Media {
  readonly crypto: RoomCrypto;
  readonly session: MediaSession;
  private readonly events: MediaEvent[] = [];

  constructor(options: { welcome: Welcome; joined: Joined; invite: Invite; identityPrivate: Uint8Array }) {
    const { welcome, joined, invite } = options;
    this.crypto = new RoomCrypto({
      roomId: invite.roomId,
      secret: invite.secret,
      sessionId: welcome.sessionId,
      user: joined.you.user,
      nick: joined.you.nick,
      identityPrivate: options.identityPrivate,
    });
    const hop = clientHop(welcome.mediaSecret, welcome.sessionId);
    this.session = new MediaSession({
      sessionId: welcome.sessionId,
      hop: { seal: (type, payload) => hop.sealer.seal(type as never, payload), open: (d) => {
        const { header, payload } = hop.opener.open(d);
        return { type: header.type, payload };
      } },
      crypto: this.crypto,
    });
  }

  start(members: MemberInfo[], now: number, maxBitrate: number): void {
    this.crypto.start(members.map((m) => [m.id, m.user] as const), now);
    for (const m of members) this.session.memberJoined(m.id);
    this.session.start(now);
    this.session.setMaxBitrate(maxBitrate || null, now);
    this.pump(now);
  }

  memberJoined(m: MemberInfo, now: number): void {
    this.crypto.memberJoined(m.id, m.user, now);
    this.session.memberJoined(m.id);
    this.pump(now);
  }

  memberLeft(id: number, now: number): void {
    this.crypto.memberLeft(id, now);
    this.session.memberLeft(id, now);
    this.pump(now);
  }

  async receivePeer(sender: number, data: Uint8Array, now: number): Promise<void> {
    await this.crypto.peerReceived(sender, data, now);
    this.pump(now);
  }

  async receiveChat(sender: number, data: Uint8Array, now: number): Promise<void> {
    await this.crypto.openChat(sender, data, now);
    this.pump(now);
  }

  sealChat(text: string): Promise<Uint8Array> {
    return this.crypto.sealChat(text);
  }

  /** The room's new join token: the room secret a member offered that derives it, now
   * ours (null: none did, we missed the rotation). */
  async tokenChanged(token: Uint8Array, now: number): Promise<Uint8Array | null> {
    const secret = await this.crypto.tokenChanged(token);
    this.pump(now);
    return secret;
  }

  async receiveDatagram(data: Uint8Array, now: number): Promise<void> {
    await this.session.receiveDatagram(data, now);
    this.pump(now);
  }

  /** This tick's Opus packet (null: muted): call once per tick, in tick order. */
  sendVoice(opus: Uint8Array | null, now: number): Promise<void> {
    return this.session.sendFrame(opus, now);
  }

  /** This tick's Opus packets with the voice gate's pre-roll first (MediaSession.sendFrames). */
  sendVoiceFrames(opus: readonly Uint8Array[], now: number): Promise<void> {
    return this.session.sendFrames(opus, now);
  }

  /** The frames to decode (or conceal) this tick, per sender. */
  playout(now: number): Playout[] {
    const out: Playout[] = [];
    for (const [sender, decision] of this.session.playout(now)) {
      for (const d of [decision, ...(decision.also ?? [])]) {
        if (d.kind === "frame") out.push({ sender, opus: d.opus });
        else if (d.kind === "conceal") out.push({ sender, opus: null });
      }
    }
    this.pump(now);
    return out;
  }

  datagramsToSend(): Uint8Array[] {
    return this.session.datagramsToSend();
  }

  peerMessagesToSend(): [number, Uint8Array][] {
    return this.crypto.peerMessagesToSend();
  }

  nextEvent(): MediaEvent | null {
    return this.events.shift() ?? null;
  }

  getTimer(): number | null {
    const times = [this.crypto.getTimer(), this.session.getTimer()].filter((t): t is number => t !== null);
    return times.length ? Math.min(...times) : null;
  }

  handleTimer(now: number): void {
    const crypto = this.crypto.getTimer();
    if (crypto !== null && now >= crypto) this.crypto.handleTimer(now);
    const media = this.session.getTimer();
    if (media !== null && now >= media) this.session.handleTimer(now);
    this.pump(now);
  }

  encoderHint(): EncoderHint {
    return this.session.encoderHint();
  }

  /** Route what each core found to the other, and queue what the page shows. */
  private pump(now: number): void {
    for (const { to, loss, burst } of this.session.reportsToSend()) this.crypto.sendReport(to, loss, burst);
    const released = new Map<number, Uint8Array[]>();
    for (let e = this.crypto.nextEvent(); e; e = this.crypto.nextEvent()) {
      switch (e.type) {
        case "VoiceReleased":
          released.set(e.sessionId, [...(released.get(e.sessionId) ?? []), e.payload]);
          break;
        case "ReportReceived":
          this.session.receiveReport(e.sessionId, e.loss, now, e.burst);
          break;
        case "MemberVerified":
          this.events.push({
            type: "verified",
            sender: e.sessionId,
            user: e.user,
            identity: e.identity,
            safetyNumber: e.safetyNumber,
            fingerprint: e.fingerprint,
          });
          break;
        case "MemberRejected":
          this.events.push({ type: "rejected", sender: e.sessionId, user: e.user, reason: e.reason });
          break;
        case "ChatOpened":
          this.events.push({ type: "chat", sender: e.sessionId, text: e.text });
          break;
        case "ChatGap":
          this.events.push({
            type: "problem",
            sender: e.sessionId,
            message: `${e.missing} chat message(s) never arrived (withheld by the server?)`,
          });
          break;
        case "PeerProblem":
          this.events.push({ type: "problem", sender: e.sessionId, message: e.message });
          break;
      }
    }
    for (const [sender, payloads] of released) this.session.pushReleased(sender, payloads, now);
    for (let e = this.session.nextEvent(); e; e = this.session.nextEvent()) {
      if (e.type === "relay_up") this.events.push({ type: "relay_up" });
      else if (e.type === "speaking_started") this.events.push({ type: "speaking", sender: e.sessionId, speaking: true });
      else if (e.type === "speaking_stopped") this.events.push({ type: "speaking", sender: e.sessionId, speaking: false });
    }
  }
}

export function parseInvite(text: string): Invite {
  return Invite.parse(text);
}

export type { Invite };
