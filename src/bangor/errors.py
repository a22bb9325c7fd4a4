"""One error hierarchy for all of Bangor.

Every error a user can meet derives from :class:`BangorError` and carries a
message fit to print as it is (no traceback is ever shown to a user).
Protocol errors carry a close code so a session can be ended with it in one place,
and every error its exit code (``exit_code``), so the command and the terminal UI
end the same way for the same error.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Exit codes of the `bangor` command: the command-line contract of DESIGN.md."""

    OK = 0
    ERROR = 1  # any other error
    USAGE = 2
    AUTH = 3  # authentication failed
    INVITE = 4  # invite or room invalid, or a server key that does not match the invite
    UNREACHABLE = 5  # the server could not be reached, or went away
    INTERRUPTED = 130  # Ctrl-C outside a call (128 + SIGINT, as a shell reports it)


class CloseCode(IntEnum):
    """Reasons a control session ends; sent in the ``Error`` message."""

    NORMAL = 0
    PROTOCOL = 1  # malformed or unexpected message
    UNSUPPORTED_VERSION = 2
    AUTH_FAILED = 3
    THROTTLED = 4
    ROOM_NOT_FOUND = 5
    ROOM_FULL = 6
    LIMIT = 7  # a per-user limit was reached
    NOT_ALLOWED = 8
    INTERNAL = 9
    SHUTDOWN = 10
    TIMEOUT = 11
    PASSWORD_REQUIRED = 12  # an empty password on a server with accounts (not counted)
    BUSY = 13  # too many logins being checked at once: try again after ``retry_after``
    MOVED = 14  # a cluster: the room is served by the node at ``location`` (PROTOCOL.md 3.14)
    REMOVED = 15  # the room's owner removed this member (kick, ban) or deleted the room


class BangorError(Exception):
    """Base of every error Bangor raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.ERROR


class UsageError(BangorError):
    """The command line asked for something impossible (a missing argument, a bad value)."""

    exit_code = ExitCode.USAGE


class ProtocolError(BangorError):
    """The peer or this side broke the protocol."""

    code: CloseCode = CloseCode.PROTOCOL


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids (a bug or misuse)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or out of place."""


class FramingError(RemoteProtocolError):
    """A length-prefixed frame was malformed or too long."""


class HandshakeError(RemoteProtocolError):
    """The Noise handshake failed (bad message, wrong key, decryption failed)."""


class DecodeError(RemoteProtocolError):
    """A control message could not be decoded."""


class PeerError(RemoteProtocolError):
    """A room member's end-to-end message was malformed, forged, replayed or out of place."""


class PeerAuthError(PeerError):
    """A room member could not prove the room secret, or we could not prove it to them."""


class PacketError(BangorError):
    """A media datagram was malformed, forged or replayed (dropped, never answered)."""


class ReplayError(PacketError):
    """An authentic media datagram seen before, or older than the replay window."""


class InviteError(BangorError):
    """An invite code is malformed, mistyped or tampered with."""

    exit_code = ExitCode.INVITE


class KeyPinError(BangorError):
    """The server's static key does not match the pinned fingerprint."""

    exit_code = ExitCode.INVITE


class BadNameError(BangorError):
    """A user name or nickname that may not be used: too long, or with characters a
    terminal would obey rather than show (see ``bangor.text``)."""

    exit_code = ExitCode.USAGE


class AuthError(BangorError):
    """Wrong user name or password."""

    exit_code = ExitCode.AUTH


class PasswordRequiredError(AuthError):
    """The server has accounts and we offered no password (nothing was counted against us)."""


class ThrottledError(AuthError):
    """Too many failed logins for this account: wait before trying again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BusyError(BangorError):
    """The server is checking too many logins at once; nothing was counted against us."""

    code: CloseCode = CloseCode.BUSY

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(BangorError):
    """The account/room store failed or was asked something impossible."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (stopped, restarting, network): worth a retry."""


class NotFoundError(StoreError):
    """No such user or room."""


class AccountNotFoundError(NotFoundError):
    """A room's owner named an account that does not exist (or is not banned there)."""


class AlreadyExistsError(StoreError):
    """A user or room with that name exists already."""


class LimitError(BangorError):
    """A named limit (rooms per user, members per room, ...) was reached."""


class AudioError(BangorError):
    """An audio source, sink, device or codec failed."""


class DeviceError(AudioError):
    """A sound card could not be opened: PortAudio missing, no such device, none at all."""


class CodecUnavailableError(AudioError):
    """libopus is missing on this machine."""


class ConnectError(BangorError):
    """The server could not be reached or went away."""

    exit_code = ExitCode.UNREACHABLE


class ServerGoneError(ConnectError):
    """The server said goodbye (SHUTDOWN). ``restart_in``: seconds over which a restarting
    server asks its clients to spread their return; None when it is going away."""

    def __init__(self, message: str, restart_in: float | None = None) -> None:
        super().__init__(message)
        self.restart_in = restart_in


class MovedError(ConnectError):
    """A cluster node sent us to the node that serves the room (MOVED, ``location``)."""

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class DroppedError(ConnectError):
    """The server closed or reset the connection before we were logged in.

    A server under a flood closes the connections it has to make room for (the oldest
    idle first), so a client tries again for a while before it gives up.
    """


class RefusedError(BangorError):
    """The server answered a request with an Error message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    # A refused room is the invite's fault (exit 4), any other refusal is not. A property
    # where the others have a class attribute; mypy will not let it override one.
    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        if self.code in (CloseCode.ROOM_NOT_FOUND, CloseCode.ROOM_FULL, CloseCode.REMOVED):
            return ExitCode.INVITE
        return ExitCode.ERROR
