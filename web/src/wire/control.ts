// Control-channel messages (PROTOCOL.md 3, wire/control.py): msgpack maps tagged by "t",
// one per Noise transport message. Encoding writes "t" first, then every field in
// declaration order (defaults too), exactly as msgspec does. Decoding is strict and
// side-specific, with msgspec's wording: an unknown tag, a missing field, a wrong type or
// a value outside its limit raises DecodeError("malformed control message: ..."); keys
// that are not fields are ignored.
//
// In TypeScript the fields are camelCase (sessionId for session_id); ints are numbers
// (exact up to 2**53; larger values only occur in the free `int` fields and in hostile
// input, where precision does not matter).

import { DecodeError, LocalProtocolError } from "./errors.ts";
import { MEDIA_SECRET_SIZE } from "./media.ts";
import { MpMap, MpWriter, NESTED_TOO_DEEPLY, typeName, unpack, type MpValue } from "./msgpack.ts";

export const PROTOCOL_VERSION = 1;
export const MAX_NAME = 64; // user names and nicks
export const MAX_ROOM_NAME = 64;
export const MAX_PASSWORD = 1024;
export const MAX_CHAT_TEXT = 2000;
export const MAX_SEALED_CHAT = MAX_CHAT_TEXT * 4 + 256; // 8256
export const MAX_PEER_MESSAGE = 4096;
export const MAX_BITRATE = 510_000;
/** Seconds a refused client waits at most: a hostile server cannot park it for ever. */
export const MAX_RETRY_AFTER = 3600.0;
export const MAX_LOCATION = 262; // MOVED's "HOST:PORT" (PROTOCOL.md 3.14)
export const ROOM_ID_PATTERN = "^[0-9a-f]{16}$";
/** A room's join token (PROTOCOL.md 3.15): pairwise.deriveJoinToken of the invite's secret. */
export const JOIN_TOKEN_SIZE = 32;
/** At most this many rooms in a room list (control.py's MAX_LISTED_ROOMS). */
export const MAX_LISTED_ROOMS = 1000;
/** At most this many names in a ban list (control.py's MAX_LISTED_BANS). */
export const MAX_LISTED_BANS = 500;
export { NESTED_TOO_DEEPLY };

export interface Member {
  readonly sessionId: number;
  readonly user: string;
  readonly nick: string;
}

// client -> server
export interface Hello {
  readonly t: "hello";
  readonly version: number;
  readonly user: string;
  readonly password: string;
  readonly nick: string;
  /** The ticket of a session before the server restarted (PROTOCOL.md 3.13); empty: none. */
  readonly resume: Uint8Array;
}
export interface CreateRoom {
  readonly t: "create";
  readonly name: string;
  /** Opus bit/s each member sends at most; 0: no cap. */
  readonly maxBitrate: number;
}
export interface JoinRoom {
  readonly t: "join";
  readonly roomId: string;
  /** The room's join token (3.15); empty: none (a room from before tokens). */
  readonly token: Uint8Array;
}
export interface LeaveRoom {
  readonly t: "leave";
}
/** A chat message sealed end to end (an SFrame frame); the server cannot read it. */
export interface SendChat {
  readonly t: "say";
  readonly data: Uint8Array;
}
/** An opaque end-to-end pair message for one member of the same room. */
export interface PeerSend {
  readonly t: "peer";
  readonly to: number;
  readonly data: Uint8Array;
}
export interface Ping {
  readonly t: "ping";
  readonly nonce: number;
}
export interface Bye {
  readonly t: "bye";
}
// The owner's room management (3.15); the page never sends these, but the tables mirror
// control.py's so that both sides judge every message alike.
export interface ListRooms {
  readonly t: "list";
}
export interface RotateRoom {
  readonly t: "rotate";
  readonly roomId: string;
  readonly token: Uint8Array;
}
export interface DeleteRoom {
  readonly t: "delete";
  readonly roomId: string;
}
export interface KickMember {
  readonly t: "kick";
  readonly roomId: string;
  readonly sessionId: number;
  readonly user: string;
  readonly ban: boolean;
}
export interface UnbanMember {
  readonly t: "unban";
  readonly roomId: string;
  readonly user: string;
}
export interface ListBans {
  readonly t: "list_bans";
  readonly roomId: string;
}

