// The glue of one call: the WebTransport shell, the control session, the media session
// (RoomCrypto inside), the audio engine and the codecs, driven by the capture worklet's
// 20 ms ticks; what happens goes to the UI. The cores do the protocol; nothing here
// parses or seals anything.

import { VoiceGate } from "../media/gate.ts";
import { toHex } from "../wire/bytes.ts";
import { AuthError, BangorError, CloseCode, ConnectError, KeyPinError } from "../wire/errors.ts";
import { MAX_CHAT_TEXT } from "../wire/control.ts";
import { AudioEngine, level } from "./audio.ts";
import { OpusDecoder, OpusEncoder, codecsAvailable } from "./codec.ts";
import type { PageConfig } from "./config.ts";
import {
  Control,
  Media,
  parseInvite,
  type ControlEvent,
  type Joined,
  type MemberInfo,
  type ServerError,
  type Welcome,
} from "./cores.ts";
import { checkMember, loadIdentity, type Trust } from "./identity.ts";
import { Invite } from "../wire/invite.ts";
import { Transport } from "./transport.ts";
import { MAX_VOLUME_PERCENT, type JoinRequest, type Ui } from "./ui.ts";

export const MAX_USER_NAME = 32; // server default max_user_name
export const JOIN_TIMEOUT_MS = 10_000;
/** No captured frame for this long: tick from a timer instead (a silent or lost mic). */
export const TICK_STALL_MS = 200;
export const TICK_MS = 20;
export const SPEAKING_LEVEL = 0.01; // with &vad=off: RMS of our own frame that lights our speaking mark
/** Ticks whose frames are at the encoder at once: beyond, the oldest goes out empty (an
 * encoder that stopped answering must not hold the ticks, and their seq, forever). */
export const MAX_ENCODING_TICKS = 25;
export const MAX_CHAT_KEPT = 200; // lines state() reports (tests read it)
export const MAX_ERRORS_KEPT = 50;
/** Datagrams waiting for the (async) media core beyond this are dropped, as a full
 * socket buffer would: a flood must not queue work, and memory, without bound. */
export const MAX_PENDING_DATAGRAMS = 256;
/** Core inputs of any kind waiting beyond this: the server sends more than the page can
 * take (control pushes cannot be dropped, they are in order), so the call ends. */
export const MAX_PENDING_STEPS = 4096;
/** Members the page keeps (rows, decoders, pair sessions); the server's room limit is
 * far lower (settings.max_members_per_room), so only a hostile server reaches it. */
export const MAX_MEMBERS = 256;
/** Our first Opus packets of at least OPUS_SAMPLE_BYTES (speech, not silence), kept for
 * tests that look for them where they must not be (the server-blind tap test); ~20 kB. */
export const OPUS_SAMPLE = 200;
export const OPUS_SAMPLE_BYTES = 24;

export interface CallState {
  joined: boolean;
  members: string[];
  sent_frames: number;
  received_frames: number;
  state: string;
  room: string;
  you: { id: string; user: string; nick: string } | null;
  /** nick -> verified; nick -> safety number (as the CLI prints it). */
  verified: Record<string, boolean>;
  safety_numbers: Record<string, string>;
  chat: { from: string; text: string }[];
  errors: string[];
  [more: string]: unknown;
}

export interface CallHooks {
  processing: boolean;
  /** &vad=off: no voice gate, every frame goes out while not muted. */
  vad: boolean;
  onState: (text: string, kind: "ok" | "busy" | "error") => void;
  /** The room's owner changed its invite and we got the new one (its text). */
  onInvite?: (invite: string) => void;
  ui: Ui;
}

interface Member extends MemberInfo {
  verified: boolean;
  safetyNumber: string | null;
  fingerprint: string | null;
  trust: Trust;
  rejected: string | null;
  volume: number;
  decoder: OpusDecoder | null;
}

const now = (): number => performance.now() / 1000;

/** The account name a nick makes on a server without accounts (letters, digits, _.-). */
export function userFromName(name: string): string {
  const slug = name.normalize("NFKD").replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^_+|_+$/g, "");
  return (slug || "web").slice(0, MAX_USER_NAME);
}

