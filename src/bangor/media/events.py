"""What a MediaSession tells the application: frozen events under one base, and the
snapshot of its counters."""

from __future__ import annotations

from dataclasses import dataclass

from bangor.audio.jitter import JitterStats

Address = tuple[str, int]


@dataclass(frozen=True)
class MediaEvent:
    """Something the application shows or acts on (one base for the layer)."""


@dataclass(frozen=True)
class RelayPathUp(MediaEvent):
    """The server answered our first keepalive: voice flows through the relay."""


@dataclass(frozen=True)
class PeerPathChanged(MediaEvent):
    """Voice to ``session_id`` now goes ``path`` ("direct" to ``address``, or "relay")."""

    session_id: int
    path: str
    address: Address | None
    rtt: float | None  # seconds


@dataclass(frozen=True)
class ChatReceived(MediaEvent):
    session_id: int
    text: str


@dataclass(frozen=True)
class MemberVerified(MediaEvent):
    """The member proved the room secret; ``identity`` is its device's public key.

    Our direct-path candidates are on their way to it already.
    """

    session_id: int
    user: str
    identity: bytes


@dataclass(frozen=True)
class MemberRejected(MediaEvent):
    session_id: int
    user: str
    reason: str


@dataclass(frozen=True)
class ChatGap(MediaEvent):
    """The server withheld chat messages from this member (sequence numbers skipped)."""

    session_id: int
    missing: int


@dataclass(frozen=True)
class PeerProblem(MediaEvent):
    """A bad end-to-end message from a member (``user``: "" once it left); dropped."""

    session_id: int
    message: str
    user: str = ""


@dataclass(frozen=True)
class DirectPathRefused(MediaEvent):
    """A member's direct-path offer could not be used (e.g. a key of the wrong size)."""

    session_id: int
    message: str


# --- the snapshot ----------------------------------------------------------------------


@dataclass(frozen=True)
class SenderStats:
    """One speaker as we hear it."""

    session_id: int
    jitter: JitterStats
    loss: float  # packets the network lost since the start, 0..1
    frame_ms: float
    kbps: float
    speaking: bool


@dataclass(frozen=True)
class PathStats:
    """How our voice reaches one member."""

    session_id: int
    direct: bool
    rtt: float | None  # seconds, on the direct path


@dataclass(frozen=True)
class MediaStats:
    sent: int  # voice frames
    suppressed: int  # frames the voice gate (or mute) kept back
    received: int
    dropped: int  # datagrams that failed to open (forged, replayed, malformed)
    undecryptable: int  # voice that failed end to end (no key, forged, replayed)
    direct_sent: int  # voice packets sent straight to a member (not via the relay)
    direct_received: int  # of ``received``, those that came straight from a member
    rtt: float | None  # seconds, to the server by keepalives
    relay_up: bool
    bitrate: int
    redundancy: int
    fec_loss_pct: int
    reported_loss: float  # the worst loss listeners report on our voice now, 0..1
    senders: tuple[SenderStats, ...]
    paths: tuple[PathStats, ...]
