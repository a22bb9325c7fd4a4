// One error hierarchy, mirroring src/bangor/errors.py: callers catch BangorError and
// show `message`; the subclass says whose fault it was (ours, the peer's, a bad packet).

export class BangorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class ProtocolError extends BangorError {}
/** We broke the protocol (a bug, or a call in the wrong state). */
export class LocalProtocolError extends ProtocolError {}
/** The other side broke the protocol: close with a clear code. */
export class RemoteProtocolError extends ProtocolError {}
export class FramingError extends RemoteProtocolError {}
export class HandshakeError extends RemoteProtocolError {}
export class DecodeError extends RemoteProtocolError {}
/** A member (not the server) sent something wrong inside a pair channel. */
export class PeerError extends RemoteProtocolError {}
export class PeerAuthError extends PeerError {}
/** A malformed or unauthentic datagram or frame: dropped, counted. */
export class PacketError extends BangorError {}
export class InviteError extends BangorError {}
export class KeyPinError extends BangorError {}
export class BadNameError extends BangorError {}
export class AuthError extends BangorError {}
export class ConnectError extends BangorError {}

/** Close codes of the control channel (errors.CloseCode). */
export const CloseCode = {
  NORMAL: 0,
  PROTOCOL: 1,
  UNSUPPORTED_VERSION: 2,
  AUTH_FAILED: 3,
  THROTTLED: 4,
  ROOM_NOT_FOUND: 5,
  ROOM_FULL: 6,
  LIMIT: 7,
  NOT_ALLOWED: 8,
  INTERNAL: 9,
  SHUTDOWN: 10,
  TIMEOUT: 11,
  PASSWORD_REQUIRED: 12,
  BUSY: 13,
  MOVED: 14,
  /** The room's owner removed this member (kick, ban) or deleted the room: fatal. */
  REMOVED: 15,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
