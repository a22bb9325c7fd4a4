// The page's glue of RoomCrypto and MediaSession (app/cores.ts) for two members over an
// in-memory relay that does what the server does (hop open, relayed prefix, hop seal
// per recipient): they verify each other with one safety number, voice flows both
// ways as the frames sent, chat opens, and a frame sent before the keys arrive is
// held and then played (RoomCrypto's release routed into the jitter buffer).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Media, type MediaEvent, type MemberInfo, type Playout } from "../../src/app/cores.ts";
import { Invite } from "../../src/wire/invite.ts";
import { deriveMediaKeys, HopOpener, HopSealer, PacketType } from "../../src/wire/media.ts";
import { packRelayed } from "../../src/wire/voice.ts";

const OPUS = (n: number): Uint8Array => Uint8Array.of(0xf8, n & 0xff, 0xfe); // 20 ms CELT TOC

interface Side {
  info: MemberInfo;
  media: Media;
  fromServer: HopSealer; // the server's sealer towards this member
  toServer: HopOpener; // the server's opener of this member's packets
  events: MediaEvent[];
  played: Playout[];
}

function side(id: number, user: string, invite: Invite, others: MemberInfo[]): Side {
  const mediaSecret = crypto.getRandomValues(new Uint8Array(32));
  const keys = deriveMediaKeys(mediaSecret);
  const info = { id, user, nick: user.toUpperCase() };
  const media = new Media({
    welcome: { sessionId: id, user, mediaSecret },
    joined: { roomId: invite.roomIdHex, name: "room", you: info, members: others, maxBitrate: 0 },
    invite,
    identityPrivate: crypto.getRandomValues(new Uint8Array(32)),
  });
  return {
    info,
    media,
    fromServer: new HopSealer(keys.serverToClient, id),
    toServer: new HopOpener(keys.clientToServer, id),
    events: [],
    played: [],
  };
}

/** Everything each side queued, delivered to the other (pair messages, relayed voice). */
async function deliver(a: Side, b: Side, now: number): Promise<void> {
  for (let moved = true; moved; ) {
    moved = false;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const [dest, data] of from.media.peerMessagesToSend()) {
        assert.equal(dest, to.info.id);
        await to.media.receivePeer(from.info.id, data, now);
        moved = true;
      }
      for (const datagram of from.media.datagramsToSend()) {
        const { header, payload } = from.toServer.open(datagram);
        if (header.type === PacketType.VOICE) {
          const relayed = to.fromServer.seal(PacketType.VOICE, packRelayed(from.info.id, payload));
          await to.media.receiveDatagram(relayed, now);
          moved = true;
        }
      }
      for (let e = from.media.nextEvent(); e; e = from.media.nextEvent()) from.events.push(e);
    }
  }
}

test("two members verify each other, talk both ways and chat through the glue", async () => {
  const invite = new Invite("example.org", 7600, new Uint8Array(8).fill(7), new Uint8Array(16).fill(9), new Uint8Array(16));
  const aInfo = { id: 0x11, user: "ana", nick: "ANA" };
  const a = side(0x11, "ana", invite, []);
  const b = side(0x22, "bo", invite, [aInfo]);
  let now = 100;
  a.media.start([], now, 0);
  // ana sends before bo is even there: nobody to hear it, nothing breaks.
  await a.media.sendVoice(OPUS(0), now);
  b.media.start([aInfo], now, 0);
  // bo's first frame goes out before the keys: ana holds it, then plays it.
  await b.media.sendVoice(OPUS(1), now);
  a.media.memberJoined(b.info, now);
  // That frame reaches ana before any pair message: she knows bo, not his key yet.
  for (const datagram of b.media.datagramsToSend()) {
    const { header, payload } = b.toServer.open(datagram);
    if (header.type === PacketType.VOICE) {
      await a.media.receiveDatagram(a.fromServer.seal(PacketType.VOICE, packRelayed(0x22, payload)), now);
    }
  }
  assert.equal(a.media.session.stats(now).receivedFrames, 0); // held, not dropped
  assert.equal(a.media.session.stats(now).undecryptable, 0);
  await deliver(a, b, now);
  assert.equal(a.media.session.stats(now).receivedFrames, 1); // released with bo's key

  const verified = (s: Side) => s.events.filter((e) => e.type === "verified");
  const [av] = verified(a);
  const [bv] = verified(b);
  assert.ok(av && av.type === "verified" && av.sender === 0x22 && av.user === "bo");
  assert.ok(bv && bv.type === "verified" && bv.sender === 0x11 && bv.user === "ana");
  assert.equal(av.safetyNumber, bv.safetyNumber);
  assert.match(av.safetyNumber, /^(\d{5} ){7}\d{5}$/);

  // Until a listener reports, a sender repeats frames (startup protection).
  assert.ok(a.media.session.sender.plan.depth > 0);
  for (let tick = 2; tick < 80; tick++) {
    now += 0.02;
    await a.media.sendVoice(OPUS(tick), now);
    await b.media.sendVoice(OPUS(100 + tick), now);
    await deliver(a, b, now);
    a.played.push(...a.media.playout(now));
    b.played.push(...b.media.playout(now));
    if (a.media.getTimer()! <= now) a.media.handleTimer(now);
    if (b.media.getTimer()! <= now) b.media.handleTimer(now);
  }
  const frames = (s: Side) => s.played.filter((p) => p.opus).map((p) => p.opus![1]);
  // Every frame bo sent reached ana in order, the held first one included.
  assert.deepEqual(frames(a).slice(0, 5), [1, 102, 103, 104, 105]);
  // ana's frame sent before bo joined (this relay forwards it anyway) is held, then played.
  assert.deepEqual(frames(b).slice(0, 4), [0, 2, 3, 4]);
  assert.ok(frames(b).length >= 30 && frames(b).slice(1).every((n, i, all) => i === 0 || n === all[i - 1]! + 1));
  assert.ok(a.played.every((p) => p.sender === 0x22) && b.played.every((p) => p.sender === 0x11));
  // bo's reception reports on ana's voice went through the pair channel into ana's
  // send plan: no loss reported, so the startup repetition stops.
  assert.equal(a.media.session.sender.plan.depth, 0);
  assert.equal(b.media.session.sender.plan.depth, 0);
  assert.ok(a.events.some((e) => e.type === "speaking" && e.speaking && e.sender === 0x22));

  const sealed = await b.media.sealChat("<b>hi</b> ana");
  await a.media.receiveChat(0x22, sealed, now);
  await deliver(a, b, now);
  assert.deepEqual(
    a.events.filter((e) => e.type === "chat"),
    [{ type: "chat", sender: 0x22, text: "<b>hi</b> ana" }],
  );
  // A forged chat (a flipped byte) is a problem reported, not text shown.
  const forged = Uint8Array.from(sealed);
  forged[forged.length - 1]! ^= 1;
  await a.media.receiveChat(0x22, forged, now);
  await deliver(a, b, now);
  assert.equal(a.events.filter((e) => e.type === "chat").length, 1);
  assert.ok(a.events.some((e) => e.type === "problem" && e.sender === 0x22));

  a.media.memberLeft(0x22, now);
  await deliver(a, b, now);
  assert.ok(a.events.some((e) => e.type === "speaking" && !e.speaking && e.sender === 0x22));
});
