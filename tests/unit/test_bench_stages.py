"""benchmarks/stages.py: the summary and table of stage-scaling runs, and the slow sink's
gate, delay and counters (a real sink process on loopback, driven by smtplib)."""

from __future__ import annotations

import argparse
import smtplib
import threading
import time

import pytest

from benchmarks.stages import Run, SlowSinkProcess, parse_counts, render, summarise


def run(egress: int, rate: float, busy: float = 0.8) -> Run:
    return Run(egress=egress, messages=100, delivered=100, fill_accept_per_s=400.0,
               delivered_per_s=rate, drain_seconds=100 / rate, sink_busy=busy,
               max_open_transactions=8 * egress, cores_used=0.5 * egress, host_cores_busy=1.0,
               cpu_s_per_1k_by_service={"egress": 1.2, "ingress": 0.0, "scheduler": 1.0})


def test_summary_takes_medians_and_ratios_to_one_egress() -> None:
    runs = [run(1, 100), run(2, 190), run(1, 120), run(2, 250), run(1, 110), run(2, 200)]
    one, two = summarise(runs)
    assert (one.egress, one.delivered_per_s, one.low, one.high) == (1, 110, 100, 120)
    assert one.ratio == 1.0
    assert (two.delivered_per_s, two.low, two.high) == (200, 190, 250)
    assert two.ratio == pytest.approx(200 / 110)
    # repeat i of 2 egress against repeat i of 1 egress: 1.9, 250/120, 200/110
    assert two.ratio_low == pytest.approx(200 / 110)
    assert two.ratio_high == pytest.approx(250 / 120)


def test_summary_without_a_one_egress_baseline_has_no_ratio() -> None:
    (row,) = summarise([run(2, 200), run(2, 210)])
    assert row.ratio is None and row.ratio_low is None


def test_table_has_one_line_per_egress_count_and_hides_idle_services() -> None:
    table = render(summarise([run(1, 100), run(2, 200), run(4, 310, busy=0.5)]))
    lines = table.splitlines()
    assert len(lines) == 5
    assert lines[2].startswith("| 1 | 100 (100-100) | 1.00")
    assert lines[4].startswith("| 4 | 310 (310-310) | 3.10")
    assert "| 50% | 2.00 | 1.00 |" in lines[4]
    assert "egress 1.20, scheduler 1.00" in lines[3] and "ingress" not in lines[3]


def test_egress_counts_parse() -> None:
    assert parse_counts("1,2,4") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_counts("0,2")


def test_slow_sink_holds_the_banner_until_opened_then_delays_each_message() -> None:
    sink = SlowSinkProcess(delay_ms=100, gated=True)
    elapsed: list[float] = []
    failures: list[BaseException] = []

    def send_two() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
                started = time.monotonic()
                for subject in ("one", "two"):
                    client.sendmail("a@bench.example", ["b@dest.example"],
                                    f"Subject: {subject}\r\n\r\n.line\r\n".encode())
                elapsed.append(time.monotonic() - started)
        except BaseException as exc:
            failures.append(exc)

    try:
        sender = threading.Thread(target=send_two)
        sender.start()
        deadline = time.monotonic() + 5
        while sink.command("stats")["connections"] < 1:
            assert time.monotonic() < deadline, "the client never connected"
            time.sleep(0.01)
        time.sleep(0.2)
        assert sink.command("stats")["messages"] == 0
        opened = sink.command("open")["opened"]
        sender.join(10)
        assert not failures and elapsed
        stats = sink.command("stats")
        assert stats["messages"] == 2
        assert stats["first"] >= opened + 0.1
        assert elapsed[0] >= 0.2
        assert 0.2 <= stats["busy_seconds"] < 1.0
        assert stats["max_open_transactions"] == 1
        sink.command("reset")
        assert sink.command("stats")["messages"] == 0
    finally:
        sink.stop()
