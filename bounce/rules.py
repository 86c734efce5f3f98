"""KumoMTA-format bounce classification rules: loading, layering and fast matching.

A rules file is TOML or JSON holding one table, ``rules``, mapping a category name to a list
of regexes (Rust ``fancy-regex`` syntax, translated by ``bounce.fancy``). Each regex is matched
(searched, not anchored) against the one-line reply ``"<code> <enhanced> <text>"``. Rules are
layered: files are consulted in the order given and, inside a file, in file order; the first
matching rule decides; no match gives ``Uncategorized``. Category names are free strings.

``RuleSet`` compiles every rule once and keeps those semantics while avoiding most regex
work: each rule is analysed for the strings a match must start with (``^550``, ``^(451|550)``,
``^5\\d{2}``...) and for a literal it must contain; a reply is checked only against the rules
whose prefix fits its first three characters (cached per prefix), and a rule's regex runs only
when its literal occurs in the reply.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from bounce.categories import Category
from bounce.fancy import UnsupportedRegex, translate

BUILTIN_DIR = Path(__file__).with_name("rules")
# Petrel's own rules (provider-specific, then generic phrases), KumoMTA's community rules
# (meant to come before iana), KumoMTA's IANA status-code rules, Petrel's status fallbacks.
BUILTIN_FILES: tuple[str, ...] = ("petrel_specific.toml", "petrel.toml",
                                  "community_bounces.toml", "iana.toml", "petrel_fallback.toml")
_PREFIX_LEN = 3
_MAX_PREFIXES = 2048
# Memory bounds: prefix buckets, and cached token masks over all buckets together.
_MAX_BUCKETS = 1024
_MAX_TOKENS = 200_000


class RulesError(ValueError):
    """A rules file is unreadable or malformed; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One regex of one category, with where it came from."""

    category: str
    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)
    source: str = ""


def compile_rule(category: str, pattern: str, source: str = "") -> Rule:
    """Translate and compile one rule; raises ``RulesError`` naming ``source``."""
    try:
        regex = re.compile(translate(pattern))
    except (UnsupportedRegex, re.error, OverflowError) as exc:
        raise RulesError(f"{source}: bad regex {pattern!r}: {exc}") from exc
    return Rule(category, pattern, regex, source)


def parse_rules(data: Any, origin: str) -> list[Rule]:
    """Rules from the decoded document of a rules file (``{"rules": {category: [regex]}}``)."""
    if not isinstance(data, dict) or set(data) != {"rules"} or not isinstance(data["rules"],
                                                                              dict):
        raise RulesError(f"{origin}: expected exactly one table, [rules]")
    rules: list[Rule] = []
    for category, patterns in data["rules"].items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise RulesError(f"{origin}: rules.{category} must be a list of strings")
        for index, pattern in enumerate(patterns):
            rules.append(compile_rule(category, pattern, f"{origin}: rules.{category}[{index}]"))
    return rules


def load_rules_file(path: str | Path, origin: str = "") -> list[Rule]:
    """Load a ``.toml`` or ``.json`` rules file (JSON when the name ends in ``.json``);
    ``origin`` names it in rule sources and errors (default: the path)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RulesError(f"{path}: {exc}") from exc
    return parse_rules(data, origin or str(path))


