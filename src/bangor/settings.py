"""Every limit and tunable as a named setting with a safe default."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 7600
PROTOCOL_VERSION = 1

# Audio format on the wire: Opus, 48 kHz mono. Each sender picks its frame duration
# (--frame-ms); receivers read it from each packet. FRAME_MS is the default.
SAMPLE_RATE = 48_000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960
# Frame durations a client may send (and tick at): 10 ms for less delay, 40 ms for
# less CPU and half the packets (and their header overhead).
FRAME_MS_CHOICES = (10, 20, 40)
# The bitrates Opus accepts, bit/s (a client's --bitrate, a room's cap).
MIN_BITRATE = 6_000
MAX_BITRATE = 510_000

# Bytes of one voice frame before end-to-end sealing (its copies of earlier frames
# are left out to stay below this), so the sealed payload fits the server's
# max_media_payload with room for the SFrame header and tag.
MAX_VOICE_FRAME = 1100

# Characters of a user name or nickname in a hello (servers allow user names of up to
# max_user_name, 32 by default); longer ones fail to decode.
MAX_NAME = 64
# Characters of a room name in a create request (servers allow up to max_room_name).
MAX_ROOM_NAME = 64
# Times `bangor user add|passwd` asks for a password twice before it gives up (exit 2).
PASSWORD_PROMPT_TRIES = 3

# Characters in one chat message; longer ones are a protocol error (the client checks first).
MAX_CHAT_TEXT = 2000
# Bytes of one end-to-end message between two members (handshake or sealed key/chat
# data) that the server relays without reading; far above what a key message needs.
MAX_PEER_MESSAGE = 4096
# Bytes of one sealed chat message: UTF-8 of the longest text plus SFrame overhead.
MAX_SEALED_CHAT = MAX_CHAT_TEXT * 4 + 256


@dataclass(frozen=True)
class ServerSettings:
    """Limits the server enforces; defaults suit a Raspberry Pi serving friends."""

    max_members_per_room: int = 16
    # A restarting server (SIGUSR1) asks its clients to come back spread over a window
    # that lets the new process take about restart_logins_per_second logins (a password
    # hash each), at least 0.25 s and at most restart_spread seconds.
    restart_spread: float = 2.0
    restart_logins_per_second: float = 50.0
    # A login or join the database could not answer: clients try again after this.
    store_retry_after: float = 1.0
    # A cluster (serve --cluster): each node writes its heartbeat to the database every
    # cluster_heartbeat seconds; one not heard from for cluster_stale_after seconds is
    # dead, and its rooms go to a live node on their next join (PROTOCOL.md 3.14).
    cluster_heartbeat: float = 1.0
    cluster_stale_after: float = 5.0
    max_rooms_per_user: int = 20
    max_room_name: int = 64
    # User names (store.check_user_name): characters after NFKC, and bytes of their UTF-8
    # (a 32-letter Cyrillic name is 64 bytes; CJK and Indic letters take 3 each); at most
    # this many combining marks on one letter (Thai, Tibetan and Indic scripts need 2 or 3).
    max_user_name: int = 32
    max_user_name_bytes: int = 64
    max_user_name_marks: int = 3
    # Live sessions of accounts removed meanwhile (`bangor user remove` from another
    # process) are ended: checked this often in one query (PostgreSQL's NOTIFY also ends
    # them at once); 0: never.
    account_check_interval: float = 5.0
    max_sessions: int = 256
    max_unauthenticated: int = 64  # connections still in handshake/login at once
    # The same per source address and per network around it (IPv4 /24, IPv6 /64): when a
    # cap is full the connection that got least far is closed, never the newcomer refused.
    max_unauthenticated_per_address: int = 16
    max_unauthenticated_per_network: int = 32
    network_prefix_v4: int = 24
    network_prefix_v6: int = 64
    first_message_timeout: float = 2.0  # seconds from accept to a whole first Noise message
    handshake_timeout: float = 5.0  # seconds to finish Noise + login
    admission_log_interval: float = 10.0  # at most one log line this often about closed ones
    idle_timeout: float = 15.0  # no control traffic (pings) for this long: drop the session
    max_media_payload: int = 1200  # bytes of opaque voice payload accepted per datagram
    # Login back-off: failure n > free locks for base * 2**(n - free - 1) seconds (capped).
    login_free_failures: int = 3
    login_backoff_base: float = 1.0
    login_backoff_max: float = 300.0
    max_tracked_unknown_logins: int = 4096  # names without an account whose failures count
    # A name without an account is forgotten this long after its last failure, once it is
    # not locked; until then it keeps its place (junk names cannot push a lock out).
    unknown_login_memory: float = 900.0
    # Live sessions of one account; checked before the password is hashed.
    max_sessions_per_user: int = 8
    # Argon2id takes 19 MiB and tens of ms per login: at most hash_workers run at once
    # (on their own threads), hash_queue more wait, and one source address holds at most
    # hash_per_source of those places; the rest are answered BUSY with a retry hint.
    hash_workers: int = 2
    hash_queue: int = 16
    hash_per_source: int = 4
    # Connections to the database a server holds at most (logins, joins and room changes
    # each take one for a few milliseconds; they wait for one when all are busy).
    db_pool_size: int = 10
    # Open mode (``serve --open``): what strangers can make. Names in all and new names per
    # source address (since the server started), and rooms in all.
    open_max_users: int = 1000
    open_max_new_names_per_address: int = 20
    open_max_rooms: int = 500
    # Per-session queue of control messages waiting for a slow reader.
    max_control_backlog: int = 256 * 1024
    # STUN Binding answers on the media port: at most this many a second (with a burst),
    # and each source's unanswered bytes remembered for this many sources (oldest forgotten).
    stun_rate: float = 200.0
    stun_burst: int = 400
    stun_max_sources: int = 4096
    # Rates per session (a second, with a burst) and per account over all its sessions
    # (server/limits.py). Every join and leave makes each member rekey; peer messages and
    # chat are relayed to members who must process each one. A 16-member room joining at
    # once needs about 90 peer messages a session in its first second, then ~15/s
    # (reception reports; PROTOCOL.md 3.10); leaving is never limited.
    join_rate: float = 1.0
    join_burst: int = 5
    user_join_rate: float = 2.0
    user_join_burst: int = 10
    peer_rate: float = 100.0
    peer_burst: int = 200
    user_peer_rate: float = 200.0
    user_peer_burst: int = 400
    chat_rate: float = 5.0
    chat_burst: int = 20
    user_chat_rate: float = 10.0
    user_chat_burst: int = 40
    # Over a limit this long without recovering (buckets back to half): session closed.
    throttle_close_after: float = 5.0
    max_limited_users: int = 4096  # accounts whose rate state is kept after their sessions end
    # Accounts-free mode (``serve --open``): any name logs in, an invite is enough.
    open: bool = False
    # Browser clients (``serve --web``): WebTransport over QUIC (server/web.py). Each QUIC
    # connection carries one session, which counts against the limits above like a TCP
    # connection; these bound the connections themselves.
    max_web_connections: int = 128
    max_web_connections_per_address: int = 16
    web_connect_timeout: float = 5.0  # seconds from the QUIC handshake to the CONNECT
    web_close_grace: float = 2.0  # seconds a closed session's connection stays for its last bytes
    web_idle_timeout: float = 30.0  # QUIC idle timeout; the control channel pings every 2 s
    web_packet_size: int = 1250  # bytes of a UDP packet QUIC sends (what Chromium uses)
    # Largest media packet sent to a browser (Chromium's maxDatagramSize is 1211): the
    # relay drops bigger ones for that member and counts them (dropped_too_big).
    web_max_datagram: int = 1200
    web_max_queued_datagrams: int = 64  # per connection, waiting for congestion control
    web_max_receive_buffer: int = 256 * 1024  # control bytes a session may send unread
    # The self-made certificate (no --tls-cert): browsers take a hash-pinned one only if
    # it is valid for less than 14 days; renewed when this little of it is left.
    web_cert_lifetime: float = 13 * 86400.0
    web_cert_renew_before: float = 3 * 86400.0
    # The page (HTTP/1.1 on TCP, server/webpage.py).
    max_page_connections: int = 64
    max_page_connections_per_address: int = 16
    page_request_timeout: float = 10.0  # seconds for a whole request head
    page_send_timeout: float = 30.0  # seconds for the client to take a whole answer
    max_page_request: int = 8192  # bytes of a request head
    # Prometheus metrics (``serve --metrics``, server/metrics.py): scrapers served at once
    # (a newcomer beyond them is closed), seconds for a whole request head and its size;
    # a member whose voice came through the relay within metrics_voice_window seconds
    # counts as relayed in bangor_room_members_relay_use.
    max_metrics_connections: int = 8
    metrics_request_timeout: float = 5.0
    max_metrics_request: int = 8192
    metrics_voice_window: float = 5.0


@dataclass(frozen=True)
class ClientSettings:
    """Timings and sizes of the client."""

    ping_interval: float = 2.0  # control-channel ping; also the dead-server detector
    dead_after: float = 6.0  # no answer on the control channel for this long: server is dead
    max_redirects: int = 3  # MOVED answers followed in one join (a cluster, PROTOCOL.md 3.14)
    keepalive_interval: float = 2.0  # UDP keepalive to keep NAT bindings and the relay address
    connect_timeout: float = 5.0
    # A login answered BUSY is tried again after the server's hint plus jitter, until this
    # many seconds have passed since the first try.
    login_retry_budget: float = 15.0
    # A call whose control channel or server went away reconnects on its own: the first
    # try after reconnect_delay (0..restart_in of a restarting server), then doubling up to
    # reconnect_max_delay, each with jitter; it gives up (exit 5) after reconnect_for
    # seconds (0: never reconnect). Members not back within rejoin_grace of our return
    # are taken as gone (fresh keys).
    reconnect_for: float = 120.0
    reconnect_delay: float = 0.25
    reconnect_max_delay: float = 8.0
    rejoin_grace: float = 30.0
    max_queued_peer_messages: int = 256  # pair messages kept while reconnecting
    # Opus frame duration we send and tick at (FRAME_MS_CHOICES): 10 ms cuts capture
    # and play-out delay, 40 ms halves the packets and the CPU per second.
    frame_ms: int = FRAME_MS
    # Jitter buffer depths, turned into each sender's frames (2 and 25 of 20 ms). The target
    # is the start-up guess, until about 1.25 s of arrivals show what the network needs.
    jitter_target_ms: int = 40
    jitter_max_ms: int = 500
    bitrate: int = 40_000  # at 32k in-band FEC costs PESQ 0.3-0.4 on clean speech
    complexity: int = 9  # Opus encoder effort 0..10; lower saves CPU on a small machine
    fec: bool = True  # Opus in-band FEC, sized to reported loss while redundancy is off
    # Loss-adaptive redundancy: each packet repeats up to this many earlier frames.
    max_redundancy: int = 2
    # Worst reported loss at which 1, 2, 3 earlier frames are repeated (bench/quality.py).
    redundancy_thresholds: tuple[float, ...] = (0.01, 0.03, 0.10)
    loss_hold: float = 10.0  # seconds a loss report keeps redundancy up
    # Listeners' mean loss burst (packets in a row) from which copies are spread out
    # (ticks up to 8 back instead of the ones just before); 0: never.
    spread_burst: float = 1.6
    max_burst_redundancy: int = 3  # copies per packet while spread (from 10 % loss)
    # Until the first loss report (at most this long after joining), repeat frames anyway.
    redundancy_startup: float = 10.0
    report_interval: float = 1.0  # seconds between reception reports to each speaker
    min_report_packets: int = 10  # fewer packets in an interval: no report (not talking)
    push_to_talk: bool = False  # send voice only while talking is switched on
    # Never offer or use direct paths: members do not learn our addresses, and all
    # voice goes through the server.
    relay_only: bool = False
    # End-to-end encryption.
    peer_verify_timeout: float = 10.0  # a member not verified by then is reported
    old_key_grace: float = 2.0  # seconds a replaced receive key still opens late frames
    max_pending_frames: int = 50  # per sender: frames held until their key arrives (1 s)
    max_pending_chat: int = 64  # per sender: chat messages held until their key arrives
    pending_timeout: float = 5.0  # held frames/messages older than this are dropped
    max_ratchet_ahead: int = 32  # ratchet steps a receiver derives on its own per frame
    # Frames of a sender's next generations (it rotated; the key is on its way) are held
    # up to this many generations ahead of its newest key we have; further ones dropped.
    max_generations_ahead: int = 4
    # After a rotation (someone who had our key left) the next waits at least this long:
    # members churning cost at most one rekey a second (docs/SECURITY.md, churn section).
    rotation_min_interval: float = 1.0
    # Problems with one member's end-to-end messages: the first few are reported, then
    # about one per interval, with a count of those not shown.
    problem_report_burst: int = 5
    problem_report_interval: float = 10.0
    # The capture chain (audio/capture.py), between the microphone and the voice gate.
    # The CLI turns each on for a sound card and off for files, tones and silence.
    noise_suppression: bool = False
    echo_cancellation: bool = False  # the far end is what we play, fed as the reference
    agc: bool = False  # automatic gain: quiet and loud speakers come out at one level
    # Voice activity detection: send voice only while speaking (keepalives go on regardless).
    vad: bool = True
    vad_aggressiveness: int = 2  # WebRTC VAD mode: 0 lets most through .. 3 strictest
    vad_hangover_ms: int = 300  # keep sending after speech so word endings survive
    vad_preroll_ms: int = 40  # audio held back while silent, sent at a word's onset
    # Seconds between `stats` events; a UI with live speaking indicators asks for less.
    stats_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.frame_ms not in FRAME_MS_CHOICES:
            choices = ", ".join(str(ms) for ms in FRAME_MS_CHOICES)
            raise ValueError(f"frame_ms must be one of {choices}, got {self.frame_ms}")

    @property
    def frame_samples(self) -> int:
        """Samples in one of our frames (and ticks)."""
        return SAMPLE_RATE * self.frame_ms // 1000


STATS_INTERVAL = ClientSettings.stats_interval  # the default, for scripts
