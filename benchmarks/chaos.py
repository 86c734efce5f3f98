"""Chaos soak: steady load through the whole pipeline while services are killed and the
destination flaps; then check that nothing accepted was lost.

    python benchmarks/chaos.py --minutes 10 --kill-every 20 [--rate 50] [--report docs/chaos.md]

Runs every service as a process (tests/support/pipeline.Pipeline), an aiosmtpd sink as the
destination and a gRPC injector at a bounded rate. Every ``--kill-every`` seconds a random
service (spool, scheduler, egress, ingress, bounce) gets SIGKILL and is restarted; every
``--flap-every`` seconds the sink switches between accepting and answering 451 for a while.
After ``--minutes`` the load stops, the sink accepts again, and the run waits (bounded) until
every accepted message has a final event. Reported: accepted, refused (the client saw an
error, so the message was not accepted), lost (accepted, no final event and never delivered),
duplicate deliveries (at-least-once crash windows), kills per service, RSS per service sampled
at the start and the end of the load, and per process instance over its life ("RSS did not
grow"). Exit status 1 when anything was lost or an instance's memory grew.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from petrel.v1 import ingress_pb2, ingress_pb2_grpc  # noqa: E402
from tests.support.messages import make_message  # noqa: E402
from tests.support.pipeline import Pipeline, final_dispositions  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

VICTIMS = ("spool", "scheduler", "egress", "ingress", "bounce")
SENDER = "chaos@petrel.test"


class Load(threading.Thread):
    """Injects at ``rate`` messages/s in small streamed batches until stopped."""

    def __init__(self, address: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.address, self.rate = address, rate
        self.accepted: dict[str, str] = {}
        self.refused = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        batch = max(1, int(self.rate // 5))
        with grpc.insecure_channel(self.address) as channel:
            stub = ingress_pb2_grpc.InjectServiceStub(channel)
            while not self.stop_event.is_set():
                started = time.monotonic()
                requests = []
                for _ in range(batch):
                    rcpt = f"c{n}@dest.test"
                    requests.append(ingress_pb2.InjectMessageRequest(
                        seq=n, sender=SENDER, recipients=[rcpt],
                        content=make_message(SENDER, [rcpt], body_size=1500)))
                    n += 1
                try:
                    for reply in stub.InjectMessages(iter(requests), timeout=15):
                        if reply.status.code == 0 and reply.id:
                            self.accepted[reply.id] = f"c{reply.seq}@dest.test"
                        else:
                            self.refused += 1
                except grpc.RpcError:
                    self.refused += len(requests)
                pause = batch / self.rate - (time.monotonic() - started)
                self.stop_event.wait(max(0.0, pause))


def rss_mb(pipeline: Pipeline) -> dict[str, float]:
    out = {}
    for name, proc in pipeline.procs.items():
        try:
            status = Path(f"/proc/{proc.process.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[name] = round(int(line.split()[1]) / 1024, 1)
    return out


class RssTracker:
    """RSS of every process instance over its life: a baseline once it has run for
    ``settle`` seconds, then the latest sample. Growth is judged per instance, since killed
    services restart with fresh memory."""

    def __init__(self, settle: float = 20.0) -> None:
        self.settle = settle
        self.instances: dict[int, dict[str, float | str]] = {}

    def sample(self, pipeline: Pipeline) -> None:
        now = time.monotonic()
        current = rss_mb(pipeline)
        for name, proc in pipeline.procs.items():
            if name not in current:
                continue
            entry = self.instances.setdefault(proc.process.pid, {"service": name, "born": now})
            if "baseline" not in entry and now - float(entry["born"]) >= self.settle:
                entry["baseline"] = current[name]
                entry["since"] = now
            entry["last"] = current[name]
            entry["seen"] = now

    def growth(self, min_observed: float = 60.0) -> list[dict[str, float | str]]:
        """Instances observed for at least ``min_observed`` s after their baseline."""
        rows = []
        for entry in self.instances.values():
            if "baseline" not in entry:
                continue
            observed = float(entry["seen"]) - float(entry["since"])
            if observed >= min_observed:
                growth = float(entry["last"]) - float(entry["baseline"])
                rows.append({"service": entry["service"], "baseline_mb": entry["baseline"],
                             "last_mb": entry["last"], "observed_s": round(observed),
                             "growth_mb": round(growth, 1)})
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--flap-every", type=float, default=45.0)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", help="write the Markdown report to this file")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="petrel-chaos-") as tmp, SmtpSink() as sink:
        pipeline = Pipeline(Path(tmp), {
            "PETREL_ROUTING__SMARTHOST": sink.address,
            "PETREL_SCHEDULER__RETRY_INTERVAL": "2s",
            "PETREL_SCHEDULER__MAX_RETRY_INTERVAL": "10s",
            "PETREL_INGRESS__SPOOL_DEADLINE": "3s",
            "PETREL_LOG_LEVEL": "WARNING",
        })
        kills: Counter[str] = Counter()
        flaps = 0
        try:
            pipeline.start_all(skip=("gateway",))
            load = Load(pipeline.inject_address, args.rate)
            load.start()
            time.sleep(min(10.0, args.minutes * 60 / 4))
            rss_start = rss_mb(pipeline)
            tracker = RssTracker()
            next_sample = 0.0
            end = time.monotonic() + args.minutes * 60
            next_kill = time.monotonic() + args.kill_every
            next_flap = time.monotonic() + args.flap_every
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_sample:
                    tracker.sample(pipeline)
                    next_sample = now + 2.0
                if now >= next_kill:
                    victim = rng.choice(VICTIMS)
                    pipeline.kill(victim)
                    kills[victim] += 1
                    pipeline.start(victim, timeout=60)
                    next_kill = now + args.kill_every
                if now >= next_flap:
                    sink.rcpt_reply = None if sink.rcpt_reply else "451 4.3.2 chaos: busy"
                    flaps += 1
                    next_flap = now + args.flap_every
                time.sleep(0.2)
            rss_end = rss_mb(pipeline)
            load.stop_event.set()
            load.join(30)
            sink.rcpt_reply = None

            deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < deadline:
                finals = final_dispositions(pipeline.events())
                if all((mid, rcpt) in finals for mid, rcpt in load.accepted.items()):
                    break
                time.sleep(2)
            finals = final_dispositions(pipeline.events())
            received = Counter(r for m in sink.messages for r in m.recipients)
            missing = [(m, r) for m, r in load.accepted.items() if (m, r) not in finals]
            lost = [r for _, r in missing if received[r] == 0]
            summary = {
                "minutes": args.minutes, "kill_every_s": args.kill_every, "rate": args.rate,
                "accepted": len(load.accepted), "refused": load.refused,
                "without_final_event": len(missing), "lost": len(lost),
                "duplicate_deliveries": sum(n - 1 for n in received.values() if n > 1),
                "duplicate_final_events": sum(len(v) - 1 for v in finals.values() if len(v) > 1),
                "kills": dict(kills), "sink_flaps": flaps,
                "rss_mb_start": rss_start, "rss_mb_end": rss_end,
                "rss_by_instance": tracker.growth(),
            }
            # "RSS did not grow": no instance observed for a minute or more grew by more than
            # a quarter of its settled size (and at least 20 MB).
            summary["rss_grew"] = [
                row for row in summary["rss_by_instance"]
                if float(row["growth_mb"]) > max(20.0, 0.25 * float(row["baseline_mb"]))]
        finally:
            pipeline.stop_all()
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).write_text(render(summary))
    return 1 if summary["lost"] or summary["rss_grew"] else 0


def render(s: dict) -> str:
    instances = "\n".join(
        ["| service | settled MB | last MB | observed s | growth MB |", "|---|---|---|---|---|"]
        + [f"| {r['service']} | {r['baseline_mb']} | {r['last_mb']} | {r['observed_s']} | "
           f"{r['growth_mb']} |" for r in sorted(s["rss_by_instance"],
                                                 key=lambda r: str(r["service"]))])
    rows = "\n".join(f"| {k} | {s['rss_mb_start'].get(k, '-')} | {v} |"
                     for k, v in sorted(s["rss_mb_end"].items()))
    return f"""# Chaos soak report

Command: `python benchmarks/chaos.py --minutes {s['minutes']} --kill-every {s['kill_every_s']}
--rate {s['rate']}`

| figure | value |
|---|---|
| accepted messages | {s['accepted']} |
| refused (client saw an error) | {s['refused']} |
| lost | **{s['lost']}** |
| accepted without a final event at the end | {s['without_final_event']} |
| duplicate deliveries (at-least-once) | {s['duplicate_deliveries']} |
| duplicate final events | {s['duplicate_final_events']} |
| kills | {', '.join(f'{k} {v}' for k, v in sorted(s['kills'].items()))} |
| sink flaps (accept ↔ 451) | {s['sink_flaps']} |

RSS per process instance observed for at least a minute after settling (20 s after start;
a killed service restarts with fresh memory, so growth is judged per instance). "RSS did
not grow" means no instance grew by more than max(20 MB, 25 %):

{instances}

RSS did not grow: **{"yes" if not s["rss_grew"] else "no: " + str(s["rss_grew"])}**

RSS per service (MB) at the start and at the end of the load:

| service | start | end |
|---|---|---|
{rows}
"""


if __name__ == "__main__":
    sys.exit(main())
