"""Direct path vs relay: time from `bangor join` to first audio heard, and round trips.

Builds, in network namespaces (root needed), a server on an "internet" router and two
homes behind NAT routers (Linux MASQUERADE, as tests/integration/test_direct.py), with
one-way delays on each router's uplink (``--home-delay`` ms) and on the server's
(``--server-delay`` ms), so the relay path is longer than the direct one as on the real
internet. Then, ``--runs`` times for each mode (``direct``: default options;
``relay``: both clients ``--relay-only``):

* alice (behind NAT 1) already talks (a tone); bob (behind NAT 2) runs ``bangor join``
  with ``--output FILE.wav``. Time to first audio = (when bob's ``joined`` line is read
  minus when his process was started) + the position of the first loud sample in his
  recording, which starts when he joined;
* round trip between the two: on a direct path, the probe RTT bob reports for alice;
  through the relay, alice's and bob's keepalive RTT to the server added up (what a
  packet from bob to alice and back crosses).

Run (as root, from the repository)::

    .venv/bin/python bench/paths.py --runs 3

It ends by itself, kills what it started and deletes its namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import (  # noqa: E402
    BANGOR,
    Client,
    client_env,
    start_server,
    stop_server,
)
from tests.netns import Network, netns_available  # noqa: E402

SERVER_IP = "10.201.0.2"
PORT = 7600
LOUD = 0.05


def first_loud_second(path: Path) -> float | None:
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
    loud = np.flatnonzero(np.abs(audio) > LOUD)
    return float(loud[0]) / rate if len(loud) else None


def join(ns_cmd: list[str], home: Path, invite: str, user: str, *args: str) -> Client:
    from tests.integration.conftest import LineReader

    proc = subprocess.Popen(
        [*ns_cmd, BANGOR, "join", invite, "--user", user, "--json", "--headless", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(home),
    )
    return Client(proc, LineReader(proc.stdout), LineReader(proc.stderr))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--home-delay", type=float, default=10.0, help="ms, each home uplink")
    parser.add_argument("--server-delay", type=float, default=20.0, help="ms, server uplink")
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        print(f"bench/paths.py: {reason}", file=sys.stderr)
        return 1
    results: dict[str, dict[str, list[float]]] = {}
    with Network() as net, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        inet = net.router("inet")
        server_ns = net.namespace("server")
        net.attach(server_ns, inet, "10.201.0.0/24")
        homes = []
        for i, user in ((1, "alice"), (2, "bob")):
            nat = net.router(f"nat{i}")
            net.attach(nat, inet, f"10.201.{i}.0/24")
            host = net.namespace(user)
            net.attach(host, nat, f"192.168.{i}.0/24")
            net.masquerade(nat, "inet")
            # One-way delay both ways on the uplink: leaving the home and arriving there.
            net.netem(nat, "inet", delay_ms=args.home_delay)
            net.netem(inet, f"nat{i}", delay_ms=args.home_delay)
            homes.append(host)
        net.netem(server_ns, "inet", delay_ms=args.server_delay)
        net.netem(inet, "server", delay_ms=args.server_delay)
        server = start_server(tmp, command=tuple(server_ns.cmd(BANGOR)), host=SERVER_IP, port=PORT)
        try:
            for user in ("alice", "bob"):
                server.add_user(user)
            for mode in ("direct", "relay"):
                extra = ["--relay-only"] if mode == "relay" else []
                got = results[mode] = {"first_audio_ms": [], "rtt_ms": []}
                for run in range(args.runs):
                    invite = server.create_room("alice", f"{mode}{run}", prefix=homes[0].cmd())
                    alice = join(
                        homes[0].cmd(),
                        tmp / "alice",
                        invite,
                        "alice",
                        "--input",
                        "tone:440",
                        "--output",
                        "null",
                        "--vad",
                        "off",
                        *extra,
                    )
                    alice.event("joined")
                    heard = tmp / f"bob-{mode}-{run}.wav"
                    started = time.monotonic()
                    bob = join(
                        homes[1].cmd(),
                        tmp / "bob",
                        invite,
                        "bob",
                        "--input",
                        "silence",
                        "--output",
                        str(heard),
                        *extra,
                    )
                    bob.event("joined")
                    joined_after = time.monotonic() - started
                    stats = bob.event("stats", timeout=15)
                    alice_stats = alice.events_of("stats", 1, timeout=15)[-1]
                    for client in (alice, bob):
                        client.proc.terminate()
                        client.wait()
                    onset = first_loud_second(heard)
                    if onset is not None:
                        got["first_audio_ms"].append((joined_after + onset) * 1000)
                    paths = stats["paths"]
                    assert isinstance(paths, dict)
                    [entry] = paths.values()
                    if mode == "direct" and entry["path"] == "direct":
                        got["rtt_ms"].append(float(entry["rtt_ms"]))
                    elif mode == "relay":
                        rtts = (stats["rtt_ms"], alice_stats["rtt_ms"])
                        if all(isinstance(r, float) for r in rtts):
                            got["rtt_ms"].append(sum(rtts))  # type: ignore[arg-type]
                    print(
                        f"{mode} run {run}: path {entry['path']}, "
                        f"{json.dumps({k: v[-1:] for k, v in got.items()})}",
                        file=sys.stderr,
                    )
        finally:
            stop_server(server)
    print(
        f"delays one way: home uplinks {args.home_delay} ms, server uplink "
        f"{args.server_delay} ms; {args.runs} runs each; pid {os.getpid()}"
    )
    print(f"{'':34}{'direct':>12}{'relay':>12}")
    for key, label in (("first_audio_ms", "join -> first audio, ms"), ("rtt_ms", "round trip, ms")):
        cells = []
        for mode in ("direct", "relay"):
            values = results[mode][key]
            cells.append(f"{statistics.median(values):12.1f}" if values else f"{'-':>12}")
        print(f"{label + ' (median)':34}{''.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
