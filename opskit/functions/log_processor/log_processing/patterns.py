r"""Which log lines are errors and which are critical, at close to the cost of reading them.

Searching every pattern in every line costs microseconds a line: a 10,000-line batch
would spend far longer matching than decoding. Instead, the lines are joined into one
text (separated by DEL, a character log lines do not contain; checked) and lower-cased,
and a few *scanners* run over it at C speed: case-sensitive regular expressions that each
start with a literal, so ``re`` skips from one occurrence of that literal to the next
instead of trying every position. The line of a hit is the text after the previous
separator, found with ``rfind``; nothing runs per line in Python.

Every scanner finds every line its patterns could match in. Lines a scanner marks
*exact* for a pattern match it; the others are checked with ``pattern.search(line)``
(or ``pattern.match`` where the pattern's first literal occurs). So the result is always
that of searching every pattern case-insensitively in every line, only sooner.

The default patterns carry hand-written scanners, exact on ASCII text (tests compare
them with plain per-line searching). Any other pattern is reduced to literal *needles*
that every match must contain (``\bdatabase\b.*?\bfailed\b`` cannot match without
``failed``), read from the parse tree of Python's own regular expression compiler; a
pattern without one (``\d{3}``) is checked in every line.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate, repeat
from typing import Any

FLAGS = re.IGNORECASE


@dataclass(frozen=True)
class Pattern:
    """A regular expression searched case-insensitively in each line."""

    source: str
    scanners: tuple[str, ...] = ()
    """Case-sensitive expressions over the lower-cased lines, joined by SEPARATOR, that
    together find every line `source` matches in. Default: needles read from `source`."""
    exact: bool = False
    """On ASCII text, the scanners find exactly the lines `source` matches in."""


SEPARATOR = "\x7f"
"""Joins the lines of a batch: an ASCII control character (so an ASCII batch stays ASCII)
that is not a word character, not white space, and not in log lines (checked per batch)."""
_IN_LINE = r"[^\n\x7f]"
"""What ``.`` matches within one line of the joined text."""


def _word(literal: str) -> str:
    """``literal`` where a word starts: the scanner keeps its literal prefix, which a
    leading ``\\b`` would take away (``re`` then tries every position)."""
    return rf"{re.escape(literal)}(?<!\w{re.escape(literal)})"


_HTTP_STATUS_BEFORE = (
    r"(?:\bhttp(?:/\d(?:\.\d)?)?[\"']?:?[ \t]+"
    r"|\b(?:http[_ ]?)?status(?:[_ ]?code)?[\"']?[ \t]*[:=]?[ \t]*[\"']?)"
)
"""What makes a number an HTTP status: ``HTTP 503``, ``HTTP/1.1 503``, an access log's
``HTTP/1.1" 503``, ``status 503``, ``status=503``, ``"status": 503``, ``statusCode=503``,
``status_code: "503"``, ``http_status=503``, ``Status Code: 503``."""
_WHOLE_NUMBER = r"\b(?!\.\d)"
"""And it is a whole number: not ``5031``, ``503ms`` or ``503.2``."""
_HTTP_5XX_SCANNERS = (
    _word("http") + r"(?:/\d(?:\.\d)?)?+[\"']?+:?+[ \t]++5\d\d" + _WHOLE_NUMBER,
    r"status(?=(?:[_ ]?code)?+[\"']?+[ \t]*+[:=]?+[ \t]*+[\"']?+5\d\d" + _WHOLE_NUMBER + ")"
    r"(?:(?<!\wstatus)|(?<=\bhttpstatus)|(?<=\bhttp[_ ]status))",
)
"""Possessive (``?+``, ``*+``): each part takes different characters, so backtracking
could never help; the number is checked first, so ``status=200`` (common) is rejected
at its first digit."""
_FAILED = _word("failed") + r"\b"

DEFAULT_ERROR_PATTERNS: tuple[Pattern, ...] = (
    Pattern(r"\berror\b", (_word("error") + r"\b",), exact=True),
    Pattern(r"\bfailed\b", (_FAILED,), exact=True),
    Pattern(r"\bexception\b", (_word("exception") + r"\b",), exact=True),
    Pattern(_HTTP_STATUS_BEFORE + r"5\d\d" + _WHOLE_NUMBER, _HTTP_5XX_SCANNERS, exact=True),
    Pattern(r"\b(?:timeout|timed out)\b", (_word("time") + r"(?:out|d out)\b",), exact=True),
    Pattern(r"\bconnection\b.*?\bfailed\b", (_FAILED,)),
)
DEFAULT_CRITICAL_PATTERNS: tuple[Pattern, ...] = (
    Pattern(r"\bdatabase\b.*?\bconnection\b.*?\bfailed\b", (_FAILED,)),
    Pattern(r"\bout of memory\b", (_word("out of memory") + r"\b",), exact=True),
    Pattern(r"\bdisk\b.*?\bfull\b", (_word("disk") + rf"\b{_IN_LINE}*?\bfull\b",), exact=True),
    Pattern(
        r"\bsecurity\b.*?\bviolation\b",
        (_word("security") + rf"\b{_IN_LINE}*?\bviolation\b",),
        exact=True,
    ),
    Pattern(_HTTP_STATUS_BEFORE + r"50[0-5]" + _WHOLE_NUMBER, _HTTP_5XX_SCANNERS),
    Pattern(r"\bfatal\b", (_word("fatal") + r"\b",), exact=True),
)

_FOLDS = (("\u0131", "i"), ("\u017f", "s"))
"""Non-ASCII letters that ``re.IGNORECASE`` matches to an ASCII one but ``str.lower``
leaves alone (U+0131 dotless i, U+017F long s); U+0130 (capital I with dot) is replaced
before lower-casing, and the Kelvin sign lowers to k by itself."""


class PatternError(ValueError):
    """A pattern list is not a JSON list of valid regular expressions."""


@dataclass(frozen=True)
class Verdict:
    """The error lines (critical ones included) and the critical lines of a batch.

    Counts and critical messages are what a delivery needs, and cost nothing more; line
    numbers are worked out only when asked for (counting separators is a pass of its own).
    """

    lines: Sequence[str]
    errors: list[int]
    critical: list[int]
    joined: str | None = None
    """``SEPARATOR.join(lines)`` when `errors` and `critical` are line keys (the position
    of the separator before each line, -1 for the first); None when they are indexes."""

    @property
    def error_count(self) -> int:
        return len(self.errors)

    @property
    def critical_count(self) -> int:
        return len(self.critical)

    @cached_property
    def error_lines(self) -> list[int]:
        return self._indexes(self.errors)

    @cached_property
    def critical_lines(self) -> list[int]:
        return self._indexes(self.critical)

    def critical_messages(self) -> list[str]:
        """The critical lines' text, in order."""
        joined = self.joined
        if joined is None:
            return [self.lines[index] for index in self.critical]
        ends = map(joined.find, repeat(SEPARATOR), [key + 1 for key in self.critical])
        return [
            joined[key + 1 : end if end >= 0 else len(joined)]
            for key, end in zip(self.critical, ends, strict=True)
        ]

    def _indexes(self, keys: list[int]) -> list[int]:
        """Line numbers of sorted line keys: the separators before each line, counted from
        one line to the next."""
        joined = self.joined
        if joined is None or not keys:
            return list(keys)
        starts = [key + 1 for key in keys]
        gaps = map(joined.count, repeat(SEPARATOR), starts, starts[1:])
        return list(accumulate(gaps, initial=joined.count(SEPARATOR, 0, starts[0])))