// server -> client
export interface Welcome {
  readonly t: "welcome";
  readonly sessionId: number;
  readonly user: string;
  readonly serverVersion: string;
  /** The hop keys' secret (media.deriveMediaKeys); random per session. */
  readonly mediaSecret: Uint8Array;
  /** A ticket to get sessionId back after a server restart (3.13); the page does not reconnect. */
  readonly resume: Uint8Array;
}
export interface RoomCreated {
  readonly t: "created";
  readonly roomId: string;
  readonly name: string;
}
export interface RoomJoined {
  readonly t: "joined";
  readonly roomId: string;
  readonly name: string;
  readonly you: Member;
  /** The others already present. */
  readonly members: readonly Member[];
  readonly maxBitrate: number;
}
export interface RoomLeft {
  readonly t: "left";
  readonly roomId: string;
}
export interface RoomInfo {
  readonly roomId: string;
  readonly name: string;
  readonly owner: string;
  readonly members: number;
}
export interface RoomList {
  readonly t: "rooms";
  readonly rooms: readonly RoomInfo[];
}
export interface RoomRotated {
  readonly t: "rotated";
  readonly roomId: string;
}
export interface RoomDeleted {
  readonly t: "deleted";
  readonly roomId: string;
}
export interface MemberKicked {
  readonly t: "kicked";
  readonly roomId: string;
  readonly sessionId: number;
  readonly user: string;
  readonly banned: boolean;
}
export interface MemberUnbanned {
  readonly t: "unbanned";
  readonly roomId: string;
  readonly user: string;
}
export interface BanList {
  readonly t: "bans";
  readonly roomId: string;
  readonly users: readonly string[];
  readonly more: number;
}
/** Pushed when the room's owner rotated it: the new join token. A member adopts the
 * secret a member offered it (pair message `secret`) only if it derives this token. */
export interface TokenChanged {
  readonly t: "token";
  readonly token: Uint8Array;
}
export interface MemberJoined {
  readonly t: "member_joined";
  readonly member: Member;
}
export interface MemberLeft {
  readonly t: "member_left";
  readonly sessionId: number;
}
export interface Chat {
  readonly t: "chat";
  readonly sender: number;
  readonly data: Uint8Array;
}
export interface PeerReceived {
  readonly t: "peer_from";
  readonly sender: number;
  readonly data: Uint8Array;
}
export interface Pong {
  readonly t: "pong";
  readonly nonce: number;
}
/** A refusal; a `fatal` one is followed by the server closing the session. */
export interface ErrorMessage {
  readonly t: "error";
  readonly code: number;
  readonly message: string;
  readonly fatal: boolean;
  /** Tag of the request this refuses ("" if none). */
  readonly ref: string;
  /** BUSY and THROTTLED: seconds to wait before trying again (0: no hint). */
  readonly retryAfter: number;
  /** MOVED (14): "HOST:PORT" of the cluster node that serves the room ("" otherwise). */
  readonly location: string;
}

export type ClientMessage =
  | Hello
  | CreateRoom
  | JoinRoom
  | LeaveRoom
  | SendChat
  | PeerSend
  | Ping
  | Bye
  | ListRooms
  | RotateRoom
  | DeleteRoom
  | KickMember
  | UnbanMember
  | ListBans;
export type ServerMessage =
  | Welcome
  | RoomCreated
  | RoomJoined
  | RoomLeft
  | RoomList
  | RoomRotated
  | RoomDeleted
  | MemberKicked
  | MemberUnbanned
  | BanList
  | TokenChanged
  | MemberJoined
  | MemberLeft
  | Chat
  | PeerReceived
  | Pong
  | ErrorMessage;
