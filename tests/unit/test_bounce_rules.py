"""bounce rules: KumoMTA's rule files load unchanged, layering and first-match order, the
fancy-regex translation, and the fast matcher agreeing with a plain first-match scan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bounce.categories import KUMOMTA_CATEGORIES, PETREL_CATEGORIES, Category
from bounce.classifier import ReplyClassifier
from bounce.fancy import UnsupportedRegex, translate
from bounce.rules import (
    BUILTIN_DIR,
    BUILTIN_FILES,
    Rule,
    RulesError,
    RuleSet,
    compile_rule,
    load_rules_file,
    load_ruleset,
    parse_rules,
)

REPLIES_TSV = Path(__file__).parents[1] / "data" / "bounces" / "replies.tsv"


@pytest.fixture(scope="module")
def classifier() -> ReplyClassifier:
    return ReplyClassifier.from_files()


def test_category_names() -> None:
    assert len(KUMOMTA_CATEGORIES) == 29
    assert KUMOMTA_CATEGORIES[0] == "InvalidRecipient"
    assert KUMOMTA_CATEGORIES[-1] == "Uncategorized"
    assert {"NotBounce", "FeedbackReport", "AutoReply"} <= set(PETREL_CATEGORIES)
    assert len(set(PETREL_CATEGORIES)) == 31


@pytest.mark.parametrize("name", BUILTIN_FILES)
def test_every_shipped_regex_compiles(name: str) -> None:
    rules = load_rules_file(BUILTIN_DIR / name)
    assert rules
    for rule in rules:
        assert isinstance(rule.regex, re.Pattern)


def test_kumomta_files_are_unchanged_copies() -> None:
    # The counts of the upstream files: 26 status-code rules, 109 community rules.
    assert len(load_rules_file(BUILTIN_DIR / "iana.toml")) == 26
    assert len(load_rules_file(BUILTIN_DIR / "community_bounces.toml")) == 109


def test_petrel_rules_use_known_categories() -> None:
    for name in ("petrel.toml", "petrel_fallback.toml"):
        for rule in load_rules_file(BUILTIN_DIR / name):
            assert rule.category in PETREL_CATEGORIES, rule.source


@pytest.mark.parametrize(("reply", "category"), [
    ("550 5.1.1 No such user", Category.InvalidRecipient),
    ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in local "
     "recipient table", Category.InvalidRecipient),
    ("550-5.1.1 The email account that you tried to reach does not exist.",
     Category.InvalidRecipient),
    ("452 4.2.2 Mailbox full", Category.QuotaIssues),
    ("552 5.2.2 Quota exceeded", Category.QuotaIssues),
    ("451 4.3.0 try later", Category.TransientFailure),
    ("421 4.7.0 Greylisted, please try again in 5 minutes", Category.TransientFailure),
    ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
     "zen.spamhaus.org", Category.SpamBlock),
    ("554 5.7.1 <x@example.org>: Relay access denied", Category.RelayDenied),
    ("550 5.2.1 The email account that you tried to reach is disabled.",
     Category.InactiveMailbox),
    ("550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
     "DMARC policy", Category.AuthenticationFailed),
    ("554 5.9.9 Frobnication refused", Category.Uncategorized),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     Category.InvalidRecipient),
    ("553 sorry, no mailbox here by that name. (#5.1.1)", Category.InvalidRecipient),
    ("451 4.4.5 Congestion", Category.TransientFailure),
])
def test_typical_replies(classifier: ReplyClassifier, reply: str, category: str) -> None:
    assert classifier.classify_text(reply).category == category


def test_classify_text_reports_status_and_code(classifier: ReplyClassifier) -> None:
    assert classifier.classify_text("550 5.1.1 No such user").as_dict() == {
        "category": "InvalidRecipient", "status": "5.1.1", "code": 550}
    # No enhanced code: the status the category stands for, in the code's class.
    assert classifier.classify_text("452 mailbox full").as_dict() == {
        "category": "QuotaIssues", "status": "4.2.2", "code": 452}
    assert classifier.classify_text("553 no mailbox here by that name (#5.1.1)").status == \
        "5.1.1"


def test_first_rule_in_file_order_wins_across_layers(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('[rules]\nMyCategory = ["^550 5\\\\.1\\\\.1 "]\n')
    classifier = ReplyClassifier.from_files([mine])
    assert classifier.category(550, "5.1.1", "No such user") == "MyCategory"
    assert classifier.category(452, "4.2.2", "Mailbox full") == "QuotaIssues"


def test_order_inside_one_file() -> None:
    rules = parse_rules({"rules": {"B": ["user"], "A": ["unknown", "user"]}}, "inline")
    assert [r.category for r in rules] == ["B", "A", "A"]
    assert RuleSet(rules).classify("550 user unknown") == "B"
    assert RuleSet(rules).classify("550 unknown user") == "B"
    assert RuleSet(rules).classify("550 unknown thing") == "A"
    assert RuleSet(rules).classify("550 nothing") == "Uncategorized"


def test_json_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": {"QuotaIssues": ["^452 "]}}))
    assert load_ruleset([path]).classify("452 whatever") == "QuotaIssues"


@pytest.mark.parametrize(("content", "message"), [
    ("[other]\nX = []\n", "exactly one table"),
    ('[rules]\nX = "not a list"\n', "list of strings"),
    ('[rules]\nX = ["(unclosed"]\n', "rules.X[0]"),
    ('[rules]\nX = ["[a&&b]"]\n', "class set operation"),
    ("not toml at all [", "rules.toml"),
])
def test_bad_rule_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(content)
    with pytest.raises(RulesError, match=re.escape(message)):
        load_rules_file(path)


@pytest.mark.parametrize(("fancy", "python"), [
    (r"^550 5\.1\.1 ", r"^550 5\.1\.1 "),
    (r"abc(?i)def", r"abc(?i:def)"),
    (r"abc(?i)def|ghi", r"abc(?i:def)|(?i:ghi)"),
    (r"(a(?i)b)c", r"(a(?i:b))c"),
    (r"(?i)abc", r"(?i)abc"),
    (r"(?<n>\d+)-\k<n>", r"(?P<n>\d+)-(?P=n)"),
    (r"[[:alpha:]]+\z", r"[A-Za-z]+\Z"),
    (r"\x{263A}", r"\u263a"),
    (r"\p{L}+", r"[^\W\d_]+"),
])
def test_fancy_regex_translation(fancy: str, python: str) -> None:
    assert translate(fancy) == python
    re.compile(translate(fancy))


@pytest.mark.parametrize("fancy", [r"[a-z&&[^x]]", r"(?U)a+", r"a\Kb", r"\p{Greek}"])
def test_untranslatable_regexes_are_refused(fancy: str) -> None:
    with pytest.raises(UnsupportedRegex):
        translate(fancy)


def test_translated_inline_flags_keep_meaning() -> None:
    rule = compile_rule("X", "^550 (?i)user UNKNOWN")
    assert rule.regex.search("550 User Unknown")
    assert not rule.regex.search("551 user unknown")


def _naive(rules: tuple[Rule, ...], line: str) -> str:
    for rule in rules:
        if rule.regex.search(line):
            return rule.category
    return "Uncategorized"


def _sample_lines() -> list[str]:
    lines = [line.split("\t", 1)[1].replace("\\n", "\n")
             for line in REPLIES_TSV.read_text().splitlines()
             if line and not line.startswith("#")]
    lines += [
        "550 5.1.1 No such user", "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't "
        "sent. Please contact your Internet service provider since part of their network is on "
        "our block list (S3150).", "250 2.0.0 OK", "", "5", "55", "550", "550 ",
        "452 4.2.2 The recipient's inbox is out of storage space.",
        "554 delivery error: dd This user doesn't have a yahoo.com account",
        "550 Benutzer unbekannt", "550 Utilisateur inconnu", "550 Пользователь не найден",
        "550 5.1.1 \u017fuperu\u017fer unknown", "550 5.1.1 \u212aelvin user unknown",
    ]
    return lines


def test_fast_matching_equals_a_plain_first_match_scan() -> None:
    ruleset = load_ruleset()
    lines = _sample_lines()
    variants = [v for line in lines for v in (line, line.upper(), line.lower(),
                                              line.replace(" ", "  "), line[4:])]
    for line in variants:
        assert ruleset.classify(line) == _naive(ruleset.rules, line), line


def test_caches_stay_bounded_and_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    import bounce.rules as rules_module

    monkeypatch.setattr(rules_module, "_MAX_TOKENS", 50)
    monkeypatch.setattr(rules_module, "_MAX_BUCKETS", 4)
    ruleset = load_ruleset()
    for i, line in enumerate(_sample_lines()):
        varied = f"{line} queue-id {i:08x}"
        assert ruleset.classify(varied) == _naive(ruleset.rules, varied), varied
        assert ruleset._cached_tokens <= 50
        assert len(ruleset._buckets) <= 4
