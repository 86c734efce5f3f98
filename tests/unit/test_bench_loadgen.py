"""Pure parts of the benchmark's load generators and of the Postfix relay's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.loadgen import Outcome, make_message, parse_args, percentile, recipients
from benchmarks.postfix_relay import Knobs, main_cf, master_cf


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("size", [0, 1, 2, 77, 78, 79, 2048, 102400])
def test_messages_have_the_body_size_crlf_lines_and_no_leading_dots(size: int) -> None:
    message = make_message(size, recipients(2))
    head, _, body = message.partition(b"\r\n\r\n")
    assert b"To: <rcpt@dest.example>, <rcpt1@dest.example>" in head
    assert size <= len(body) <= size + 1
    assert body.endswith(b"\r\n") or not body
    lines = message.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert b"\n" not in message.replace(b"\r\n", b"")


def test_recipients_share_one_domain() -> None:
    assert {r.split("@")[1] for r in recipients(5)} == {"dest.example"}
    assert len(set(recipients(5))) == 5


def test_outcome_reports_rate_and_percentiles_in_ms() -> None:
    outcome = Outcome("smtp", "probe", 4, ok=4).finish(2.0, [0.001, 0.002, 0.003, 0.004])
    assert outcome.per_s == 2.0
    assert (outcome.p50_ms, outcome.p99_ms, outcome.max_ms) == (2.0, 4.0, 4.0)


def test_loadgen_refuses_smtp_load_and_bad_rates() -> None:
    with pytest.raises(SystemExit):
        parse_args(["load", "--kind", "smtp", "--target", "127.0.0.1:25"])
    with pytest.raises(SystemExit):
        parse_args(["probe", "--kind", "smtp", "--target", "127.0.0.1:25", "--rate", "0"])


def test_postfix_relay_sends_everything_to_the_sink_with_the_default_queue() -> None:
    conf = main_cf(Path("/tmp/relay"), 30025, Knobs())
    settings = {}
    for line in conf.splitlines():
        if not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    assert settings["relayhost"] == "[127.0.0.1]:30025"
    assert settings["mydestination"] == ""
    assert settings["mynetworks"] == "127.0.0.0/8"
    assert settings["queue_directory"] == "/tmp/relay/queue"
    assert settings["inet_interfaces"] == "127.0.0.1"
    assert settings["initial_destination_concurrency"] == "20"
    assert settings["maillog_file"] == "/tmp/relay/log/maillog"
    assert "maillog_file" not in main_cf(Path("/tmp/relay"), 1, Knobs(log=False))


def test_postfix_relay_master_listens_on_loopback_without_chroot() -> None:
    rows = [line.split() for line in master_cf(30026).splitlines() if not line.startswith("#")]
    assert rows[0] == ["127.0.0.1:30026", "inet", "n", "-", "n", "-", "-", "smtpd"]
    assert all(row[4] == "n" for row in rows)
    assert {row[-1] for row in rows} >= {"smtpd", "cleanup", "qmgr", "smtp", "postlogd"}