export function describeServerError(error: ServerError): string {
  switch (error.code) {
    case CloseCode.AUTH_FAILED:
      return `login refused: ${error.message}`;
    case CloseCode.PASSWORD_REQUIRED:
      return "this server has accounts: enter your account name and password";
    case CloseCode.ROOM_NOT_FOUND:
      return `the invite's room does not exist (any more): ${error.message}`;
    case CloseCode.REMOVED: // kicked, banned, or the room deleted: no rejoining
      return `removed: ${error.message || "the room's owner removed you"}`;
    case CloseCode.MOVED: // a cluster (PROTOCOL.md 3.14); this page does not follow it
      return `moved: ${error.message}; reconnect to join there`;
    default:
      return error.message || `the server refused (code ${error.code})`;
  }
}

export class Call {
  private readonly members = new Map<number, Member>();
  private readonly chatLog: { from: string; text: string }[] = [];
  private readonly errors: string[] = [];
  private media: Media | null = null;
  private readonly speaking = new Set<number>();
  private readonly opusSample: string[] = [];
  private encoder: OpusEncoder | null = null;
  private gate: VoiceGate | null = null;
  // Ticks in capture order, each with the frames it sends (the gate's pre-roll, then its
  // own) as the encoder returns them: a tick goes to the media session, which numbers
  // its frames, once all of them are back, and only after the ticks before it.
  private encoding: { want: number; got: Uint8Array[] }[] = [];
  private you: MemberInfo | null = null;
  private room = "";
  private status = "connecting";
  private muted = false;
  private ended = false;
  private serial: Promise<void> = Promise.resolve();
  private pendingSteps = 0;
  private pendingDatagrams = 0;
  /** Datagrams dropped because MAX_PENDING_DATAGRAMS were waiting. */
  droppedDatagrams = 0;
  private endReason = "";
  private stopWaitingForGesture: (() => void) | null = null;
  private controlTimer: ReturnType<typeof setTimeout> | null = null;
  private controlTimerAt: number | null = null;
  private stallTimer: ReturnType<typeof setTimeout> | null = null;
  private waiters: ((event: ControlEvent) => boolean)[] = [];
  private speakingSelf = false;
  private decodedFrames = 0;
  private playedFrames = 0;
  private ticks = 0;
  private endedHandler: (reason: string) => void = () => {};

  /** Called once when the call ends; at once if it ended before this was set (the
   * session may close between the join resolving and the page taking the call). */
  set onEnded(handler: (reason: string) => void) {
    this.endedHandler = handler;
    if (this.ended) handler(this.endReason);
  }

  private constructor(
    private readonly control: Control,
    private readonly transport: Transport,
    private readonly audio: AudioEngine,
    // The room's invite as it is now: a rotation replaces its secret.
    private invite: Invite,
    private readonly hooks: CallHooks,
  ) {}

  /** Connect, log in, join: resolves once in the call, or throws a BangorError to show. */
  static async join(request: JoinRequest, config: PageConfig, hostname: string, hooks: CallHooks): Promise<Call> {
    const invite = parseInvite(request.invite);
    if (!codecsAvailable()) throw new BangorError("this browser has no WebCodecs Opus (use a current Chrome or Edge)");
    if (request.name.length > 64) throw new BangorError("the name is too long (64 characters at most)");
    hooks.onState("Asking for the microphone…", "busy");
    let audio: AudioEngine;
    try {
      // A real microphone gets the browser's echo cancellation, noise suppression and gain.
      audio = await AudioEngine.open({ processing: hooks.processing });
    } catch (error) {
      throw new BangorError(`no sound in this browser: ${error instanceof Error ? error.message : String(error)}`);
    }
    let transport: Transport | null = null;
    try {
      hooks.onState("Connecting…", "busy");
      transport = await Transport.connect(config, hostname);
      const call = new Call(new Control(invite), transport, audio, invite, hooks);
      await call.start(request, config.accounts);
      return call;
    } catch (error) {
      transport?.close();
      audio.close();
      throw error;
    }
  }

  /** Log in and join; on any failure the call is ended (timers, encoder, sound, session
   * released) before the error goes to the form. */
  private async start(request: JoinRequest, accounts: boolean): Promise<void> {
    try {
      await this.enter(request, accounts);
    } catch (error) {
      this.end(error instanceof Error ? error.message : String(error));
      throw error;
    }
  }

