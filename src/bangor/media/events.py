"""What a MediaSession tells the application: its own frozen events under one base,
the events of the layers under it passed on as they are (:data:`CallEvent`), and the
snapshot of its counters."""

from __future__ import annotations

from dataclasses import dataclass

from bangor.audio.jitter import JitterStats
from bangor.wire.direct import DirectEvent
from bangor.wire.e2ee import E2EEEvent


@dataclass(frozen=True)
class MediaEvent:
    """Something the application shows or acts on (one base for the layer)."""


@dataclass(frozen=True)
class RelayPathUp(MediaEvent):
    """The server answered our first keepalive: voice flows through the relay."""


@dataclass(frozen=True)
class DirectPathRefused(MediaEvent):
    """A member's direct-path offer could not be used (e.g. a key of the wrong size)."""

    session_id: int
    message: str


# What MediaSession.next_event() gives: its own events, and those of RoomCrypto and
# DirectPaths that the application shows (chat, verification, rejection, gaps, problems;
# a member's path changing), unchanged. The rest of theirs the session acts on itself.
CallEvent = MediaEvent | E2EEEvent | DirectEvent


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
class Processing:
    """Which stages of the capture chain run now."""

    noise_suppression: bool
    echo_cancellation: bool
    agc: bool


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
    processing: Processing
    # The microphone's level after the capture chain, dBFS (-100 for digital silence):
    # the louder of the last tick's RMS and a peak-hold that falls 20 dB a second.
    input_level: float