export type Message = ClientMessage | ServerMessage;
export type ClientTag = ClientMessage["t"];
export type ServerTag = ServerMessage["t"];
export type Tag = Message["t"];

/** Python's class names, for messages that name a message ("expected hello, got JoinRoom"). */
export const TYPE_NAMES: Readonly<Record<Tag, string>> = {
  hello: "Hello",
  create: "CreateRoom",
  join: "JoinRoom",
  leave: "LeaveRoom",
  say: "SendChat",
  peer: "PeerSend",
  ping: "Ping",
  bye: "Bye",
  list: "ListRooms",
  rotate: "RotateRoom",
  delete: "DeleteRoom",
  kick: "KickMember",
  unban: "UnbanMember",
  list_bans: "ListBans",
  welcome: "Welcome",
  created: "RoomCreated",
  joined: "RoomJoined",
  left: "RoomLeft",
  rooms: "RoomList",
  rotated: "RoomRotated",
  deleted: "RoomDeleted",
  kicked: "MemberKicked",
  unbanned: "MemberUnbanned",
  bans: "BanList",
  token: "TokenChanged",
  member_joined: "MemberJoined",
  member_left: "MemberLeft",
  chat: "Chat",
  peer_from: "PeerReceived",
  pong: "Pong",
  error: "Error",
};

// -- schemas --------------------------------------------------------------------------

type Kind =
  | { k: "int"; min?: bigint; max?: bigint }
  | { k: "str"; min?: number; max?: number; pattern?: string }
  | { k: "bytes"; min: number; max: number }
  | { k: "bool" }
  | { k: "float"; min: number; max: number }
  | { k: "member" }
  | { k: "members" }
  | { k: "rooms" }
  | { k: "strs"; max: number };
interface Field {
  readonly wire: string;
  readonly key: string;
  readonly kind: Kind;
  readonly default?: unknown;
  /** Written only when not "": a field added so that other messages keep their bytes. */
  readonly omitEmpty?: boolean;
}

const U32: Kind = { k: "int", min: 0n, max: 2n ** 32n - 1n };
const U63: Kind = { k: "int", min: 0n, max: 2n ** 63n - 1n };
const INT: Kind = { k: "int" };
const STR: Kind = { k: "str" };
const ROOM_ID: Kind = { k: "str", pattern: ROOM_ID_PATTERN };
export const RESUME_TICKET_SIZE = 28;
const RESUME: Kind = { k: "bytes", min: 0, max: RESUME_TICKET_SIZE };
const BITRATE: Kind = { k: "int", min: 0n, max: BigInt(MAX_BITRATE) };
const f = (wire: string, kind: Kind, extra: { key?: string; default?: unknown; omitEmpty?: boolean } = {}): Field => ({
  wire,
  key: extra.key ?? wire.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
  kind,
  ...("default" in extra ? { default: extra.default } : {}),
  ...(extra.omitEmpty ? { omitEmpty: true } : {}),
});

const MEMBER: readonly Field[] = [f("session_id", U32), f("user", STR), f("nick", STR)];
const ROOM_INFO: readonly Field[] = [f("room_id", ROOM_ID), f("name", STR), f("owner", STR), f("members", U32)];
const JOIN_TOKEN: Kind = { k: "bytes", min: 0, max: JOIN_TOKEN_SIZE };
const NEW_JOIN_TOKEN: Kind = { k: "bytes", min: JOIN_TOKEN_SIZE, max: JOIN_TOKEN_SIZE };