  /** The session ended while we waited (a server may send "joined" and "bye" in one
   * write: the waiter takes the first, the second ends the call before we resume). */
  private checkEnded(): void {
    if (this.ended) throw new ConnectError(this.endReason);
  }

  private async enter(request: JoinRequest, accounts: boolean): Promise<void> {
    const { transport, control } = this;
    transport.onClose = (reason) => this.end(reason);
    transport.onControl = (data) => {
      try {
        if (data) control.receiveData(data, now());
        else control.receiveEof(now());
      } catch (error) {
        // A server key that does not match the invite, or bytes that are not the protocol.
        const message = error instanceof Error ? error.message : String(error);
        this.end(error instanceof KeyPinError ? message : `the server sent garbage: ${message}`);
        return;
      }
      this.pumpControl();
    };
    transport.onDatagram = (data) => {
      if (this.pendingDatagrams >= MAX_PENDING_DATAGRAMS) {
        this.droppedDatagrams += 1;
        return;
      }
      this.pendingDatagrams += 1;
      this.queue(() => {
        this.pendingDatagrams -= 1;
        return this.media?.receiveDatagram(data, now());
      });
    };
    this.pumpControl();

    // The control session checked the server's key against the invite before this.
    await this.waitFor("handshake");
    this.checkEnded();
    const user = accounts ? request.user : request.user || userFromName(request.name);
    this.hooks.onState("Logging in…", "busy");
    control.hello(user, accounts ? request.password : "", request.name);
    this.pumpControl();
    const welcome: Welcome = (await this.waitFor("welcome")).welcome;
    this.checkEnded();
    control.joinRoom(this.invite);
    this.pumpControl();
    const joined: Joined = (await this.waitFor("joined")).joined;
    this.checkEnded();
    if (joined.you.user !== welcome.user) {
      throw new BangorError(`the server calls us ${joined.you.user}, not ${welcome.user}; not joining`);
    }
    this.you = joined.you;
    this.room = joined.name;
    const media = (this.media = new Media({
      welcome,
      joined,
      invite: this.invite,
      identityPrivate: loadIdentity(),
    }));
    // As for member_joined: not ourselves, each once, no more than MAX_MEMBERS.
    const ids = new Set([joined.you.id]);
    const members = joined.members.filter((m) => !ids.has(m.id) && ids.add(m.id)).slice(0, MAX_MEMBERS);
    for (const m of members) this.addMember(m);
    this.gate = this.hooks.vad ? new VoiceGate() : null;
    this.encoder = new OpusEncoder();
    this.encoder.onPacket = (opus) => this.encoded(opus);
    this.encoder.onError = (error) => {
      // The frames at the encoder are gone: their ticks go out empty.
      for (const tick of this.encoding) tick.want = tick.got.length = 0;
      this.drainEncoding();
      this.problem(`the Opus encoder failed: ${error.message}`);
    };
    media.start(members, now(), joined.maxBitrate);
    this.flush();
    this.audio.onFrame = (pcm) => this.onCaptured(pcm);
    this.armStall();
    this.checkEnded(); // flushing may have read the session's end
    this.status = "joined";
    this.hooks.ui.showCall(joined.name);
    this.hooks.onState(`In ${joined.name || "the room"} — end-to-end encrypted`, "ok");
    this.hooks.ui.notice(
      `Joined. Members show "verified" once they proved the room secret; compare safety numbers to be sure.`,
    );
    if (this.audio.micError) {
      this.problem(`no microphone (${this.audio.micError}): you can listen and chat, nobody hears you`);
    }
    if (!this.audio.running) this.waitForGesture();
    this.drawMembers();
  }

