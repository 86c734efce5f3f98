"""Classification throughput on one core: ``python -m bounce.bench [SECONDS]``.

Classifies the replies of the labelled corpus (``tests/data/bounces/replies.tsv``) in a loop
and the corpus messages, and prints replies/s and messages/s as JSON (CPU time, best of three
runs, rules compiled beforehand, as in the service). Each reply is classified in 20 variants
carrying a different queue id, as real replies do, so per-token caches see new tokens.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bounce.accuracy import DEFAULT_CORPUS
from bounce.classifier import ReplyClassifier
from bounce.message import MessageAnalyser
from bounce.reply import parse_reply


def _rate(work: Sequence[Any], run: Callable[[Any], object], seconds: float) -> float:
    best = 0.0
    for _ in range(3):
        done, started = 0, time.process_time()
        while time.process_time() - started < seconds:
            for item in work:
                run(item)
            done += len(work)
        best = max(best, done / (time.process_time() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 1.0
    started = time.process_time()
    classifier = ReplyClassifier.from_files()
    compile_seconds = time.process_time() - started
    lines = [line.split("\t", 1)[1].replace("\\n", "\n")
             for line in (DEFAULT_CORPUS / "replies.tsv").read_text().splitlines()
             if line and not line.startswith("#")]
    rng = random.Random(1)
    replies = [parse_reply(f"{text} id={rng.getrandbits(48):012x}")
               for _ in range(20) for text in lines]
    reply_rate = _rate(replies, lambda r: classifier.category(r.code, r.enhanced, r.text),
                       seconds)
    analyser = MessageAnalyser(classifier)
    messages = [p.read_bytes() for p in sorted((DEFAULT_CORPUS / "messages").glob("*.eml"))]
    message_rate = _rate(messages, analyser.analyse, seconds)
    print(json.dumps({
        "rules": len(classifier.ruleset), "compile_seconds": round(compile_seconds, 3),
        "replies": len(replies), "replies_per_second": round(reply_rate),
        "messages": len(messages), "messages_per_second": round(message_rate)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