const CLIENT_SCHEMAS: Readonly<Record<ClientTag, readonly Field[]>> = {
  hello: [
    f("version", INT),
    f("user", { k: "str", max: MAX_NAME }),
    f("password", { k: "str", max: MAX_PASSWORD }),
    f("nick", { k: "str", max: MAX_NAME }, { default: "" }),
    f("resume", RESUME, { default: new Uint8Array(0) }),
  ],
  create: [f("name", { k: "str", min: 1, max: MAX_ROOM_NAME }), f("max_bitrate", BITRATE, { default: 0 })],
  join: [f("room_id", ROOM_ID), f("token", JOIN_TOKEN, { default: new Uint8Array(0) })],
  leave: [],
  say: [f("data", { k: "bytes", min: 1, max: MAX_SEALED_CHAT })],
  peer: [f("to", U32), f("data", { k: "bytes", min: 1, max: MAX_PEER_MESSAGE })],
  ping: [f("nonce", U63)],
  bye: [],
  list: [],
  rotate: [f("room_id", ROOM_ID), f("token", NEW_JOIN_TOKEN)],
  delete: [f("room_id", ROOM_ID)],
  kick: [
    f("room_id", ROOM_ID),
    f("session_id", U32, { default: 0 }),
    f("user", { k: "str", max: MAX_NAME }, { default: "" }),
    f("ban", { k: "bool" }, { default: false }),
  ],
  unban: [f("room_id", ROOM_ID), f("user", { k: "str", min: 1, max: MAX_NAME })],
  list_bans: [f("room_id", ROOM_ID)],
};
const SERVER_SCHEMAS: Readonly<Record<ServerTag, readonly Field[]>> = {
  welcome: [
    f("session_id", U32),
    f("user", STR),
    f("server_version", STR),
    f("media_secret", { k: "bytes", min: MEDIA_SECRET_SIZE, max: MEDIA_SECRET_SIZE }),
    f("resume", RESUME, { default: new Uint8Array(0) }),
  ],
  created: [f("room_id", ROOM_ID), f("name", STR)],
  joined: [
    f("room_id", ROOM_ID),
    f("name", STR),
    f("you", { k: "member" }),
    f("members", { k: "members" }),
    f("max_bitrate", BITRATE, { default: 0 }),
  ],
  left: [f("room_id", ROOM_ID)],
  rooms: [f("rooms", { k: "rooms" })],
  rotated: [f("room_id", ROOM_ID)],
  deleted: [f("room_id", ROOM_ID)],
  kicked: [f("room_id", ROOM_ID), f("session_id", U32), f("user", STR), f("banned", { k: "bool" })],
  unbanned: [f("room_id", ROOM_ID), f("user", STR)],
  bans: [f("room_id", ROOM_ID), f("users", { k: "strs", max: MAX_LISTED_BANS }), f("more", U32, { default: 0 })],
  token: [f("token", NEW_JOIN_TOKEN)],
  member_joined: [f("member", { k: "member" })],
  member_left: [f("session_id", U32)],
  chat: [f("sender", U32), f("data", { k: "bytes", min: 1, max: MAX_SEALED_CHAT })],
  peer_from: [f("sender", U32), f("data", { k: "bytes", min: 1, max: MAX_PEER_MESSAGE })],
  pong: [f("nonce", U63)],
  error: [
    f("code", INT),
    f("message", STR),
    f("fatal", { k: "bool" }, { default: false }),
    f("ref", STR, { default: "" }),
    f("retry_after", { k: "float", min: 0, max: MAX_RETRY_AFTER }, { default: 0 }),
    f("location", { k: "str", max: MAX_LOCATION }, { default: "", omitEmpty: true }),
  ],
};
const SCHEMAS: Readonly<Record<Tag, readonly Field[]>> = { ...CLIENT_SCHEMAS, ...SERVER_SCHEMAS };

export const CLIENT_TAGS: ReadonlySet<string> = new Set(Object.keys(CLIENT_SCHEMAS));
export const SERVER_TAGS: ReadonlySet<string> = new Set(Object.keys(SERVER_SCHEMAS));

export function isClientMessage(m: Message): m is ClientMessage {
  return CLIENT_TAGS.has(m.t);
}

