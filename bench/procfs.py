"""Helpers the benchmarks share: a free loopback port, a process's memory, CPU pinning.

The benchmark scripts run as ``python bench/NAME.py``, so this sits next to them
and is imported as ``procfs``.
"""

from __future__ import annotations

import contextlib
import os
import socket

HOST = "127.0.0.1"
PORT_ATTEMPTS = 100


def free_port(host: str = HOST) -> int:
    """A port number free for both TCP and UDP on ``host``."""
    for _ in range(PORT_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in kB, from ``/proc/PID/status``."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def pin(pid: int, cpus: int | set[int] | None) -> None:
    """Pin every thread of ``pid`` (0: this process) to ``cpus`` (None: leave it be).

    Threads the process starts later inherit the affinity of the thread that starts them.
    """
    if cpus is None:
        return
    allowed = {cpus} if isinstance(cpus, int) else cpus
    for task in os.listdir(f"/proc/{pid or os.getpid()}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), allowed)
