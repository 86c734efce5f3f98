"""Pure logic of ``make bench``: scenarios, the run plan, median and spread, the table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.bench import (
    DEFAULT_SCENARIOS,
    Cell,
    Result,
    Scenario,
    fmt_cell,
    format_report,
    format_service_cpu,
    format_table,
    format_targets,
    load_results,
    median_run,
    parse_settings,
    plan_runs,
    ratio,
    summarize,
)


def test_smtp_scenarios_parse_like_smtp_source_options() -> None:
    assert Scenario.parse("2k:20:1:10000") == Scenario(2048, 20, 1, 10000)
    assert Scenario.parse("100K:20:5:40:reuse") == Scenario(102400, 20, 5, 40, reuse=True)
    assert Scenario.parse("512:1:1:3") == Scenario(512, 1, 1, 3)


def test_inject_scenarios_take_a_kind_and_default_to_one_recipient() -> None:
    assert Scenario.parse("grpc:2k:4:1000") == Scenario(2048, 4, 1, 1000, kind="grpc")
    assert Scenario.parse("rest:2k:20:3:500") == Scenario(2048, 20, 3, 500, kind="rest")
    assert Scenario.parse("smtp:2k:20:1:9") == Scenario(2048, 20, 1, 9)


@pytest.mark.parametrize("text", ["2k:20:1", "2k:20:1:10:reuse:x", "xk:1:1:1", "2k:0:1:5",
                                  "2k:1:1:0", "grpc:2k:4:1:10:reuse", "ftp:2k:1:1:1", ""])
def test_bad_scenarios_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Scenario.parse(text)


@pytest.mark.parametrize("text", [*DEFAULT_SCENARIOS, "512:1:1:3", "rest:2k:20:3:500"])
def test_spec_round_trips(text: str) -> None:
    scenario = Scenario.parse(text)
    assert Scenario.parse(scenario.spec) == scenario


def test_labels_name_what_runs() -> None:
    assert Scenario.parse("2k:20:1:10").label == "2 KB x 20 sessions"
    assert Scenario.parse("2k:1:1:10").label == "2 KB x 1 session"
    assert Scenario.parse("2k:20:5:10").label == "2 KB x 20 sessions x 5 rcpt"
    assert Scenario.parse("2k:20:1:10:reuse").label == "2 KB x 20 sessions reuse (-d)"
    assert Scenario.parse("grpc:2k:4:10").label == "gRPC inject 2 KB x 4 streams"
    assert Scenario.parse("rest:2k:20:10").label == "REST inject 2 KB x 20 clients"


def test_default_set_covers_the_issue_scenarios() -> None:
    scenarios = [Scenario.parse(s) for s in DEFAULT_SCENARIOS]
    shapes = {(s.kind, s.size, s.sessions, s.rcpts, s.reuse) for s in scenarios}
    assert shapes == {("smtp", 2048, 20, 1, False), ("smtp", 2048, 1, 1, False),
                      ("smtp", 20480, 20, 1, False), ("smtp", 102400, 20, 1, False),
                      ("smtp", 2048, 20, 5, False), ("smtp", 2048, 20, 1, True),
                      ("grpc", 2048, 4, 1, False), ("rest", 2048, 20, 1, False)}


def test_quick_scaling_divides_counts_and_keeps_at_least_one() -> None:
    assert Scenario.parse("2k:20:1:10000").scaled(5).count == 2000
    assert Scenario.parse("2k:20:1:3").scaled(5).count == 1


def test_expected_deliveries_one_per_message_except_rest_per_recipient() -> None:
    assert Scenario.parse("2k:20:5:100").deliveries(100) == 100
    assert Scenario.parse("grpc:2k:4:5:100").deliveries(100) == 100
    assert Scenario.parse("rest:2k:4:3:100").deliveries(100) == 300


def test_plan_interleaves_systems_and_alternates_their_order() -> None:
    smtp, grpc = Scenario.parse("2k:20:1:10"), Scenario.parse("grpc:2k:4:10")
    plan = [(sc.kind, system, rep) for sc, system, rep in
            plan_runs([smtp, grpc], ["petrel", "postfix"], 3)]
    assert plan == [("smtp", "petrel", 1), ("smtp", "postfix", 1), ("smtp", "postfix", 2),
                    ("smtp", "petrel", 2), ("smtp", "petrel", 3), ("smtp", "postfix", 3),
                    ("grpc", "petrel", 1), ("grpc", "petrel", 2), ("grpc", "petrel", 3)]
    assert [s for _, s, _ in plan_runs([smtp, grpc], ["postfix"], 1)] == ["postfix"]


def test_summarize_gives_median_and_spread_ignoring_missing_values() -> None:
    assert summarize([3.0, None, 1.0, 2.0]) == Cell(2.0, 1.0, 3.0, 3)
    assert summarize([1.0, 4.0]) == Cell(2.5, 1.0, 4.0, 2)
    assert summarize([None]) == Cell(None)


def test_cells_show_spread_only_when_runs_differ() -> None:
    assert fmt_cell(Cell(1234.4, 1000.0, 1500.0, 3)) == "1,234 (1,000-1,500)"
    assert fmt_cell(Cell(2.0, 2.0, 2.0, 3), 2) == "2.00"
    assert fmt_cell(Cell(7.25, 7.25, 7.25, 1), 1) == "7.2"
    assert fmt_cell(Cell(None)) == "-"


def test_ratio_of_medians() -> None:
    assert ratio(Cell(300.0), Cell(1000.0)) == pytest.approx(0.3)
    assert ratio(Cell(None), Cell(1000.0)) is None
    assert ratio(Cell(1.0), Cell(0.0)) is None


def test_settings_must_be_petrel_variables() -> None:
    assert parse_settings(["PETREL_EVENT_LOOP=uvloop", "PETREL_X=a=b"]) == {
        "PETREL_EVENT_LOOP": "uvloop", "PETREL_X": "a=b"}
    with pytest.raises(ValueError):
        parse_settings(["EVENT_LOOP=uvloop"])


def result(system: str, spec: str, delivered: float, cpu: float, p99: float | None = None,
           **extra: object) -> Result:
    sc = Scenario.parse(spec)
    values: dict[str, object] = {"system": system, "spec": sc.spec, "kind": sc.kind,
                                 "latency_p99_ms": p99, "latency_p50_ms": p99 and p99 / 4,
                                 "latency_rate": delivered / 2, **extra}
    return Result(sc.label, sc.count, delivered * 1.2, delivered, cpu,
                  {"ingress": cpu / 2, "spool": cpu / 2} if system == "petrel" else {},
                  {"ingress": 70.0, "spool": 60.0} if system == "petrel"
                  else {"smtpd": 90.0, "cleanup": 40.0}, 10.0, **values)  # type: ignore[arg-type]


RUNS = [
    result("petrel", "2k:20:1:1000", 400.0, 4.0, 20.0),
    result("postfix", "2k:20:1:1000", 1000.0, 1.6, 5.0),
    result("postfix", "2k:20:1:1000", 900.0, 1.5, 6.0),
    result("petrel", "2k:20:1:1000", 500.0, 3.0, 30.0),
    result("petrel", "2k:20:1:1000", 450.0, 3.5, 25.0),
    result("postfix", "2k:20:1:1000", 1100.0, 1.7, 7.0),
    result("petrel", "grpc:2k:4:1000", 800.0, 2.0, 60.0),
]


def test_table_has_a_row_per_scenario_and_system_and_the_ratio() -> None:
    lines = format_table(RUNS).splitlines()
    assert lines[0].startswith("| scenario | system | msgs | accepted/s | delivered/s | cpu-s/1k")
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in body] == [["2 KB x 20 sessions", "petrel"], ["", "postfix"],
                                         ["", "petrel/postfix"],
                                         ["gRPC inject 2 KB x 4 streams", "petrel"]]
    petrel, postfix, ratios, _grpc = body
    assert petrel[4] == "450 (400-500)"
    assert petrel[5] == "3.50 (3.00-4.00)"
    assert petrel[7] == "25.0 (20.0-30.0)"
    assert postfix[4] == "1,000 (900-1,100)"
    assert ratios[4] == "**0.45x**"
    assert ratios[5] == "**2.19x**"
    assert petrel[9] == "ingress 70, spool 60"


def test_rss_cell_shows_the_total_first_when_known() -> None:
    run = result("postfix", "2k:20:1:10", 1.0, 1.0, peak_rss_total_mb=150.0)
    row = format_table([run]).splitlines()[2]
    assert "150: smtpd 90, cleanup 40" in row


def test_failed_runs_are_marked_in_the_system_column() -> None:
    runs = [result("petrel", "2k:20:1:10", 1.0, 1.0),
            result("petrel", "2k:20:1:10", 2.0, 1.0, status="TIMEOUT(sink 5/10)")]
    assert "petrel (1/2 failed: TIMEOUT(sink 5/10))" in format_table(runs)


def test_median_run_is_the_one_with_the_median_delivered_rate() -> None:
    assert median_run(RUNS[0:1] + RUNS[3:5]).delivered_per_s == 450.0
    assert median_run(RUNS[0:1] + RUNS[3:4]).delivered_per_s == 400.0


def test_service_cpu_table_lists_petrel_services() -> None:
    lines = format_service_cpu(RUNS).splitlines()
    assert lines[0] == "| scenario | ingress | spool |"
    assert lines[2] == "| 2 KB x 20 sessions | 1.75 | 1.75 |"
    assert format_service_cpu([r for r in RUNS if r.system == "postfix"]) == ""


def test_targets_judge_the_2k_20_ratio_cpu_and_p99() -> None:
    targets = format_targets(RUNS)
    assert targets[0].startswith("- 2 KB x 20 delivered/s Petrel/Postfix = 0.45")
    assert targets[0].endswith("NOT met")
    assert "Petrel 3.50 vs Postfix 1.60" in targets[1] and targets[1].endswith("NOT met")
    assert any("p99 60.0 ms > 50 ms" in t and "gRPC" in t for t in targets)
    fast = [result("petrel", "2k:20:1:10", 1600.0, 1.0, 10.0),
            result("postfix", "2k:20:1:10", 1000.0, 1.5, 5.0)]
    assert format_targets(fast) == [
        "- 2 KB x 20 delivered/s Petrel/Postfix = 1.60 (must >= 1.0, goal >= 1.5): met, goal too",
        "- CPU-s per 1,000 messages: Petrel 1.00 vs Postfix 1.50 (target <= Postfix's): met",
        "- accept p99 <= 50 ms at half the maximum rate: met in every Petrel row "
        "(worst 10.0 ms, 2 KB x 20 sessions)"]


def test_report_reads_back_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps({**asdict(r), "future_field": 1}) + "\n" for r in RUNS))
    loaded = load_results([str(path)])
    assert loaded == RUNS
    report = format_report(loaded)
    assert format_table(RUNS) in report
    assert "Targets (performance issue):" in report