  /** The browser holds sound back until the user touches the page (autojoin from a
   * link): say so, and start it on the first click or key. */
  private waitForGesture(): void {
    this.hooks.ui.notice("Sound is paused by the browser: click or press a key on the page to start it.");
    // Removed once sound runs or the call ends (a later call has its own context; this
    // one's is closed, and resuming it would reject).
    const stop = (): void => {
      document.removeEventListener("pointerdown", start);
      document.removeEventListener("keydown", start);
      this.stopWaitingForGesture = null;
    };
    const start = (): void => {
      this.audio.resume().then(
        () => {
          if (this.audio.running && !this.ended) {
            stop();
            this.hooks.ui.notice("Sound on.");
          }
        },
        () => {}, // still held back, or closed: the next gesture tries again
      );
    };
    this.stopWaitingForGesture = stop;
    document.addEventListener("pointerdown", start);
    document.addEventListener("keydown", start);
  }

  // --- the control channel ---------------------------------------------------------

  private waitFor<T extends ControlEvent["type"]>(type: T): Promise<Extract<ControlEvent, { type: T }>> {
    return new Promise((resolve, reject) => {
      if (this.ended) {
        reject(new ConnectError(this.endReason)); // already over: no event will come
        return;
      }
      const timer = setTimeout(() => {
        remove();
        reject(new ConnectError(`the server did not answer in time (waiting for ${type})`));
      }, JOIN_TIMEOUT_MS);
      const remove = (): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      const waiter = (event: ControlEvent): boolean => {
        if (event.type === type) {
          remove();
          resolve(event as Extract<ControlEvent, { type: T }>);
          return true;
        }
        if (event.type === "failed" || event.type === "ended") {
          remove();
          const error = event.error;
          const message = error ? describeServerError(error) : event.type === "ended" ? event.reason : "refused";
          reject(error?.code === CloseCode.AUTH_FAILED ? new AuthError(message) : new ConnectError(message));
          return true;
        }
        return false;
      };
      this.waiters.push(waiter);
    });
  }

  private pumpControl(): void {
    const { control } = this;
    for (let event = control.nextEvent(); event; event = control.nextEvent()) {
      const waiter = this.waiters[0];
      if (waiter && waiter(event)) continue;
      this.onControlEvent(event);
    }
    this.transport.sendControl(control.dataToSend());
    this.armControlTimer();
  }

  private armControlTimer(): void {
    const when = this.ended ? null : this.control.getTimer();
    if (when === this.controlTimerAt) return;
    if (this.controlTimer) clearTimeout(this.controlTimer);
    this.controlTimer = null;
    this.controlTimerAt = when;
    if (when === null) return;
    this.controlTimer = setTimeout(
      () => {
        this.controlTimer = null;
        this.controlTimerAt = null;
        this.control.handleTimer(Math.max(now(), when));
        this.pumpControl();
      },
      Math.max((when - now()) * 1000, 0),
    );
  }

  private onControlEvent(event: ControlEvent): void {
    if (event.type === "ended") {
      this.end(event.error ? describeServerError(event.error) : event.reason);
    } else if (event.type === "failed") {
      this.problem(describeServerError(event.error));
    } else if (event.type === "push") {
      const push = event.push;
      const t = now();
      if (push.type === "member_joined") {
        // Ourselves as another member would share our row and our pair sessions; more
        // members than any room holds would grow the page without bound.
        if (push.member.id === this.you?.id || this.members.has(push.member.id)) return;
        if (this.members.size >= MAX_MEMBERS) {
          this.problem(`the server announced more than ${MAX_MEMBERS} members: ${push.member.nick} ignored`);
          return;
        }
        this.addMember(push.member);
        this.queue(() => this.media?.memberJoined(push.member, t));
      } else if (push.type === "member_left") {
        this.removeMember(push.id);
        this.queue(() => this.media?.memberLeft(push.id, t));
      } else if (push.type === "peer_from") {
        this.queue(() => this.media?.receivePeer(push.sender, push.data, t));
      } else if (push.type === "chat") {
        this.queue(() => this.media?.receiveChat(push.sender, push.data, t));
      } else if (push.type === "token") {
        // Queued behind the pair messages before it: the owner's offer comes first.
        this.queue(async () => this.onTokenChanged(await this.media?.tokenChanged(push.token, t)));
      }
    }
  }

  // --- the media session -------------------------------------------------------------

