"""`petrel up`: one command starts every service, restarts a child that dies, stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.messages import make_message, smtp_send
from tests.support.net import free_port, port_open, wait_for
from tests.support.pipeline import REPO
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_petrel_up_starts_restarts_and_stops_everything(tmp_path: Path, sink: SmtpSink) -> None:
    smtp, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
    for section in ("spool", "scheduler", "bounce"):
        port = free_port()
        env[f"PETREL_{section.upper()}__LISTEN"] = f"127.0.0.1:{port}"
        env[f"PETREL_{section.upper()}__ADDRESS"] = f"127.0.0.1:{port}"
    grpc_port = free_port()
    env["PETREL_INGRESS__GRPC_LISTEN"] = env["PETREL_INGRESS__ADDRESS"] = f"127.0.0.1:{grpc_port}"
    data_dir = tmp_path / "data"
    out = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "petrel", "up", "--data-dir", str(data_dir),
         "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}",
         "--smarthost", sink.address], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(smtp) and port_open(http), timeout=60,
                 message="SMTP and HTTP listeners")
        log = (tmp_path / "up.log").read_text()
        announced = next(json.loads(line) for line in log.splitlines()
                         if line.startswith('{"petrel": "up"'))
        assert announced["smtp"] == f"127.0.0.1:{smtp}"
        assert announced["http"] == f"127.0.0.1:{http}"

        assert smtp_send(smtp, SENDER, ["first@dest.test"],
                         make_message(SENDER, ["first@dest.test"]))[0] == 250
        wait_for(lambda: sink.received_for("first@dest.test"), timeout=30)

        pid_file = data_dir / "run" / "scheduler.pid"
        old_pid = int(pid_file.read_text())
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: int(pid_file.read_text()) != old_pid, timeout=30,
                 message="scheduler restarted")
        assert smtp_send(smtp, SENDER, ["second@dest.test"],
                         make_message(SENDER, ["second@dest.test"]))[0] == 250
        wait_for(lambda: sink.received_for("second@dest.test"), timeout=30)
        assert httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=5).status_code == 200

        children = [int(p.read_text()) for p in (data_dir / "run").glob("*.pid")]
        assert len(children) == 6
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        assert not [pid for pid in children if _alive(pid)]
        assert not port_open(smtp)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        out.close()