export function isServerMessage(m: Message): m is ServerMessage {
  return SERVER_TAGS.has(m.t);
}

// -- validation, shared by both directions --------------------------------------------

class Invalid extends Error {
  constructor(
    readonly what: string,
    readonly path: string | null,
  ) {
    super(what);
  }
}

const codePoints = (s: string): number => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};
const floatText = (x: number): string => (Number.isInteger(x) ? x.toFixed(1) : String(x));

function check(kind: Kind, v: MpValue, path: string): unknown {
  const expected = (name: string) => new Invalid(`Expected \`${name}\`, got \`${typeName(v)}\``, path);
  switch (kind.k) {
    case "int":
      if (typeof v !== "bigint") throw expected("int");
      if (kind.min !== undefined && v < kind.min) throw new Invalid(`Expected \`int\` >= ${kind.min}`, path);
      if (kind.max !== undefined && v > kind.max) throw new Invalid(`Expected \`int\` <= ${kind.max}`, path);
      return Number(v);
    case "float": {
      // An int is accepted where a float is expected, as msgspec does.
      if (typeof v !== "number" && typeof v !== "bigint") throw expected("float");
      const x = Number(v);
      if (!(x >= kind.min)) throw new Invalid(`Expected \`float\` >= ${floatText(kind.min)}`, path);
      if (!(x <= kind.max)) throw new Invalid(`Expected \`float\` <= ${floatText(kind.max)}`, path);
      return x;
    }
    case "bool":
      if (typeof v !== "boolean") throw expected("bool");
      return v;
    case "str": {
      if (typeof v !== "string") throw expected("str");
      const n = kind.min !== undefined || kind.max !== undefined ? codePoints(v) : 0;
      if (kind.min !== undefined && n < kind.min) throw new Invalid(`Expected \`str\` of length >= ${kind.min}`, path);
      if (kind.max !== undefined && n > kind.max) throw new Invalid(`Expected \`str\` of length <= ${kind.max}`, path);
      if (kind.pattern !== undefined && !new RegExp(kind.pattern).test(v)) {
        throw new Invalid(`Expected \`str\` matching regex '${kind.pattern}'`, path);
      }
      return v;
    }
    case "bytes":
      if (!(v instanceof Uint8Array)) throw expected("bytes");
      if (v.length < kind.min) throw new Invalid(`Expected \`bytes\` of length >= ${kind.min}`, path);
      if (v.length > kind.max) throw new Invalid(`Expected \`bytes\` of length <= ${kind.max}`, path);
      return v;
    case "member":
      return struct(MEMBER, v, path, null);
    case "members": {
      if (!Array.isArray(v)) throw expected("array");
      return Object.freeze(v.map((m, i) => struct(MEMBER, m, `${path}[${i}]`, null)));
    }
    case "rooms": {
      if (!Array.isArray(v)) throw expected("array");
      if (v.length > MAX_LISTED_ROOMS) throw new Invalid(`Expected \`array\` of length <= ${MAX_LISTED_ROOMS}`, path);
      return Object.freeze(v.map((r, i) => struct(ROOM_INFO, r, `${path}[${i}]`, null)));
    }
    case "strs": {
      if (!Array.isArray(v)) throw expected("array");
      if (v.length > kind.max) throw new Invalid(`Expected \`array\` of length <= ${kind.max}`, path);
      return Object.freeze(v.map((s, i) => check({ k: "str" }, s, `${path}[${i}]`)));
    }
  }
}

