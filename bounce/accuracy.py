"""Accuracy of bounce classification on a labelled corpus.

A corpus directory holds ``replies.tsv`` (``category<TAB>reply`` lines, ``\\n`` between the
lines of a multi-line reply) and ``messages/*.eml`` with ``labels.json`` (per file: kind,
category and the recipients with their category and status). ``evaluate(directory)``
returns a ``Report``; ``python -m bounce.accuracy [DIR]`` or ``petrel bounce accuracy [DIR]``
prints it (``--json`` for the figures as JSON).

Figures: category accuracy (reply and message level), per-category precision and recall,
kind accuracy, recipient accuracy (the extracted recipient set equals the labelled one,
case-insensitively) and status accuracy (first recipient, where the label gives a status).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bounce.classifier import ReplyClassifier
from bounce.message import MessageAnalyser

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bounces"
TARGETS = {"category_accuracy": 0.90, "recipient_accuracy": 0.97}


@dataclass
class Scores:
    """Confusion counts of one labelled set."""

    pairs: list[tuple[str, str]] = field(default_factory=list)  # (expected, got)

    def add(self, expected: str, got: str) -> None:
        self.pairs.append((expected, got))

    @property
    def total(self) -> int:
        return len(self.pairs)

    @property
    def accuracy(self) -> float:
        return sum(e == g for e, g in self.pairs) / self.total if self.pairs else 0.0

    def per_category(self) -> dict[str, dict[str, float]]:
        expected = Counter(e for e, _ in self.pairs)
        got = Counter(g for _, g in self.pairs)
        hits = Counter(e for e, g in self.pairs if e == g)
        out = {}
        for category in sorted(set(expected) | set(got)):
            precision = hits[category] / got[category] if got[category] else 0.0
            recall = hits[category] / expected[category] if expected[category] else 0.0
            out[category] = {"support": expected[category], "predicted": got[category],
                             "precision": round(precision, 3), "recall": round(recall, 3)}
        return out


@dataclass
class Report:
    replies: Scores = field(default_factory=Scores)
    messages: Scores = field(default_factory=Scores)
    kinds: Scores = field(default_factory=Scores)
    recipients_ok: int = 0
    statuses_ok: int = 0
    statuses_total: int = 0
    mistakes: list[str] = field(default_factory=list)

    @property
    def category_accuracy(self) -> float:
        """Over replies and messages together."""
        total = self.replies.total + self.messages.total
        hits = sum(e == g for e, g in self.replies.pairs + self.messages.pairs)
        return hits / total if total else 0.0

    @property
    def recipient_accuracy(self) -> float:
        return self.recipients_ok / self.messages.total if self.messages.total else 0.0

    @property
    def status_accuracy(self) -> float:
        return self.statuses_ok / self.statuses_total if self.statuses_total else 0.0

    def figures(self) -> dict[str, object]:
        return {
            "category_accuracy": round(self.category_accuracy, 4),
            "reply_category_accuracy": round(self.replies.accuracy, 4),
            "message_category_accuracy": round(self.messages.accuracy, 4),
            "kind_accuracy": round(self.kinds.accuracy, 4),
            "recipient_accuracy": round(self.recipient_accuracy, 4),
            "status_accuracy": round(self.status_accuracy, 4),
            "replies": self.replies.total,
            "messages": self.messages.total,
            "reply_categories": self.replies.per_category(),
            "message_categories": self.messages.per_category(),
        }


def evaluate(directory: Path = DEFAULT_CORPUS,
             classifier: ReplyClassifier | None = None) -> Report:
    classifier = classifier or ReplyClassifier.from_files()
    analyser = MessageAnalyser(classifier)
    report = Report()
    replies = directory / "replies.tsv"
    if replies.exists():
        for line in replies.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            expected, text = line.split("\t", 1)
            got = classifier.classify_text(text.replace("\\n", "\n")).category
            report.replies.add(expected, got)
            if got != expected:
                report.mistakes.append(f"reply  {expected} -> {got}: {text[:100]}")
    labels_path = directory / "labels.json"
    labels = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.exists() else {}
    for name, label in sorted(labels.items()):
        result = analyser.analyse((directory / "messages" / name).read_bytes())
        report.messages.add(label["category"], result.category)
        report.kinds.add(label["kind"], result.kind)
        wanted = {r["address"].lower() for r in label["recipients"]}
        found = {r.address.lower() for r in result.recipients}
        if wanted == found:
            report.recipients_ok += 1
        else:
            report.mistakes.append(f"rcpt   {name}: want {sorted(wanted)} got {sorted(found)}")
        if label["category"] != result.category or label["kind"] != result.kind:
            report.mistakes.append(f"msg    {name}: want {label['kind']}/{label['category']} "
                                   f"got {result.kind}/{result.category}")
        if label.get("status") and result.recipients:
            report.statuses_total += 1
            if result.recipients[0].status == label["status"]:
                report.statuses_ok += 1
            else:
                report.mistakes.append(f"status {name}: want {label['status']} "
                                       f"got {result.recipients[0].status}")
    return report


def format_report(report: Report, show_mistakes: bool = False) -> str:
    figures = report.figures()
    lines = [
        f"corpus: {report.replies.total} replies, {report.messages.total} messages",
        f"category accuracy (replies and messages): {figures['category_accuracy']:.3f}",
        f"  replies:  {figures['reply_category_accuracy']:.3f}",
        f"  messages: {figures['message_category_accuracy']:.3f}",
        f"kind accuracy:      {figures['kind_accuracy']:.3f}",
        f"recipient accuracy: {figures['recipient_accuracy']:.3f}",
        f"status accuracy:    {figures['status_accuracy']:.3f} ({report.statuses_total} labelled)",
        "",
    ]
    for title, scores in (("replies", report.replies), ("messages", report.messages)):
        lines.append(f"{title}: {'category':<22} {'support':>7} {'precision':>9} {'recall':>7}")
        for category, row in scores.per_category().items():
            lines.append(f"{'':10}{category:<22} {row['support']:>7} {row['precision']:>9.3f} "
                         f"{row['recall']:>7.3f}")
        lines.append("")
    if show_mistakes and report.mistakes:
        lines.append("mistakes:")
        lines.extend(f"  {m}" for m in report.mistakes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    verbose = "--mistakes" in args
    paths = [a for a in args if not a.startswith("--")]
    report = evaluate(Path(paths[0]) if paths else DEFAULT_CORPUS)
    if as_json:
        print(json.dumps(report.figures(), indent=1))
    else:
        print(format_report(report, verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
