"""Helpers the benchmarks share: a free loopback port, a process's memory, CPU pinning,
a child's output read line by line, and stopping a child.

The benchmark scripts run as ``python bench/NAME.py``, so this sits next to them
and is imported as ``procfs``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

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


class Lines:
    """Reads a text pipe on a thread; lines can be awaited with a timeout."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.seen: list[tuple[float, str]] = []  # (time.monotonic() on arrival, line)
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Iterator[str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us at exit
            for line in stream:
                self.queue.put((time.monotonic(), line.rstrip("\n")))
        self.queue.put(None)

    def drain(self) -> None:
        """Move what has arrived into ``seen`` without waiting."""
        with contextlib.suppress(queue.Empty):
            while (item := self.queue.get_nowait()) is not None:
                self.seen.append(item)

    def wait_for(self, predicate: Callable[[str], bool], deadline: float, what: str) -> str:
        for _, line in self.seen:
            if predicate(line):
                return line
        while True:
            try:
                item = self.queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise RuntimeError(f"timed out waiting for {what}") from None
            if item is None:
                self.queue.put(None)  # stays closed for later waits
                raise RuntimeError(f"{what}: the stream ended first")
            self.seen.append(item)
            if predicate(item[1]):
                return item[1]

    def tail(self, count: int = 10) -> str:
        self.drain()
        return "\n".join(line for _, line in self.seen[-count:])


def stop(proc: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still there ``timeout`` seconds later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
