"""Direct peer-to-peer paths through real NATs in network namespaces, relay fallback.

Topology (one for the module)::

    server 10.200.0.2 ---\\
                          inet (router; no routes to the private networks)
    nat1 10.200.1.2 -----/  |  \\----- nat3 10.200.3.2 (MASQUERADE --random-fully:
      |  MASQUERADE         |           a new port per destination, endpoint-dependent)
    alice 192.168.1.2    nat2 10.200.2.2      carol 192.168.3.2
                            |  MASQUERADE
                          bob 192.168.2.2

Linux MASQUERADE keeps a mapping's port for every destination (endpoint-independent
mapping) and lets in only what answers a mapping (address- and port-dependent
filtering): the home routers most people have. alice and bob can punch through to each
other; carol's router gives each destination another port, so her address as the server
sees it is useless to anyone else, and she talks through the relay.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.audiocheck import SR, align, envelope_correlation, make_speech_wav, read_wav_48k
from tests.integration.conftest import (
    BANGOR,
    Client,
    ServerProcess,
    start_bangor,
    start_server,
    stop_server,
)
from tests.integration.test_call import SPEECH, assert_same_speech
from tests.netns import Namespace, Network, netns_available

pytestmark = pytest.mark.integration

PORT = 7600
SERVER_IP = "10.200.0.2"
CHUNK = SR // 10  # 100 ms


@dataclass
class Lab:
    net: Network
    server: ServerProcess
    server_ns: Namespace
    inet: Namespace
    nat1: Namespace
    alice: Namespace
    bob: Namespace
    carol: Namespace
    hoster: Namespace


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with Network() as net:
        inet = net.router("inet")
        server_ns = net.namespace("server")
        assert net.attach(server_ns, inet, "10.200.0.0/24") == SERVER_IP
        homes = []
        for i, (user, random_fully) in enumerate(
            (("alice", False), ("bob", False), ("carol", True)), start=1
        ):
            nat = net.router(f"nat{i}")
            net.attach(nat, inet, f"10.200.{i}.0/24")
            host = net.namespace(user)
            net.attach(host, nat, f"192.168.{i}.0/24")
            net.masquerade(nat, "inet", random_fully=random_fully)
            homes.append((nat, host))
        # Count the voice the server sends (UDP from its port, larger than any keepalive
        # answer or STUN answer), to see what the relay carries.
        count = ["-p", "udp", "--sport", str(PORT), "-m", "length", "--length", "120:65535"]
        net.run(server_ns, ["iptables", "-A", "OUTPUT", *count])
        for src, dst in (("10.200.1.2", "10.200.2.2"), ("10.200.2.2", "10.200.1.2")):
            net.run(inet, ["iptables", "-A", "FORWARD", "-p", "udp", "-s", src, "-d", dst])
        hoster = net.namespace("hoster")  # a friend's laptop on the open internet
        net.attach(hoster, inet, "10.200.4.0/24")
        tmp = tmp_path_factory.mktemp("direct")
        command = tuple(server_ns.cmd(BANGOR))
        server = start_server(tmp, command=command, host=SERVER_IP, port=PORT)
        try:
            for user in ("alice", "bob", "carol"):
                server.add_user(user)
            yield Lab(
                net,
                server,
                server_ns,
                inet,
                homes[0][0],
                homes[0][1],
                homes[1][1],
                homes[2][1],
                hoster,
            )
        finally:
            stop_server(server)
        assert not any("Traceback" in line for line in server.stderr.rest(timeout=5))


def relayed_voice(lab: Lab) -> int:
    """Voice datagrams the server has sent so far (an iptables counter in its namespace)."""
    out = lab.net.run(lab.server_ns, ["iptables", "-L", "OUTPUT", "-v", "-x", "-n"])
    rows = [line.split() for line in out.splitlines() if "udp spt:7600" in line]
    assert len(rows) == 1, out
    return int(rows[0][0])


def between_homes(lab: Lab) -> int:
    """Datagrams the internet router forwarded between alice's and bob's routers."""
    out = lab.net.run(lab.inet, ["iptables", "-L", "FORWARD", "-v", "-x", "-n"])
    return sum(int(line.split()[0]) for line in out.splitlines() if "10.200." in line)


def join(lab: Lab, ns: Namespace, user: str, invite: str, *args: str) -> Client:
    return lab.server.join(invite, user, *args, prefix=ns.cmd())


def path_to(client: Client, peer: int, path: str, timeout: float = 20) -> dict[str, object]:
    line = client.stdout.wait_for(
        lambda line: (
            line.startswith("{")
            and json.loads(line)["event"] == "path"
            and json.loads(line)["peer"] == peer
            and json.loads(line)["path"] == path
        ),
        timeout,
    )
    event: dict[str, object] = json.loads(line)
    return event


def session_of(client: Client) -> int:
    joined = client.event("joined")
    you = joined["you"]
    assert isinstance(you, dict)
    return int(you["session_id"])


def tone_chunks(path: Path, hz: float) -> np.ndarray:
    """Per 100 ms chunk of a recording: whether it holds the tone."""
    audio = read_wav_48k(path)
    chunks = audio[: len(audio) // CHUNK * CHUNK].reshape(-1, CHUNK)
    loud = np.sqrt(np.mean(chunks**2, axis=1)) > 0.05
    peaks = np.argmax(np.abs(np.fft.rfft(chunks, axis=1)), axis=1) * SR / CHUNK
    result: np.ndarray = loud & (np.abs(peaks - hz) <= 20)
    return result


def longest_gap(has_tone: np.ndarray) -> int:
    """The longest run of chunks without the tone between the first and last with it."""
    where = np.flatnonzero(has_tone)
    return int(np.max(np.diff(where)) - 1) if len(where) > 1 else len(has_tone)


def tone_to_bob(lab: Lab, room: str, heard: Path) -> tuple[Client, Client, int, int]:
    """bob (NAT 2) records to ``heard``, alice (NAT 1) sends a 440 Hz tone.

    Returns alice, bob and their session ids.
    """
    invite = lab.server.create_room("bob", room, prefix=lab.bob.cmd())
    bob = join(lab, lab.bob, "bob", invite, "--input", "silence", "--output", str(heard))
    bob_id = session_of(bob)
    alice = join(lab, lab.alice, "alice", invite, "--input", "tone:440", "--output", "null")
    return alice, bob, session_of(alice), bob_id


def test_peers_behind_ordinary_nats_talk_directly_and_the_relay_carries_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    heard = tmp_path / "bob.wav"
    alice, bob, alice_id, bob_id = tone_to_bob(lab, "direct", heard)
    up = path_to(alice, bob_id, "direct")
    path_to(bob, alice_id, "direct")
    assert isinstance(up["rtt_ms"], float) and 0 < up["rtt_ms"] < 100
    before = relayed_voice(lab)
    # Two stats events later (5 s apart), bob has heard alice directly all along...
    stats = bob.events_of("stats", 2, timeout=15)[-1]
    assert stats["direct_received"] > 200  # type: ignore[operator]
    paths = stats["paths"]
    assert isinstance(paths, dict)
    assert paths[str(alice_id)]["path"] == "direct"
    # ...and the server relayed no voice in that time.
    assert relayed_voice(lab) == before
    alice.proc.terminate()
    bob.proc.terminate()
    assert alice.wait() == 0 and bob.wait() == 0
    has_tone = tone_chunks(heard, 440)
    assert has_tone.sum() >= 50, f"{has_tone.sum()} chunks of 100 ms with the tone"
    assert longest_gap(has_tone) <= 2


def test_an_endpoint_dependent_nat_gets_the_relay_and_speech_arrives(
    lab: Lab, tmp_path: Path
) -> None:
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    invite = lab.server.create_room("alice", "edm", prefix=lab.alice.cmd())
    heard = tmp_path / "alice.wav"
    alice = join(lab, lab.alice, "alice", invite, "--input", "silence", "--output", str(heard))
    alice_id = session_of(alice)
    carol = join(lab, lab.carol, "carol", invite, "--input", str(speech), "--output", "null")
    carol_id = session_of(carol)
    before = relayed_voice(lab)
    # The second stats event comes 10 s in: checks have run at full pace for 5 s.
    stats = alice.events_of("stats", 2, timeout=20)[-1]
    carol.proc.terminate()
    alice.proc.terminate()
    assert alice.wait() == 0 and carol.wait() == 0
    paths = stats["paths"]
    assert isinstance(paths, dict)
    assert paths[str(carol_id)]["path"] == "relay"
    assert stats["direct_received"] == 0
    for client, peer in ((alice, carol_id), (carol, alice_id)):
        paths = [e["path"] for e in client.events() if e["event"] == "path" and e["peer"] == peer]
        assert paths == ["relay"], "no direct path can exist through an endpoint-dependent NAT"
    assert relayed_voice(lab) - before > 100
    _, aligned = align(reference, read_wav_48k(heard))
    corr = envelope_correlation(reference, aligned, max_shift_ms=40)
    assert corr > 0.9, f"envelope correlation {corr:.3f}"


def test_a_cut_direct_path_falls_back_to_the_relay_within_a_second(
    lab: Lab, tmp_path: Path
) -> None:
    heard = tmp_path / "bob.wav"
    alice, bob, _, bob_id = tone_to_bob(lab, "cut", heard)
    path_to(alice, bob_id, "direct")
    bob.events_of("stats", 1)  # some seconds of direct voice first
    # alice's router now drops everything between her and bob's router (not the server).
    cut = ["-I", "FORWARD", "-p", "udp", "-d", "10.200.2.2", "-j", "DROP"]
    lab.net.run(lab.nat1, ["iptables", *cut])
    started = time.monotonic()
    path_to(alice, bob_id, "relay", timeout=5)
    fallback = time.monotonic() - started
    assert fallback < 1.2, f"fell back after {fallback:.2f} s"
    bob.events_of("stats", 3, timeout=15)  # and the call goes on through the relay
    alice.proc.terminate()
    bob.proc.terminate()
    assert alice.wait() == 0 and bob.wait() == 0
    lab.net.run(lab.nat1, ["iptables", "-D", *cut[1:]])
    has_tone = tone_chunks(heard, 440)
    assert has_tone.sum() >= 80
    # The gap the cut made is the detection time, not a dropped call.
    assert longest_gap(has_tone) <= 12, f"longest gap {longest_gap(has_tone) * 100} ms"


def test_a_stun_client_behind_a_nat_learns_the_nat_address(lab: Lab) -> None:
    """aioice's ICE agent (not our code) gathers its server-reflexive candidate from us."""
    script = (
        "import asyncio, aioice\n"
        "async def main():\n"
        f"    c = aioice.Connection(ice_controlling=True, stun_server=('{SERVER_IP}', {PORT}))\n"
        "    await asyncio.wait_for(c.gather_candidates(), 10)\n"
        "    print([(x.type, x.host) for x in c.local_candidates])\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    out = lab.net.run(lab.alice, [sys.executable, "-c", script])
    candidates = eval(out)  # a list of tuples printed by the script above
    assert ("srflx", "10.200.1.2") in candidates, out
    assert ("host", "192.168.1.2") in candidates, out


def test_relay_only_reveals_no_address_and_uses_the_relay(lab: Lab, tmp_path: Path) -> None:
    lab.net.run(lab.inet, ["iptables", "-Z", "FORWARD"])
    invite = lab.server.create_room("alice", "private", prefix=lab.alice.cmd())
    heard = tmp_path / "alice.wav"
    alice = join(lab, lab.alice, "alice", invite, "--input", "silence", "--output", str(heard))
    bob = join(lab, lab.bob, "bob", invite, "--input", "tone:440", "--relay-only")
    bob_id = session_of(bob)
    stats = alice.events_of("stats", 2, timeout=20)[-1]
    bob.proc.terminate()
    alice.proc.terminate()
    assert alice.wait() == 0 and bob.wait() == 0
    assert stats["paths"][str(bob_id)]["path"] == "relay"  # type: ignore[index]
    assert stats["direct_received"] == 0
    assert tone_chunks(heard, 440).sum() >= 50
    # Neither sent the other a single datagram: bob's addresses were never offered.
    assert between_homes(lab) == 0


def test_a_friend_behind_a_nat_joins_a_host_and_is_heard(lab: Lab, tmp_path: Path) -> None:
    """`bangor host` on one network, a friend behind a home router in another."""
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    seconds = len(reference) / SR
    heard = tmp_path / "host.wav"
    hoster = start_bangor(
        [
            "host",
            "--port",
            str(PORT),
            "--user",
            "hoster",
            "--json",
            "--input",
            "silence",
            *("--output", str(heard), "--duration", str(seconds + 12)),
        ],
        tmp_path / "hoster",
        prefix=lab.hoster.cmd(),
    )
    invite = hoster.event("invite")
    assert invite["host"] == "10.200.4.2"  # its address on its default route
    code = str(invite["invite"])
    hoster_id = session_of(hoster)
    alice = start_bangor(
        [
            "join",
            code,
            "--user",
            "alice",
            "--json",
            "--input",
            str(speech),
            *("--output", "null", "--duration", str(seconds + 1.5)),
        ],
        tmp_path / "alice",
        prefix=lab.alice.cmd(),
    )
    path_to(alice, hoster_id, "direct")  # the host is reachable: no relay between them
    assert alice.wait() == 0, alice.stderr.seen
    hoster.proc.terminate()
    assert hoster.wait() == 0, hoster.stderr.seen
    assert_same_speech(reference, read_wav_48k(heard))
