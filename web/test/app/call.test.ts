// The call's glue (app/client.ts) with the browser parts faked: a control session that
// yields scripted events, a transport, an audio engine and a UI that record what they
// are asked. What a hostile server can do to the page's state, timers and queues.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { Call, MAX_MEMBERS, MAX_PENDING_DATAGRAMS, MAX_PENDING_STEPS } from "../../src/app/client.ts";
import type { ControlEvent } from "../../src/app/cores.ts";
import { Invite } from "../../src/wire/invite.ts";
import { deriveJoinToken } from "../../src/wire/pairwise.ts";
import { AuthError, CloseCode, ConnectError } from "../../src/wire/errors.ts";

const invite = new Invite("example.org", 7600, new Uint8Array(8).fill(7), new Uint8Array(16).fill(9), new Uint8Array(16));
const request = { invite: "", name: "Ana", user: "", password: "" };
const later = (ms = 0) => new Promise((r) => setTimeout(r, ms));

class FakeControl {
  /** Events the next receiveData() makes (as one write from the server would). */
  script: ControlEvent[] = [];
  events: ControlEvent[] = [];
  timerAt: number | null = null;
  handled = 0;
  receiveData(): void {
    this.events.push(...this.script.splice(0));
  }
  receiveEof(): void {
    this.events.push({ type: "ended", reason: "the server closed the connection", error: null });
  }
  dataToSend(): Uint8Array {
    return new Uint8Array(0);
  }
  nextEvent(): ControlEvent | null {
    return this.events.shift() ?? null;
  }
  getTimer(): number | null {
    return this.timerAt;
  }
  handleTimer(): void {
    this.handled += 1;
    this.timerAt = performance.now() / 1000 + 0.02; // a keepalive, again and again
  }
  hello(): void {}
  joined: unknown[] = [];
  joinRoom(invite: unknown): void {
    this.joined.push(invite);
  }
  sendChat(): void {}
  sendPeer(): void {}
  leave(): void {}
}

class FakeTransport {
  onControl: (data: Uint8Array | null) => void = () => {};
  onDatagram: (data: Uint8Array) => void = () => {};
  onClose: (reason: string) => void = () => {};
  closed = false;
  datagramsSent = 0;
  datagramsReceived = 0;
  oversize = 0;
  maxDatagramSize = 1211;
  sendControl(): void {}
  sendDatagram(): void {}
  close(): void {
    this.closed = true;
  }
  /** The server writes these events on the control stream. */
  write(control: FakeControl, ...events: ControlEvent[]): void {
    control.script.push(...events);
    this.onControl(new Uint8Array([1]));
  }
}

