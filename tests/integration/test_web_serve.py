"""`bangor serve --web` as a process: the ready line, the page, clean errors and exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import BANGOR, LineReader, free_port, run_bangor

pytestmark = pytest.mark.integration


def test_serve_web_logs_the_page_url_and_serves_config(tmp_path: Path) -> None:
    port, web = free_port(), free_port()
    proc = subprocess.Popen(
        [BANGOR, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--web", f"127.0.0.1:{web}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr = LineReader(proc.stderr)
    try:
        stderr.wait_for(lambda line: f"web client at http://127.0.0.1:{web}/" in line)
        stderr.wait_for(lambda line: f"listening on 127.0.0.1:{port}" in line)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/config.json", timeout=5) as answer:
            config = json.load(answer)
        assert config["webtransport"] == {"port": web, "path": "/bangor/1"}
        assert len(config["certificate_hashes"]) == 1 and config["accounts"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    rest = stderr.seen + stderr.rest(timeout=5)
    assert not any("Traceback" in line for line in rest)
    assert not any(line.startswith("quic:") for line in rest)  # aioquic's chatter stays out
    assert not any("PRIVATE KEY" in line for line in rest)


def test_a_taken_web_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web = taken.getsockname()[1]
        result = run_bangor(
            ["serve", "--host", "127.0.0.1", "--port", str(free_port()),
             "--data-dir", str(tmp_path / "data"), "--web", f"127.0.0.1:{web}"],
            timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{web}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_certificate_files_are_a_usage_error(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    result = run_bangor(
        ["serve", "--host", "127.0.0.1", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data"), "--web", f"127.0.0.1:{free_port()}",
         "--tls-cert", str(cert), "--tls-key", str(cert)],
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--tls-cert/--tls-key: cannot use" in result.stderr
    assert "Traceback" not in result.stderr