def rule_files(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The layered file list: operator files first (``bounce.rules_files``), then built-ins."""
    return [*(Path(p) for p in extra), *(BUILTIN_DIR / name for name in BUILTIN_FILES)]


def load_ruleset(extra: Iterable[str | Path] = ()) -> RuleSet:
    """Compile the operator's files (consulted first) and the built-in files into one set."""
    rules: list[Rule] = []
    for path in rule_files(extra):
        builtin = path.parent == BUILTIN_DIR
        rules.extend(load_rules_file(path, path.name if builtin else ""))
    return RuleSet(rules)


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    # Strings one of which every match starts with (None: no constraint).
    prefixes: frozenset[str] | None
    # A substring every match contains ("" = none known); compare lower-cased when ``fold``.
    literal: str
    fold: bool
    # Token keys one of which every match of an ASCII line satisfies (None: no keys known):
    # ("w", token) exact word, ("p", first 3 chars of a word), ("s", last 3 chars of a word).
    keys: frozenset[tuple[str, str]] | None
    # False when the rule needs characters no ASCII line contains.
    ascii_ok: bool
    # Case-sensitive twins of a case-insensitive rule for the lower-cased text of an ASCII
    # line, each with a word it needs (see ``_folded_twins``); None when no safe twin exists.
    twins: tuple[tuple[str, re.Pattern[str]], ...] | None = None


# (literal, fold, regex, twins for the lower-cased line or None, rule)
_Entry = tuple[str, bool, re.Pattern[str], "tuple[tuple[str, re.Pattern[str]], ...] | None",
               Rule]


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The rules that may match lines starting with one 3-character key. Rule sets are
    bit masks (bit i = rule i), so merging candidates and walking them in rule order is a
    few integer operations."""

    always: int
    words: dict[str, int]
    starts: dict[str, int]
    ends: dict[str, int]
    # Every member in order, for lines the token index does not cover (non-ASCII).
    members: tuple[int, ...]
    # token -> rules it selects (exact word, first or last three characters), filled lazily.
    tokens: dict[str, int] = field(default_factory=dict)

    def token_mask(self, token: str) -> int:
        mask = (self.words.get(token, 0) | self.starts.get(token[:3], 0)
                | self.ends.get(token[-3:], 0))
        self.tokens[token] = mask
        return mask


_WORD = re.compile(r"\w+")
# Lower-cases ASCII letters and turns every non-word byte into a space: tokenising an ASCII
# line is then one translate and one split.
_TOKEN_TABLE = bytes(
    (c if chr(c).isalnum() or c == 0x5F else 0x20) if c < 0x80 else 0x20 for c in range(256)
).lower()


class RuleSet:
    """An ordered list of rules compiled for fast first-match classification.

    For ASCII lines (nearly all SMTP replies) the candidates come from a token index: each rule
    is filed under a word (or the first or last three characters of a word) every match must
    contain, so a reply is checked only against the rules whose key occurs in it, in rule
    order. Other lines are checked against every rule whose prefix fits.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._compiled = [_analyse(rule) for rule in self.rules]
        self._entries: tuple[_Entry, ...] = tuple(
            (c.literal, c.fold, c.rule.regex, c.twins, c.rule) for c in self._compiled)
        self._buckets: dict[str, _Bucket] = {}
        self._cached_tokens = 0

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, line: str) -> Rule | None:
        """The first rule (in layer and file order) whose regex matches ``line``."""
        key = line[:_PREFIX_LEN]
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._bucket(key)
        entries = self._entries
        if not line.isascii():
            for index in bucket.members:
                literal, fold, regex, _twin, rule = entries[index]
                if literal and not fold and literal not in line:
                    continue
                if regex.search(line) is not None:
                    return rule
            return None
        folded = line.lower()
        tokens = set(line.encode("ascii").translate(_TOKEN_TABLE).decode("ascii").split())
        found = bucket.always
        cached = bucket.tokens
        for token in tokens:
            mask = cached.get(token)
            if mask is None:
                mask = bucket.token_mask(token)
                self._cached_tokens += 1
                if self._cached_tokens > _MAX_TOKENS:
                    self._forget_tokens()
            found |= mask
        while found:
            lowest = found & -found
            found ^= lowest
            literal, fold, regex, twins, rule = entries[lowest.bit_length() - 1]
            if fold:
                if literal and literal not in folded:
                    continue
                if twins is not None:
                    for word, twin in twins:
                        if word in folded and twin.search(folded) is not None:
                            return rule
                    continue
            elif literal and literal not in line:
                continue
            if regex.search(line) is not None:
                return rule
        return None

    def classify(self, line: str) -> str:
        """Category of the first matching rule, ``Uncategorized`` when none matches."""
        rule = self.match(line)
        return rule.category if rule is not None else Category.Uncategorized.value

    def _forget_tokens(self) -> None:
        for bucket in self._buckets.values():
            bucket.tokens.clear()
        self._cached_tokens = 0

    def _bucket(self, key: str) -> _Bucket:
        members = [i for i, c in enumerate(self._compiled)
                   if c.prefixes is None or any(key.startswith(p) for p in c.prefixes)]
        always = 0
        index: dict[str, dict[str, int]] = {"w": {}, "p": {}, "s": {}}
        for i in members:
            c = self._compiled[i]
            if not c.ascii_ok:
                continue
            if c.keys is None:
                always |= 1 << i
                continue
            for kind, word in c.keys:
                index[kind][word] = index[kind].get(word, 0) | 1 << i
        bucket = _Bucket(always, index["w"], index["p"], index["s"], tuple(members))
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()
            self._cached_tokens = 0
        self._buckets[key] = bucket
        return bucket