  /** Run core inputs one at a time (WebCrypto makes them async), each then flushed. */
  private queue(step: () => Promise<void> | void | undefined): void {
    if (this.ended) return;
    if (this.pendingSteps >= MAX_PENDING_STEPS) {
      this.end("the server sends more than this page can take");
      return;
    }
    this.pendingSteps += 1;
    const report = (error: unknown): void =>
      this.problem(`internal error: ${error instanceof Error ? error.message : String(error)}`);
    // flush() is caught too: a throw there would leave the chain rejected, so the next
    // step would be skipped (and the last one's rejection unhandled).
    this.serial = this.serial
      .then(step)
      .catch(report)
      .then(() => this.flush())
      .catch(report)
      .finally(() => {
        this.pendingSteps -= 1;
      });
  }

  private flush(): void {
    const media = this.media;
    if (!media || this.ended) return;
    for (const data of media.datagramsToSend()) this.transport.sendDatagram(data);
    for (const [to, data] of media.peerMessagesToSend()) this.control.sendPeer(to, data);
    for (let event = media.nextEvent(); event; event = media.nextEvent()) {
      if (event.type === "chat") {
        const m = this.members.get(event.sender);
        this.addChat(m?.nick ?? `member ${event.sender}`, event.text); // decimal, as the CLI shows ids
      } else if (event.type === "verified") {
        this.onVerified(event.sender, event.user, event.identity, event.safetyNumber, event.fingerprint);
      } else if (event.type === "speaking") {
        if (event.speaking) this.speaking.add(event.sender);
        else this.speaking.delete(event.sender);
      } else if (event.type === "rejected") {
        const m = this.members.get(event.sender);
        if (m) {
          m.rejected = event.reason;
          this.drawMember(m);
        }
        this.problem(`${m?.nick ?? event.user} was not verified: ${event.reason}`);
      } else if (event.type === "problem") {
        const m = this.members.get(event.sender);
        this.problem(`end-to-end problem with ${m?.nick ?? "a member"}: ${event.message}`);
      }
    }
    this.pumpControl();
  }

  private onTokenChanged(secret: Uint8Array | null | undefined): void {
    if (secret === undefined || this.ended) return;
    if (secret === null) {
      this.problem(
        "the room's owner changed its invite and this browser did not get the new one: " +
          "members who join with it cannot verify you; ask the owner for it",
      );
      return;
    }
    const old = this.invite;
    this.invite = new Invite(old.host, old.port, old.roomId, secret, old.fingerprint);
    const text = this.invite.encode();
    this.hooks.ui.notice(`The room's owner changed its invite; the new one: ${text}`);
    this.hooks.onInvite?.(text);
  }

  private onVerified(id: number, user: string, identity: Uint8Array, safetyNumber: string, fingerprint: string): void {
    const m = this.members.get(id);
    if (!m) return;
    m.verified = true;
    m.rejected = null;
    m.safetyNumber = safetyNumber;
    m.fingerprint = fingerprint;
    m.trust = checkMember(`${this.invite.host}:${this.invite.port}`, user, identity);
    if (m.trust === "changed") {
      this.problem(`${m.nick}'s identity key changed since last time: compare the safety number ${m.safetyNumber}`);
    }
    this.drawMember(m);
  }

  private onCaptured(pcm: Float32Array<ArrayBuffer>): void {
    if (this.ended || !this.media) return;
    this.armStall();
    const gate = this.gate;
    let frames: Float32Array<ArrayBuffer>[];
    if (this.muted) {
      gate?.reset(); // nothing from before muting goes out after it
      frames = [];
    } else {
      frames = gate ? gate.process(pcm) : [pcm];
    }
    this.speakingSelf = gate ? frames.length > 0 : !this.muted && level(pcm) > SPEAKING_LEVEL;
    this.sendTick(frames);
    this.tick();
  }

  /** One tick's frames to the encoder; the tick is sent once they are all encoded.
   * Only what the gate passes is encoded (as the CLI does): Opus predicts each frame
   * from the ones before, so the listener's decoder, which only sees what is sent, stays
   * in step with the encoder, and the first packets of a spurt decode clean (a spurt
   * starts on the pre-roll, after the quiet end of the last one's hang-over). Encoding
   * every frame and sending some would leave the decoder a gap the encoder never had. */
  private sendTick(frames: Float32Array<ArrayBuffer>[]): void {
    // Only frames the encoder took are waited for: one that failed takes none, and its
    // ticks go out empty (seq goes on) instead of waiting for packets that never come.
    const tick = { want: 0, got: [] as Uint8Array[] };
    this.encoding.push(tick);
    for (const frame of frames) if (this.encoder?.encode(frame)) tick.want += 1;
    this.drainEncoding();
  }