class FakeAudio {
  onFrame: (pcm: Float32Array) => void = () => {};
  captured = 0;
  micError: string | null = null;
  running = true;
  closed = false;
  resume(): Promise<void> {
    return this.closed ? Promise.reject(new Error("the context is closed")) : Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  play(): void {}
  setGain(): void {}
  forget(): void {}
}

interface Internals {
  ended: boolean;
  controlTimer: unknown;
  stallTimer: unknown;
  media: unknown;
  serial: Promise<void>;
  pendingSteps: number;
  droppedDatagrams: number;
  start(request: unknown, accounts: boolean): Promise<void>;
  queue(step: () => unknown): void;
  waitForGesture(): void;
}

/** A WebCodecs AudioEncoder that takes its configuration and encodes nothing, for this test. */
function fakeAudioEncoder(t: TestContext): void {
  const g = globalThis as Record<string, unknown>;
  g.AudioEncoder = class {
    state = "configured";
    configure(): void {}
    close(): void {
      this.state = "closed";
    }
  };
  t.after(() => delete g.AudioEncoder);
}

function makeCall() {
  const control = new FakeControl();
  const transport = new FakeTransport();
  const audio = new FakeAudio();
  const notices: string[] = [];
  const ui = new Proxy({} as Record<string, unknown>, {
    get: (_, name) => (name === "notice" ? (text: string) => notices.push(text) : () => {}),
  });
  const states: string[] = [];
  const invites: string[] = [];
  const hooks = {
    processing: false,
    vad: false,
    onState: (text: string) => states.push(text),
    onInvite: (text: string) => invites.push(text),
    ui,
  };
  const Ctor = Call as unknown as new (...args: unknown[]) => Call;
  const call = new Ctor(control, transport, audio, invite, hooks);
  return { call, inner: call as unknown as Internals, control, transport, audio, notices, states, invites };
}

const handshake: ControlEvent = { type: "handshake", remoteStatic: new Uint8Array(32) };
const welcome: ControlEvent = {
  type: "welcome",
  welcome: { sessionId: 0x11, user: "Ana", mediaSecret: new Uint8Array(32).fill(3) },
};
const joined: ControlEvent = {
  type: "joined",
  joined: { roomId: invite.roomIdHex, name: "room", you: { id: 0x11, user: "Ana", nick: "Ana" }, members: [], maxBitrate: 0 },
};
const bye: ControlEvent = { type: "ended", reason: "the server closed the session", error: null };

test("a login the server refuses ends the call: no timer keeps running, sound and session released", async () => {
  const { inner, control, transport, audio } = makeCall();
  control.timerAt = performance.now() / 1000 + 0.02;
  const joining = inner.start(request, false);
  transport.write(control, handshake);
  await later();
  transport.write(control, {
    type: "failed",
    error: { code: CloseCode.AUTH_FAILED, message: "no", ref: "", retryAfter: 0 },
    ref: "hello",
  });
  await assert.rejects(joining, AuthError);
  assert.equal(inner.ended, true);
  assert.equal(audio.closed, true);
  const handled = control.handled;
  await later(150);
  assert.equal(control.handled, handled, "the control timer still runs after a failed join");
  assert.equal(inner.controlTimer, null);
  assert.equal(transport.closed, true);
});

test("joined and bye in one write: the join fails with the reason, the page never shows a dead call", async (t) => {
  fakeAudioEncoder(t);
  const { call, inner, control, transport, states } = makeCall();
  const joining = inner.start(request, false);
  transport.write(control, handshake);
  await later();
  transport.write(control, welcome);
  await later();
  transport.write(control, joined, bye);
  await assert.rejects(joining, (e: unknown) => e instanceof ConnectError && /closed the session/.test(e.message));
  assert.equal(call.state().joined, false);
  assert.equal(inner.stallTimer, null);
  assert.ok(!states.some((s) => s.startsWith("In ")), states.join(" | "));
});

test("a step whose flush throws does not make the next step be skipped", async () => {
  const { inner } = makeCall();
  let thrown = false;
  inner.media = {
    datagramsToSend: (): Uint8Array[] => {
      if (!thrown) {
        thrown = true;
        throw new Error("boom");
      }
      return [];
    },
    peerMessagesToSend: () => [],
    nextEvent: () => null,
  };
  const ran: number[] = [];
  inner.queue(() => ran.push(1));
  inner.queue(() => ran.push(2));
  await inner.serial;
  assert.deepEqual(ran, [1, 2]);
});

test("a datagram flood is dropped beyond a bound; a push flood ends the call", async () => {
  const { call, inner, control, transport } = makeCall();
  const joining = inner.start(request, false).catch((e: unknown) => e);
  let release = (): void => {};
  const stalled = new Promise<void>((r) => (release = r));
  let received = 0;
  inner.media = {
    receiveDatagram: async () => {
      received += 1;
      await stalled; // WebCrypto slower than the network
    },
    receivePeer: async () => {
      await stalled;
    },
    datagramsToSend: () => [],
    peerMessagesToSend: () => [],
    nextEvent: () => null,
  };
  for (let i = 0; i < 10_000; i++) transport.onDatagram(new Uint8Array(40));
  assert.ok(inner.pendingSteps <= MAX_PENDING_DATAGRAMS, String(inner.pendingSteps));
  assert.equal(inner.droppedDatagrams, 10_000 - MAX_PENDING_DATAGRAMS);
  release();
  await inner.serial;
  assert.equal(received, MAX_PENDING_DATAGRAMS);
  assert.equal(inner.pendingSteps, 0);
  // Pushes cannot be dropped (they are in order): too many waiting ends the call.
  let ended = "";
  call.onEnded = (reason) => (ended = reason);
  const push: ControlEvent = { type: "push", push: { type: "peer_from", sender: 2, data: new Uint8Array(8) } };
  const stall2 = new Promise<void>(() => {});
  (inner.media as { receivePeer: () => Promise<void> }).receivePeer = () => stall2;
  transport.write(control, ...Array.from({ length: MAX_PENDING_STEPS + 10 }, () => push));
  assert.equal(inner.ended, true);
  assert.match(ended, /more than this page can take/);
  assert.ok(inner.pendingSteps <= MAX_PENDING_STEPS);
  await joining;
});

test("the wait for a gesture to start sound ends with the call", async () => {
  const listeners = new Set<string>();
  const g = globalThis as Record<string, unknown>;
  g.document = {
    addEventListener: (type: string) => listeners.add(type),
    removeEventListener: (type: string) => listeners.delete(type),
  };
  try {
    const { call, inner, audio } = makeCall();
    audio.running = false;
    inner.waitForGesture();
    assert.deepEqual([...listeners].sort(), ["keydown", "pointerdown"]);
    call.leave();
    assert.equal(listeners.size, 0, "a later click would resume this call's closed context");
  } finally {
    delete g.document;
  }
});

test("a call that ended before the page took it still tells the page", () => {
  const { call } = makeCall();
  call.leave();
  let reason = "";
  call.onEnded = (r) => (reason = r);
  assert.equal(reason, "left the room");
});

test("member_joined for ourselves, twice, or beyond any room's size is not taken", () => {
  const { call, inner } = makeCall();
  const joinedCalls: number[] = [];
  Object.assign(inner, { you: { id: 0x11, user: "Ana", nick: "Ana" }, status: "joined" });
  inner.media = {
    memberJoined: (m: { id: number }) => joinedCalls.push(m.id),
    datagramsToSend: () => [],
    peerMessagesToSend: () => [],
    nextEvent: () => null,
    session: { stats: () => ({}) },
    crypto: { identityPublic: new Uint8Array(32) },
  };
  const onEvent = (inner as unknown as { onControlEvent(e: ControlEvent): void }).onControlEvent.bind(inner);
  const joinedPush = (id: number): ControlEvent => ({
    type: "push",
    push: { type: "member_joined", member: { id, user: `u${id}`, nick: `n${id}` } },
  });
  onEvent(joinedPush(0x11)); // ourselves
  assert.equal(call.state().members.length, 0);
  for (let id = 1; id <= MAX_MEMBERS + 100; id++) onEvent(joinedPush(0x1000 + id));
  onEvent(joinedPush(0x1001)); // again
  assert.equal(call.state().members.length, MAX_MEMBERS);
  call.leave();
});

test("the joined list is taken without ourselves and each member once", async (t) => {
  fakeAudioEncoder(t);
  const { call, inner, control, transport } = makeCall();
  const joining = inner.start(request, false);
  transport.write(control, handshake);
  await later();
  transport.write(control, welcome);
  await later();
  const bo = { id: 0x22, user: "bo", nick: "Bo" };
  const you = { id: 0x11, user: "Ana", nick: "Ana" };
  transport.write(control, { type: "joined", joined: { ...(joined as { joined: object }).joined, members: [you, bo, bo] } } as ControlEvent);
  await joining;
  assert.deepEqual(call.state().members, ["Bo"]);
  assert.equal(call.state().joined, true);
  call.leave();
  assert.equal(inner.stallTimer, null);
});

test("a member who leaves while speaking leaves nothing behind", () => {
  const { call, inner } = makeCall();
  Object.assign(inner, { you: { id: 0x11, user: "Ana", nick: "Ana" }, status: "joined" });
  inner.media = {
    memberJoined: () => {},
    memberLeft: () => {},
    datagramsToSend: () => [],
    peerMessagesToSend: () => [],
    nextEvent: () => null,
    session: { stats: () => ({}) },
    crypto: { identityPublic: new Uint8Array(32) },
  };
  const onEvent = (inner as unknown as { onControlEvent(e: ControlEvent): void }).onControlEvent.bind(inner);
  const speaking = (inner as unknown as { speaking: Set<number> }).speaking;
  for (let id = 0x100; id < 0x100 + 1000; id++) {
    onEvent({ type: "push", push: { type: "member_joined", member: { id, user: `u${id}`, nick: `n${id}` } } });
    speaking.add(id); // speaking_started from the media core
    onEvent({ type: "push", push: { type: "member_left", id } });
  }
  assert.equal(speaking.size, 0);
  assert.equal(call.state().members.length, 0);
  call.leave();
});

test("PROTOCOL 3.15: the join names the invite; a rotation we were offered gives the page the new invite", async (t) => {
  fakeAudioEncoder(t);
  const { call, inner, control, transport, notices, invites } = makeCall();
  const joining = inner.start(request, false);
  transport.write(control, handshake);
  await later();
  transport.write(control, welcome);
  await later();
  transport.write(control, joined);
  await joining;
  assert.deepEqual(control.joined, [invite]); // Control.joinRoom derives its token
  assert.equal(call.state().invite, invite.encode());
  const crypto = (inner.media as { crypto: { offerSecret(s: Uint8Array): number[] } }).crypto;
  // A token no offer derives: a warning, the invite stays.
  const next = new Uint8Array(16).fill(0x33);
  crypto.offerSecret(next);
  const other = deriveJoinToken(new Uint8Array(16).fill(0x34), invite.roomId);
  transport.write(control, { type: "push", push: { type: "token", token: other } });
  await inner.serial;
  assert.equal(call.state().invite, invite.encode());
  assert.match((call.state().errors as string[]).at(-1) ?? "", /changed its invite and this browser did not get the new one/);
  assert.deepEqual(invites, []);
  // The offered secret's token: the page has the new invite, and shows it.
  transport.write(control, { type: "push", push: { type: "token", token: deriveJoinToken(next, invite.roomId) } });
  await inner.serial;
  const fresh = new Invite(invite.host, invite.port, invite.roomId, next, invite.fingerprint).encode();
  assert.equal(call.state().invite, fresh);
  assert.deepEqual(invites, [fresh]);
  assert.ok(notices.some((n) => n.includes(fresh)), notices.join(" | "));
  assert.equal(call.state().joined, true);
  // Then the owner kicks us: the call ends with the server's reason, nothing retried.
  let reason = "";
  call.onEnded = (r) => (reason = r);
  transport.write(control, {
    type: "ended",
    reason: "the server closed the session",
    error: { code: CloseCode.REMOVED, message: "removed from the room by its owner", ref: "", retryAfter: 0 },
  });
  assert.equal(reason, "removed: removed from the room by its owner");
  assert.equal(call.state().state, "left");
  assert.equal(inner.ended, true);
  assert.equal(control.joined.length, 1);
});
