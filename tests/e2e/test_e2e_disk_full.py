"""A full disk under the spool: new mail is refused with 452 4.3.1 (gRPC RESOURCE_EXHAUSTED),
nothing already accepted is damaged, and acceptance resumes by itself when space returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petrel import smtp_replies
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
FS_BYTES = 48 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs of our own to fill up (needs root, which tests run as here)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "small-fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(fs: Path, leave_free: int) -> Path:
    """Write a filler file until only about ``leave_free`` bytes are left."""
    filler = fs / "filler"
    stat = os.statvfs(fs)
    size = max(0, stat.f_bavail * stat.f_frsize - leave_free)
    # Unbuffered: a write refused for lack of space must not stay in a buffer that closing the
    # file would try (and fail) to flush again.
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * (1024 * 1024)
        while size > 0:
            try:
                written = fh.write(chunk[:size])
            except OSError:
                break
            if not written:
                break
            size -= written
    return filler


@pytest.mark.parametrize("guard", ["min_free_bytes", "enospc"])
def test_disk_full_refuses_then_resumes(make_pipeline, sink: SmtpSink, small_fs: Path,
                                        guard: str) -> None:
    min_free = 8 * 1024 * 1024 if guard == "min_free_bytes" else 0
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_SPOOL__PATH": str(small_fs / "spool"),
                              "PETREL_SPOOL__MIN_FREE_BYTES": str(min_free)})
    pipeline.start_all(skip=("gateway", "bounce"))
    before = [f"before{i}@dest.test" for i in range(5)]
    for rcpt in before:
        assert smtp_send(pipeline.smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))[0] == 250

    # Below the guard: a little space left. Without a guard: none at all, RocksDB hits ENOSPC.
    filler = _fill(small_fs, 2 * 1024 * 1024 if min_free else 0)
    big = make_message(SENDER, ["full@dest.test"], body_size=3 * 1024 * 1024)

    def refused_full() -> bool:
        code, text = smtp_send(pipeline.smtp_port, SENDER, ["full@dest.test"], big)
        assert code != 250, "accepted a message the spool had no room for"
        return f"{code} {text.decode()}".startswith(smtp_replies.SPOOL_FULL[:9])

    wait_for(refused_full, timeout=20, interval=0.5, message="452 4.3.1 on a full disk")
    with pytest.raises(grpc.RpcError) as error:
        grpc_inject(pipeline.inject_address, SENDER, ["full@dest.test"], big)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert pipeline.running("spool") and pipeline.running("ingress")

    filler.unlink()
    after = "after@dest.test"
    wait_for(lambda: smtp_send(pipeline.smtp_port, SENDER, [after],
                               make_message(SENDER, [after]))[0] == 250,
             timeout=20, interval=0.5, message="accepting again once space returned")
    wait_for(lambda: all(sink.received_for(r) for r in [*before, after]), timeout=30,
             message="every accepted message delivered")
    assert not sink.received_for("full@dest.test")
    assert all(len(sink.received_for(r)) == 1 for r in [*before, after])