/** Fields of a map by the schema; `tag` (when not null) is put in as `t`. */
function struct(fields: readonly Field[], v: MpValue, path: string, tag: string | null): Record<string, unknown> {
  if (!(v instanceof MpMap)) throw new Invalid(`Expected \`object\`, got \`${typeName(v)}\``, path === "$" ? null : path);
  const out: Record<string, unknown> = tag === null ? {} : { t: tag };
  const byWire = new Map(fields.map((fd) => [fd.wire, fd]));
  for (const [key, value] of v.entries) {
    if (typeof key !== "string") throw new Invalid(`Expected \`str\`, got \`${typeName(key)}\` - at \`key\` in \`${path}\``, null);
    if (key === "t" && tag !== null) {
      if (value !== tag) throw new Invalid(`Invalid value ${pyRepr(value)}`, `${path}.t`);
      continue;
    }
    const field = byWire.get(key);
    if (field !== undefined) out[field.key] = check(field.kind, value, `${path}.${key}`);
  }
  for (const field of fields) {
    if (field.key in out) continue;
    if (!("default" in field)) {
      throw new Invalid(`Object missing required field \`${field.wire}\``, path === "$" ? null : path);
    }
    out[field.key] = field.default;
  }
  return Object.freeze(out);
}

function pyRepr(v: MpValue): string {
  return typeof v === "string" ? `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'` : String(v);
}

function decode<T>(data: Uint8Array, schemas: Readonly<Record<string, readonly Field[]>>): T {
  try {
    const value = unpack(data);
    if (!(value instanceof MpMap)) throw new Invalid(`Expected \`object\`, got \`${typeName(value)}\``, null);
    // The tag decides the schema, wherever it sits in the map; keys are checked on the way.
    let tag: MpValue | undefined;
    for (const [key, v] of value.entries) {
      if (typeof key !== "string") throw new Invalid(`Expected \`str\`, got \`${typeName(key)}\` - at \`key\` in \`$\``, null);
      if (key === "t" && tag === undefined) tag = v;
    }
    if (tag === undefined) throw new Invalid("Object missing required field `t`", null);
    if (typeof tag !== "string") throw new Invalid(`Expected \`str\`, got \`${typeName(tag)}\``, "$.t");
    const fields = Object.prototype.hasOwnProperty.call(schemas, tag) ? schemas[tag] : undefined;
    if (fields === undefined) throw new Invalid(`Invalid value ${pyRepr(tag)}`, "$.t");
    return struct(fields, value, "$", tag) as T;
  } catch (err) {
    if (err instanceof Invalid) {
      const where = err.path === null ? "" : ` - at \`${err.path}\``;
      throw new DecodeError(`malformed control message: ${err.what}${where}`);
    }
    if (err instanceof DecodeError) throw new DecodeError(`malformed control message: ${err.message}`);
    throw err;
  }
}

/** What a server sent (the client's side); DecodeError with a short reason. */
export function decodeServerMessage(data: Uint8Array): ServerMessage {
  return decode<ServerMessage>(data, SERVER_SCHEMAS);
}

/** What a client sent (the server's side; the client uses it in tests). */
export function decodeClientMessage(data: Uint8Array): ClientMessage {
  return decode<ClientMessage>(data, CLIENT_SCHEMAS);
}

// -- encoding ---------------------------------------------------------------------------

function write(w: MpWriter, kind: Kind, value: unknown, name: string): void {
  const bad = (): never => {
    throw new LocalProtocolError(`bad value for ${name}`);
  };
  switch (kind.k) {
    case "int":
      if (typeof value !== "number" || !Number.isSafeInteger(value)) bad();
      w.int(value as number);
      return;
    case "float":
      if (typeof value !== "number") bad();
      w.float(value as number);
      return;
    case "bool":
      if (typeof value !== "boolean") bad();
      w.bool(value as boolean);
      return;
    case "str":
      if (typeof value !== "string") bad();
      w.str(value as string);
      return;
    case "bytes":
      if (!(value instanceof Uint8Array)) bad();
      w.bin(value as Uint8Array);
      return;
    case "member":
      writeStruct(w, MEMBER, value, null, name);
      return;
    case "members":
      if (!Array.isArray(value)) bad();
      w.arrayHeader((value as unknown[]).length);
      for (const m of value as unknown[]) writeStruct(w, MEMBER, m, null, name);
      return;
    case "rooms":
      if (!Array.isArray(value)) bad();
      w.arrayHeader((value as unknown[]).length);
      for (const r of value as unknown[]) writeStruct(w, ROOM_INFO, r, null, name);
      return;
    case "strs":
      if (!Array.isArray(value) || value.length > kind.max) bad();
      w.arrayHeader((value as unknown[]).length);
      for (const s of value as unknown[]) write(w, { k: "str" }, s, name);
  }
}