def parse_pattern_list(raw: str, *, name: str) -> tuple[Pattern, ...]:
    """A JSON list of regular expressions, each checked to compile, or PatternError."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise PatternError(f"{name} must be a JSON list of regular expressions") from None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PatternError(f"{name} must be a JSON list of non-empty strings")
    for index, source in enumerate(value):
        try:
            re.compile(source, FLAGS)
        except re.error as error:
            raise PatternError(f"{name}[{index}] {source[:80]!r} is not valid: {error}") from None
    return tuple(Pattern(source) for source in value)


@dataclass(frozen=True)
class _Compiled:
    regex: re.Pattern[str]
    starts: tuple[str, ...]
    """Lower-case literals every match begins with (empty if unknown): the line is then
    checked with ``match`` where one of them occurs instead of ``search`` everywhere."""

    def in_line(self, joined: str, folded: str, start: int, end: int) -> bool:
        """Whether the line at ``joined[start:end]`` matches (``folded``: lower-cased)."""
        if not self.starts:
            return self.regex.search(joined[start:end]) is not None
        match, find = self.regex.match, folded.find
        line = None
        for literal in self.starts:
            position = find(literal, start, end)
            while position >= 0:
                line = joined[start:end] if line is None else line
                if match(line, position - start):
                    return True
                position = find(literal, position + 1, end)
        return False


@dataclass(frozen=True)
class _Scanner:
    regex: re.Pattern[str]
    exact: int
    """Bit mask of the patterns that match every line this scanner finds (ASCII text)."""
    candidate: int
    """Bit mask of the patterns to check in the lines this scanner finds."""

    def lines(self, text: str) -> set[int]:
        """Where the lines start in which this scanner finds something, as the position of
        the separator before them (-1 for the first line), all in C-level loops."""
        starts = map(re.Match.start, self.regex.finditer(text))
        return set(map(text.rfind, repeat(SEPARATOR), repeat(0), starts))


class Classifier:
    """Sorts lines into errors and critical errors (a critical line is also an error).

    Build it once per sandbox; `classify` is the hot path.
    """

    def __init__(
        self, error_patterns: Sequence[Pattern], critical_patterns: Sequence[Pattern]
    ) -> None:
        self.error_patterns = tuple(error_patterns)
        self.critical_patterns = tuple(critical_patterns)
        patterns = [*self.critical_patterns, *self.error_patterns]
        self._critical = range(len(self.critical_patterns))
        self._errors = range(len(self.critical_patterns), len(patterns))
        trees = [_parse(pattern.source) for pattern in patterns]
        self._compiled = [
            _Compiled(re.compile(pattern.source, FLAGS), tuple(sorted(_start_literals(tree))))
            for pattern, tree in zip(patterns, trees, strict=True)
        ]
        masks: dict[str, list[int]] = {}
        for index, pattern in enumerate(patterns):
            for scanner in pattern.scanners:
                masks.setdefault(scanner, [0, 0])[0 if pattern.exact else 1] |= 1 << index
        unhinted = [index for index, pattern in enumerate(patterns) if not pattern.scanners]
        needles, covers = _choose_needles([_cover_options(trees[i]) for i in unhinted])
        for needle in needles:
            mask = sum(
                1 << i
                for i, cover in zip(unhinted, covers, strict=True)
                if cover is not None and any(needle in n for n in cover)
            )
            masks.setdefault(re.escape(needle), [0, 0])[1] |= mask
        self._scanners = [
            _Scanner(re.compile(source), exact, candidate)
            for source, (exact, candidate) in masks.items()
        ]
        self._everywhere = [i for i, cover in zip(unhinted, covers, strict=True) if cover is None]

    @property
    def scanner_count(self) -> int:
        """Passes over the text per batch (fewer is faster)."""
        return len(self._scanners)

    def classify(self, lines: Sequence[str], *, joined: str | None = None) -> Verdict:
        """The error and critical lines among `lines` (`joined`: ``SEPARATOR.join(lines)``).

        A line that holds the separator itself turns the shortcut off for the batch."""
        if not lines:
            return Verdict(lines, [], [])
        if joined is None:
            joined = SEPARATOR.join(lines)
        if SEPARATOR in "".join(lines):  # C-level: a join and a memchr
            return self._searched(lines)
        folded = _folded(joined)
        if len(folded) != len(joined):  # folding must keep positions; never trust it blindly
            return self._searched(lines)
        known: list[set[int]] = [set() for _ in self._compiled]
        maybe: list[set[int]] = [set() for _ in self._compiled]
        exact_allowed = joined.isascii()
        for scanner in self._scanners:
            found = scanner.lines(folded)
            exact, candidate = scanner.exact, scanner.candidate
            if not exact_allowed:
                exact, candidate = 0, exact | candidate
            for index in range(len(self._compiled)):
                if exact >> index & 1:
                    known[index] |= found
                elif candidate >> index & 1:
                    maybe[index] |= found
        if self._everywhere:
            keys = [-1, *(m.start() for m in re.finditer(SEPARATOR, joined))]
            for index in self._everywhere:
                maybe[index].update(keys)

        def confirm(found: set[int], indexes: range) -> None:
            for index in indexes:
                pattern = self._compiled[index]
                for key in maybe[index] - found:
                    start = key + 1
                    end = joined.find(SEPARATOR, start)
                    if pattern.in_line(joined, folded, start, len(joined) if end < 0 else end):
                        found.add(key)

        critical: set[int] = set().union(*(known[i] for i in self._critical))
        confirm(critical, self._critical)
        errors = critical.union(*(known[i] for i in self._errors))
        confirm(errors, self._errors)
        return Verdict(lines, sorted(errors), sorted(critical), joined)

    def _searched(self, lines: Sequence[str]) -> Verdict:
        """Every pattern searched in every line: the definition, without the shortcut."""
        critical = [self._compiled[i].regex for i in self._critical]
        errors = [self._compiled[i].regex for i in self._errors]
        is_critical = [any(r.search(line) for r in critical) for line in lines]
        return Verdict(
            lines,
            [
                i
                for i, line in enumerate(lines)
                if is_critical[i] or any(r.search(line) for r in errors)
            ],
            [i for i, flag in enumerate(is_critical) if flag],
        )


def _folded(text: str) -> str:
    """``text`` lower-cased so that a lower-case ASCII literal is found wherever a
    case-insensitive pattern could match it, position for position (separators stay)."""
    if text.isascii():
        return text.lower()
    if "\u0130" in text:  # İ: the one character whose lower case is two characters
        text = text.replace("\u0130", "i")
    text = text.lower()
    for special, ascii_letter in _FOLDS:
        if special in text:
            text = text.replace(special, ascii_letter)
    return text


# --- reading needles and first literals out of a pattern ---------------------------------
#
# A *cover* of a pattern is a set of lower-case ASCII strings one of which every match
# contains. A pattern usually has several (one per literal it cannot match without);
# `_choose_needles` picks, for all patterns together, few and long ones. These read the
# parse tree of Python's own compiler (re._parser); should its shape ever change, the
# pattern gets no needles and is checked in every line: slower, never wrong.

Cover = frozenset[str]
Tree = list[tuple[Any, Any]]


def _parse(source: str) -> Tree | None:
    try:
        return list(importlib.import_module("re._parser").parse(source, FLAGS).data)
    except Exception:
        return None


def _constants() -> Any:
    return importlib.import_module("re._constants")


def _cover_options(tree: Tree | None) -> list[Cover]:
    if tree is None:
        return []
    try:
        options = _sequence_options(tree, _constants())
    except Exception:
        return []
    starts = _start_literals(tree)
    return [*options, starts] if starts else options


def _start_literals(tree: Tree | None) -> Cover:
    """Literals one of which every match starts with; empty when there is no such set."""
    if tree is None:
        return frozenset()
    try:
        return _starts(tree, _constants()) or frozenset()
    except Exception:
        return frozenset()


def _starts(items: Tree, c: Any) -> Cover | None:
    for index, (op, av) in enumerate(items):
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue
        rest = items[index + 1 :]
        if op is c.LITERAL:
            run = _leading_run(items[index:], c)
            return frozenset([run]) if run else None
        if op is c.BRANCH:
            found: set[str] = set()
            for alternative in av[1]:
                starts = _starts(list(alternative.data) + rest, c)
                if not starts:
                    return None
                found |= starts
            return frozenset(found)
        if op is c.SUBPATTERN:
            return _starts(list(av[-1].data) + rest, c)
        if op is c.ATOMIC_GROUP:
            return _starts(list(av.data) + rest, c)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            first = _starts(list(av[2].data), c)
            if av[0] >= 1 or not first:
                return first
            after = _starts(rest, c)
            return first | after if after else None
        return None
    return None


def _sequence_options(items: Tree, c: Any) -> list[Cover]:
    options: list[Cover] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            options.append(frozenset(["".join(run)]))
            run.clear()

    for op, av in items:
        if op is c.LITERAL:
            if chr(av).isascii():
                run.append(chr(av).lower())
            else:
                close_run()
            continue
        if op is c.BRANCH:
            alternatives = [list(alternative.data) for alternative in av[1]]
            if run:
                options.append(_prefixed_branch("".join(run), alternatives, c))
            close_run()
            options.append(_branch_cover(alternatives, c))
            continue
        close_run()
        if op is c.SUBPATTERN:
            options.extend(_sequence_options(list(av[-1].data), c))
        elif op is c.ATOMIC_GROUP:
            options.extend(_sequence_options(list(av.data), c))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            options.extend(_sequence_options(list(av[2].data), c))
    close_run()
    return [option for option in options if option]


def _leading_run(items: Tree, c: Any) -> str:
    run = []
    for op, av in items:
        if op is not c.LITERAL or not chr(av).isascii():
            break
        run.append(chr(av).lower())
    return "".join(run)


def _prefixed_branch(prefix: str, alternatives: list[Tree], c: Any) -> Cover:
    """``time(?:out|d out)`` is covered by ``timeout`` and ``timed out``, not just ``time``."""
    runs = [_leading_run(alternative, c) for alternative in alternatives]
    return frozenset(prefix + run for run in runs) if all(runs) else frozenset()


def _branch_cover(alternatives: list[Tree], c: Any) -> Cover:
    """The best cover of each alternative together; empty if one has none."""
    needles: set[str] = set()
    for alternative in alternatives:
        options = _sequence_options(alternative, c)
        if not options:
            return frozenset()
        best: Cover = max(options, key=_selectivity)
        needles |= best
    return frozenset(needles)


def _selectivity(option: Cover) -> tuple[int, int]:
    """Longer needles are rarer and skip faster; fewer needles mean fewer passes."""
    return min(map(len, option)), -len(option)


_LONG_ENOUGH = 6
"""Needles this long are rare enough in log text; below it, length matters most."""


def _related(a: str, b: str) -> bool:
    return a in b or b in a


def _choose_needles(options: list[list[Cover]]) -> tuple[list[str], list[Cover | None]]:
    """Needles for all patterns at once, each a pass over the text: a pattern takes a
    cover that shares needles with the others' (``failed`` serves ``\\bfailed\\b`` and
    ``connection.*failed``) before a longer one of its own. None: no cover at all."""
    chosen: set[str] = set()
    picked: list[Cover | None] = [None] * len(options)
    for index in sorted(range(len(options)), key=lambda i: len(options[i])):
        if options[index]:
            best = max(options[index], key=lambda option: _rank(option, chosen))
            picked[index] = best
            chosen |= best
    needles = sorted(n for n in chosen if not any(m != n and m in n for m in chosen))
    return needles, picked


def _rank(option: Cover, chosen: set[str]) -> tuple[int, int, int, int]:
    shortest, fewer = _selectivity(option)
    new = sum(1 for n in option if not any(_related(n, m) for m in chosen))
    return (min(shortest, _LONG_ENOUGH), -new, shortest, fewer)