# Characters that case-insensitively match an ASCII letter although they are not ASCII.
_ASCII_FOLDING = frozenset("\u017f\u212a\u0130\u0131")
# Words so common in replies that they narrow nothing down (exact-word keys on them rank last).
_COMMON_TEXT = (
    "a an and are as at be been by for from has have in is it not no of on or our the this "
    "to was we with you your mail smtp e email message messages user users mailbox address "
    "recipient recipients rejected unknown account domain server host delivery deliver "
    "sender error failed failure please see more information requested action denied "
    "access com net org www http https 550 554 553 552 551 450 451 452 421 5 4 0 1 2 3 7")
_COMMON_WORDS = frozenset(_COMMON_TEXT.split())
# Word starts and ends as common as the common words themselves.
_COMMON_HEADS = frozenset(w[:3] for w in _COMMON_WORDS if len(w) >= 3)
_COMMON_TAILS = frozenset(w[-3:] for w in _COMMON_WORDS if len(w) >= 3)

def _analyse(rule: Rule) -> _Compiled:
    """Find the constraints of a rule (conservatively: when in doubt, no constraint)."""
    try:
        tree = sre_parse.parse(rule.regex.pattern, rule.regex.flags)
    except Exception:  # the private parser may change; the rule still works without hints
        return _Compiled(rule, None, "", False, None, True)
    flags = tree.state.flags
    fold = bool(flags & re.IGNORECASE)
    items = list(tree)
    prefixes: frozenset[str] | None = None
    if (items and not flags & re.MULTILINE and items[0][0] is sre_c.AT
            and items[0][1] in (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING)):
        found, _ = _seq_prefixes(items[1:], fold)
        if found is not None and found != {""}:
            prefixes = frozenset(found)
    runs = _literal_runs(items)
    ascii_ok = all(_ascii_possible(run, fold) for run in runs)
    literal = max((r for r in runs if r.isascii()), key=len, default="")
    if fold:
        literal = literal.lower()
    keys: frozenset[tuple[str, str]] | None = None
    if ascii_ok and not flags & re.VERBOSE:
        best = _seq_keys(items, False, False, fold)
        if best is _IMPOSSIBLE:
            ascii_ok = False
        elif best is not None:
            keys = frozenset(best[1])
    return _Compiled(rule, prefixes, literal, fold, keys, ascii_ok, _folded_twins(rule.regex))


def _folded_twins(regex: re.Pattern[str]) -> tuple[tuple[str, re.Pattern[str]], ...] | None:
    """For ``(?i)P`` with nothing upper-case in P and no other inline flags: case-sensitive
    patterns that, on the lower-cased text of an ASCII line, match somewhere exactly when the
    original matches the line. Each comes with a word that must occur for it to match.

    ``re`` cannot search fast for a pattern starting with ``\\b``; ``\\bword`` is rewritten
    ``word(?<=\\bword)`` (same matches, literal first) and a leading ``\\b(?:w1|w2)`` becomes
    one pattern per word."""
    pattern = regex.pattern
    if not pattern.startswith("(?i)") or regex.flags & ~(re.IGNORECASE | re.UNICODE):
        return None
    body = pattern[4:]
    try:
        tree = sre_parse.parse(body)
    except Exception:
        return None
    if tree.state.flags & ~re.UNICODE or not _lowercase_only(list(tree)):
        return None
    variants = [("", body)]
    if body.startswith("\\b"):
        rest = body[2:]
        words_rest = _leading_words(rest)
        if words_rest is not None:
            words, after = words_rest
            variants = [(w, f"{w}(?<=\\b{w}){after}") for w in words]
    try:
        return tuple((word, re.compile(text)) for word, text in variants)
    except re.error:
        return None


_PLAIN_WORD = re.compile(r"[a-z0-9_][a-z0-9_ -]*")
_QUANTIFIERS = "?*+{"


def _leading_words(text: str) -> tuple[list[str], str] | None:
    """``"(?:a|b c)rest"`` → (["a", "b c"], "rest"); ``"word rest"`` → (["word"], " rest");
    None when the pattern does not start with plain words."""
    if text.startswith("(?:"):
        close = text.find(")")
        if close < 0 or "(" in text[3:close] or text[close + 1:close + 2] in tuple(_QUANTIFIERS):
            return None
        words = text[3:close].split("|")
        if not all(_PLAIN_WORD.fullmatch(w) for w in words):
            return None
        return words, text[close + 1:]
    match = re.match(r"[a-z0-9_]+", text)
    if not match:
        return None
    word = match.group()
    if text[len(word):len(word) + 1] in tuple(_QUANTIFIERS):
        word = word[:-1]
    if not word:
        return None
    return [word], text[len(word):]


