"""Reply classification: the layered rule set applied to SMTP replies.

``ReplyClassifier`` holds one compiled ``RuleSet`` (operator files, Petrel's rules, KumoMTA's
community and IANA rules, Petrel's fallbacks; see ``bounce.rules``) and answers
``classify(code, enhanced, text)`` with a ``ReplyResult``: the category, the enhanced status
(the reply's own, else the one the category stands for) and the basic code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bounce.categories import Category
from bounce.reply import infer_status, parse_reply, reply_line
from bounce.rules import Rule, RuleSet, load_ruleset


@dataclass(frozen=True, slots=True)
class ReplyResult:
    category: str
    # "5.1.1"; inferred from the category and the code's class when the reply has none;
    # "" when there is nothing to go on (no code, no status, no category).
    status: str
    code: int | None
    rule: Rule | None = None

    def as_dict(self) -> dict[str, object]:
        return {"category": self.category, "status": self.status or None, "code": self.code}


class ReplyClassifier:
    """First-match classification of replies with KumoMTA's semantics."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset

    @classmethod
    def from_files(cls, extra: Iterable[str | Path] = ()) -> ReplyClassifier:
        """Operator files first (``bounce.rules_files``), then the built-in layers."""
        return cls(load_ruleset(extra))

    def category(self, code: int | None, enhanced: str, text: str) -> str:
        return self.ruleset.classify(reply_line(code, enhanced, text))

    def classify(self, code: int | None, enhanced: str, text: str,
                 status_class: str = "") -> ReplyResult:
        """Classify one reply; ``status_class`` ("4"/"5") is used for the inferred status
        when the reply has no code (a bounce message's prose)."""
        rule = self.ruleset.match(reply_line(code, enhanced, text))
        category = rule.category if rule is not None else Category.Uncategorized.value
        status = enhanced
        if not status:
            cls_digit = str(code)[0] if code else status_class
            if cls_digit in ("4", "5"):
                status = infer_status(category, cls_digit)
            elif cls_digit == "2":
                status = "2.0.0"
        return ReplyResult(category, status, code, rule)

    def classify_text(self, raw: str) -> ReplyResult:
        """Classify reply text as typed or logged (``"550 5.1.1 No such user"``, multi-line,
        with a ``smtp;`` prefix...)."""
        reply = parse_reply(raw)
        result = self.classify(reply.code, reply.enhanced, reply.text)
        if reply.quoted_status and not reply.enhanced:
            return ReplyResult(result.category, reply.quoted_status, result.code, result.rule)
        return result