function writeStruct(w: MpWriter, fields: readonly Field[], value: unknown, tag: string | null, name: string): void {
  if (typeof value !== "object" || value === null) throw new LocalProtocolError(`bad value for ${name}`);
  const rec = value as Record<string, unknown>;
  const written = fields.filter((field) => !(field.omitEmpty && (rec[field.key] ?? "") === ""));
  w.mapHeader(written.length + (tag === null ? 0 : 1));
  if (tag !== null) w.str("t").str(tag);
  for (const field of written) {
    w.str(field.wire);
    write(w, field.kind, rec[field.key] ?? field.default, `${name}.${field.key}`);
  }
}

/**
 * msgpack bytes of `message`, as msgspec writes them. The message is checked against its
 * schema first (LocalProtocolError), so we never send what the peer must refuse.
 */
export function encode(message: Message): Uint8Array {
  const fields = Object.prototype.hasOwnProperty.call(SCHEMAS, message.t) ? SCHEMAS[message.t] : undefined;
  if (fields === undefined) throw new LocalProtocolError(`unknown message type ${String(message.t)}`);
  const w = new MpWriter();
  writeStruct(w, fields, message, message.t, TYPE_NAMES[message.t]);
  const out = w.bytes();
  try {
    decode<Message>(out, SCHEMAS);
  } catch (err) {
    if (err instanceof DecodeError) throw new LocalProtocolError(`cannot send ${TYPE_NAMES[message.t]}: ${err.message}`);
    throw err;
  }
  return out;
}

// -- constructors with the defaults filled in -------------------------------------------

export const msg = {
  hello: (user: string, password: string, nick = ""): Hello => ({
    t: "hello",
    version: PROTOCOL_VERSION,
    user,
    password,
    nick,
    resume: new Uint8Array(0),
  }),
  create: (name: string, maxBitrate = 0): CreateRoom => ({ t: "create", name, maxBitrate }),
  join: (roomId: string, token: Uint8Array = new Uint8Array(0)): JoinRoom => ({ t: "join", roomId, token }),
  list: (): ListRooms => ({ t: "list" }),
  rotate: (roomId: string, token: Uint8Array): RotateRoom => ({ t: "rotate", roomId, token }),
  delete: (roomId: string): DeleteRoom => ({ t: "delete", roomId }),
  kick: (roomId: string, opts: { sessionId?: number; user?: string; ban?: boolean } = {}): KickMember => ({
    t: "kick",
    roomId,
    sessionId: opts.sessionId ?? 0,
    user: opts.user ?? "",
    ban: opts.ban ?? false,
  }),
  unban: (roomId: string, user: string): UnbanMember => ({ t: "unban", roomId, user }),
  listBans: (roomId: string): ListBans => ({ t: "list_bans", roomId }),
  leave: (): LeaveRoom => ({ t: "leave" }),
  say: (data: Uint8Array): SendChat => ({ t: "say", data }),
  peer: (to: number, data: Uint8Array): PeerSend => ({ t: "peer", to, data }),
  ping: (nonce: number): Ping => ({ t: "ping", nonce }),
  bye: (): Bye => ({ t: "bye" }),
  error: (code: number, message: string, opts: { fatal?: boolean; ref?: string; retryAfter?: number; location?: string } = {}): ErrorMessage => ({
    t: "error",
    code,
    message,
    fatal: opts.fatal ?? false,
    ref: opts.ref ?? "",
    retryAfter: opts.retryAfter ?? 0,
    location: opts.location ?? "",
  }),
} as const;