def _lowercase_only(items: list[tuple[Any, Any]]) -> bool:
    for op, av in items:
        if op in (sre_c.LITERAL, sre_c.NOT_LITERAL):
            if chr(av) != chr(av).lower() or not chr(av).isascii():
                return False
        elif op is sre_c.RANGE:
            low, high = chr(av[0]), chr(av[1])
            if not (low.isascii() and high.isascii()) or any(
                    chr(c).isupper() for c in range(av[0], av[1] + 1)):
                return False
        elif op is sre_c.IN:
            if not _lowercase_only(list(av)):
                return False
        elif op is sre_c.SUBPATTERN:
            if av[1] or av[2] or not _lowercase_only(list(av[3])):
                return False
        elif op is sre_c.BRANCH:
            if not all(_lowercase_only(list(alt)) for alt in av[1]):
                return False
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            if not _lowercase_only(list(av[2])):
                return False
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            if not _lowercase_only(list(av[1])):
                return False
        elif op in (sre_c.GROUPREF, sre_c.GROUPREF_EXISTS, sre_c.ATOMIC_GROUP):
            return False
    return True


def _ascii_possible(text: str, fold: bool) -> bool:
    if fold:
        return all(ch.isascii() or ch in _ASCII_FOLDING for ch in text)
    return text.isascii()


def _literal_runs(items: list[tuple[Any, Any]]) -> list[str]:
    runs, run = [], []
    for op, av in [*items, (None, None)]:
        if op is sre_c.LITERAL:
            run.append(chr(av))
        elif run:
            runs.append("".join(run))
            run = []
    return runs


_KeySet = tuple[float, set[tuple[str, str]]]
_BOUNDARY_AT = (sre_c.AT_BOUNDARY, sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING,
                sre_c.AT_END, sre_c.AT_END_STRING)
_NONWORD_CATEGORIES = (sre_c.CATEGORY_SPACE, sre_c.CATEGORY_NOT_WORD)


def _nonword_item(op: Any, av: Any) -> bool:
    """True when the item always matches a word boundary next to a word character."""
    if op is sre_c.LITERAL:
        return not chr(av).isalnum() and chr(av) != "_"
    if op is sre_c.AT:
        return av in _BOUNDARY_AT
    if op is sre_c.IN:
        return all(
            (o is sre_c.LITERAL and not chr(a).isalnum() and chr(a) != "_")
            or (o is sre_c.CATEGORY and a in _NONWORD_CATEGORIES)
            for o, a in av)
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        sub_items = list(sub)
        return low >= 1 and len(sub_items) == 1 and _nonword_item(*sub_items[0])
    return False


def _seq_keys(items: list[tuple[Any, Any]], left: bool, right: bool,
              fold: bool) -> _KeySet | None:
    """The most selective set of token keys one of which every match of ``items`` in an ASCII
    line yields, ``_IMPOSSIBLE`` when no ASCII line can match; ``left``/``right`` tell whether
    the sequence is bounded by non-word context."""
    best: _KeySet | None = None
    count = len(items)

    def before(j: int) -> bool:
        return left if j == 0 else _nonword_item(*items[j - 1])

    def after(j: int) -> bool:
        return right if j == count - 1 else _nonword_item(*items[j + 1])

    j = 0
    while j < count:
        op, av = items[j]
        found: _KeySet | None = None
        if op is sre_c.LITERAL:
            end = j
            while end < count and items[end][0] is sre_c.LITERAL:
                end += 1
            text = "".join(chr(items[x][1]) for x in range(j, end))
            if not _ascii_possible(text, fold):
                return _IMPOSSIBLE
            found = _text_keys(text.lower(), before(j), after(end - 1))
            best = _better(best, found)
            j = end
            continue
        if op is sre_c.SUBPATTERN:
            found = _seq_keys(list(av[3]), before(j), after(j), fold)
        elif op is sre_c.BRANCH:
            union: set[tuple[str, str]] = set()
            score = float("inf")
            possible = False
            for alt in av[1]:
                alt_keys = _seq_keys(list(alt), before(j), after(j), fold)
                if alt_keys is _IMPOSSIBLE:
                    continue
                possible = True
                if alt_keys is None:
                    union = set()
                    break
                score = min(score, alt_keys[0])
                union |= alt_keys[1]
            if not possible:
                return _IMPOSSIBLE
            found = (score - 0.01 * len(union), union) if union else None
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT) and av[0] >= 1:
            found = _seq_keys(list(av[2]), before(j), av[1] == 1 and after(j), fold)
        if found is _IMPOSSIBLE:
            return _IMPOSSIBLE
        best = _better(best, found)
        j += 1
    return best