  private encoded(opus: Uint8Array): void {
    const tick = this.encoding.find((t) => t.got.length < t.want);
    if (!tick) return; // from before an encoder error: its tick already went out empty
    tick.got.push(opus);
    this.drainEncoding();
  }

  private drainEncoding(): void {
    const encoding = this.encoding;
    while (encoding.length > MAX_ENCODING_TICKS) {
      encoding.shift();
      this.queue(() => this.sendVoice([]));
    }
    while (encoding.length && encoding[0]!.got.length >= encoding[0]!.want) {
      const { got } = encoding.shift()!;
      this.queue(() => this.sendVoice(got));
    }
  }

  /** The capture worklet went quiet (or never started): tick from a timer until it
   * delivers again, so keepalives, reports and playout go on. */
  private armStall(delay = TICK_STALL_MS): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    if (this.ended) return;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.ended) return;
      this.sendTick([]);
      this.tick();
      this.armStall(TICK_MS);
    }, delay);
  }

  /** One tick's Opus packets, oldest first, ending with this tick's; none: not sent. */
  private async sendVoice(opus: Uint8Array[]): Promise<void> {
    const media = this.media;
    if (!media) return;
    for (const packet of opus) {
      if (packet.length >= OPUS_SAMPLE_BYTES && this.opusSample.length < OPUS_SAMPLE) {
        this.opusSample.push(toHex(packet));
      }
    }
    await media.sendVoiceFrames(opus, now());
    const hint = media.encoderHint();
    this.encoder?.setPlan({ bitrate: hint.bitrate, lossPercent: hint.packetlossperc });
  }

  private tick(): void {
    this.ticks += 1;
    this.queue(async () => {
      const media = this.media;
      if (!media) return;
      const t = now();
      const due = media.getTimer();
      if (due !== null && t >= due) media.handleTimer(t);
      for (const { sender, opus } of media.playout(t)) {
        const m = this.members.get(sender);
        if (!m) continue;
        const decoder = m.decoder ?? (m.decoder = this.newDecoder(sender));
        if (opus) {
          this.decodedFrames += 1;
          decoder.decode(opus);
        } else {
          decoder.conceal();
        }
      }
      if (this.ticks % 10 === 0) this.drawSpeaking();
    });
  }

  private newDecoder(sender: number): OpusDecoder {
    const decoder = new OpusDecoder();
    decoder.onFrame = (pcm) => {
      this.playedFrames += 1;
      this.audio.play(sender, pcm);
    };
    return decoder;
  }

  // --- members, chat, controls -------------------------------------------------------

  private addMember(info: MemberInfo): void {
    if (this.members.has(info.id)) return;
    const m: Member = {
      ...info,
      verified: false,
      safetyNumber: null,
      fingerprint: null,
      trust: "unknown",
      rejected: null,
      volume: 100,
      decoder: null,
    };
    this.members.set(info.id, m);
    if (this.status === "joined") {
      this.hooks.ui.notice(`${info.nick} joined`);
      this.drawMember(m);
    }
  }

  private removeMember(id: number): void {
    const m = this.members.get(id);
    if (!m) return;
    m.decoder?.close();
    this.members.delete(id);
    this.speaking.delete(id); // one who left mid-word: no mark (or entry) left behind
    this.audio.forget(id);
    this.hooks.ui.removeMember(id);
    this.hooks.ui.notice(`${m.nick} left`);
  }

  private drawMembers(): void {
    if (this.you) {
      this.hooks.ui.member({
        ...this.you,
        self: true,
        verified: true,
        safetyNumber: null,
        trust: "known",
        rejected: null,
        speaking: this.speakingSelf,
        volume: 100,
      });
    }
    for (const m of this.members.values()) this.drawMember(m);
  }

  private drawMember(m: Member): void {
    if (this.status !== "joined") return;
    this.hooks.ui.member({ ...m, self: false, speaking: this.speaking.has(m.id) });
  }

  private drawSpeaking(): void {
    this.drawMembers();
  }

  private addChat(from: string, text: string, self = false): void {
    this.chatLog.push({ from, text });
    if (this.chatLog.length > MAX_CHAT_KEPT) this.chatLog.shift();
    this.hooks.ui.chat(from, text, self);
  }

  private problem(message: string): void {
    this.errors.push(message);
    if (this.errors.length > MAX_ERRORS_KEPT) this.errors.shift();
    if (this.status === "joined") this.hooks.ui.notice(message);
  }

  say(text: string): void {
    const media = this.media;
    if (!media || this.ended) return;
    if (text.length > MAX_CHAT_TEXT) {
      this.problem(`chat line too long (over ${MAX_CHAT_TEXT} characters)`);
      return;
    }
    this.queue(async () => {
      this.control.sendChat(await media.sealChat(text));
      this.addChat(this.you?.nick ?? "me", text, true);
    });
  }

  setMuted(muted: boolean): void {
    this.muted = muted;
  }

  setVolume(id: number, percent: number): void {
    const m = this.members.get(id);
    if (!m || !(percent >= 0 && percent <= MAX_VOLUME_PERCENT)) return;
    m.volume = percent;
    this.audio.setGain(id, percent / 100);
    this.drawMember(m);
  }

  leave(): void {
    if (this.ended) return;
    this.control.leave();
    this.transport.sendControl(this.control.dataToSend());
    this.end("left the room");
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.endReason = reason;
    this.status = "left";
    this.stopWaitingForGesture?.();
    if (this.controlTimer) clearTimeout(this.controlTimer);
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.controlTimer = this.stallTimer = null;
    for (const waiter of [...this.waiters]) waiter({ type: "ended", reason, error: null });
    this.encoder?.close();
    for (const m of this.members.values()) m.decoder?.close();
    // Let the goodbye go out before the session closes.
    setTimeout(() => this.transport.close(), 100);
    this.audio.close();
    this.endedHandler(reason);
  }

  /** Our first Opus packets (hex), as the encoder made them. */
  sentOpus(): string[] {
    return [...this.opusSample];
  }

  state(): CallState {
    const verified: Record<string, boolean> = {};
    const numbers: Record<string, string> = {};
    for (const m of this.members.values()) {
      verified[m.nick] = m.verified;
      if (m.safetyNumber) numbers[m.nick] = m.safetyNumber;
    }
    const stats = this.media?.session.stats(now());
    return {
      joined: this.status === "joined",
      members: [...this.members.values()].map((m) => m.nick),
      sent_frames: stats?.sentFrames ?? 0,
      /** Ticks with no frame sent (the voice gate held it back, or mute). */
      suppressed_frames: stats?.suppressed ?? 0,
      vad: this.gate !== null,
      received_frames: stats?.receivedFrames ?? 0,
      decoded_frames: this.decodedFrames,
      played_frames: this.playedFrames,
      captured_frames: this.audio.captured,
      state: this.status,
      room: this.room,
      /** The room's invite as it is now (a rotation replaces it). */
      invite: this.invite.encode(),
      identity: this.media ? toHex(this.media.crypto.identityPublic) : null,
      you: this.you ? { id: this.you.id.toString(16).padStart(8, "0"), user: this.you.user, nick: this.you.nick } : null,
      verified,
      safety_numbers: numbers,
      fingerprints: Object.fromEntries([...this.members.values()].map((m) => [m.nick, m.fingerprint])),
      chat: [...this.chatLog],
      errors: [...this.errors],
      rtt_ms: stats?.rtt == null ? null : Math.round(stats.rtt * 100_000) / 100,
      undecryptable: stats?.undecryptable ?? 0,
      dropped: stats?.dropped ?? 0,
      redundancy: stats?.redundancy ?? 0,
      datagrams_sent: this.transport.datagramsSent,
      datagrams_received: this.transport.datagramsReceived,
      oversize: this.transport.oversize,
      dropped_datagrams: this.droppedDatagrams,
      max_datagram_size: this.transport.maxDatagramSize,
    };
  }
}