_IMPOSSIBLE: _KeySet = (float("inf"), set())


def _text_keys(text: str, left: bool, right: bool) -> _KeySet | None:
    best: _KeySet | None = None
    for match in _WORD.finditer(text):
        word = match.group()
        if not word.isascii():
            continue
        bounded_left = match.start() > 0 or left
        bounded_right = match.end() < len(text) or right
        if bounded_left and bounded_right:
            score = 1.0 if word in _COMMON_WORDS else 4.0 + len(word)
            found: _KeySet | None = (score, {("w", word)})
        elif bounded_left and len(word) >= 3:
            score = 0.5 if word[:3] in _COMMON_HEADS else 3.5 + min(len(word), 8) / 10
            found = (score, {("p", word[:3])})
        elif bounded_right and len(word) >= 3:
            score = 0.5 if word[-3:] in _COMMON_TAILS else 3.0 + min(len(word), 8) / 10
            found = (score, {("s", word[-3:])})
        else:
            found = None
        best = _better(best, found)
    return best


def _better(a: _KeySet | None, b: _KeySet | None) -> _KeySet | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b[0] > a[0] else a


def _seq_prefixes(items: list[tuple[Any, Any]], fold: bool) -> tuple[set[str] | None, bool]:
    """Possible starts (up to ``_PREFIX_LEN`` chars) of what ``items`` match, and whether
    the set is the complete set of matches (so a following item may extend it)."""
    found = {""}
    for op, av in items:
        if all(len(s) >= _PREFIX_LEN for s in found):
            return found, False
        ext, complete = _item_prefixes(op, av, fold)
        if ext is None:
            return found, False
        grown = {(s + e)[:_PREFIX_LEN] if len(s) < _PREFIX_LEN else s
                 for s in found for e in ext}
        if len(grown) > _MAX_PREFIXES:
            return found, False
        found = grown
        if not complete:
            return found, False
    return found, True


def _item_prefixes(op: Any, av: Any, fold: bool) -> tuple[set[str] | None, bool]:
    if op is sre_c.LITERAL:
        ch = chr(av)
        return ({ch.lower(), ch.upper()} if fold else {ch}), True
    if op is sre_c.IN:
        chars = _class_chars(av, fold)
        return (chars, True) if chars is not None else (None, False)
    if op is sre_c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        sub_fold = (fold or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
        return _seq_prefixes(list(sub), sub_fold)
    if op is sre_c.BRANCH:
        union: set[str] = set()
        all_complete = True
        for alt in av[1]:
            found, complete = _seq_prefixes(list(alt), fold)
            if found is None:
                return None, False
            union |= found
            all_complete = all_complete and complete
        return union, all_complete
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, high, sub = av
        once, complete = _seq_prefixes(list(sub), fold)
        if once is None or not complete or low > _PREFIX_LEN:
            return None, False
        counts = range(low, high + 1) if high <= _PREFIX_LEN else range(low, low + 1)
        out: set[str] = set()
        for count in counts:
            strings = {""}
            for _ in range(count):
                strings = {(s + e)[:_PREFIX_LEN] for s in strings for e in once}
            out |= strings
        return out, high <= _PREFIX_LEN
    return None, False


def _class_chars(items: list[tuple[Any, Any]], fold: bool) -> set[str] | None:
    chars: set[str] = set()
    for op, av in items:
        if op is sre_c.LITERAL:
            chars.add(chr(av))
        elif op is sre_c.RANGE:
            low, high = av
            if high - low > 64:
                return None
            chars.update(chr(c) for c in range(low, high + 1))
        elif op is sre_c.CATEGORY and av is sre_c.CATEGORY_DIGIT:
            # Non-ASCII digits also match \d; lines starting with them skip the buckets.
            chars.update("0123456789")
        else:
            return None
    if fold:
        chars |= {c.lower() for c in chars} | {c.upper() for c in chars}
    return chars
