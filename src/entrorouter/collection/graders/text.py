"""Graders that read the answer text: exact match, numeric, multiple choice, token F1.

The extraction functions are public and pure, so they can be tested and reused alone.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from entrorouter.collection.graders.base import InvalidQuery, TextGrader

if TYPE_CHECKING:
    from entrorouter.collection.queries import Query

# ------------------------------------------------------------------ normalisation
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD-style: Unicode NFKC, lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCTUATION or unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


@dataclass(frozen=True)
class ExactMatch(TextGrader):
    """1 when the normalised answer equals a normalised reference."""

    name: ClassVar[str] = "exact"

    def score(self, answer: str, query: Query) -> float:
        mine = normalize_text(answer)
        return float(any(mine == normalize_text(ref) for ref in query.references))


# ------------------------------------------------------------------ token F1
def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two texts after :func:`normalize_text`."""
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class TokenF1(TextGrader):
    """Token-overlap F1 with the best-matching reference (short-answer QA)."""

    name: ClassVar[str] = "f1"

    def score(self, answer: str, query: Query) -> float:
        return max(token_f1(answer, ref) for ref in query.references)


# ------------------------------------------------------------------ numbers
# A number as models write it: optional sign (not after a word or digit, so "5-3" is 5 and 3),
# optional $, thousands separators only in groups of three, decimals, exponent, or a fraction.
_NUMBER = re.compile(
    r"(?:(?<![\w)])(?P<sign>[-−]))?\$?"
    r"(?<![\d.])(?P<value>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE](?P<exp>[-+]?\d+))?"
    r"(?:\s*/\s*(?P<den>\d+)(?![\d.]))?"
)
# Where a final answer is announced, strongest first; the number must follow within the line.
_ANSWER_MARKERS = (
    re.compile(r"####"),
    re.compile(r"\\boxed\{"),
    re.compile(r"\banswer\b[^\d\n]{0,30}?(?=[-−$.\d])", re.IGNORECASE),
)


_LATEX_FRACTION = re.compile(r"\\d?frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}")


def _number_value(match: re.Match[str]) -> float | None:
    try:
        value = float(match["value"].replace(",", ""))
        if match["exp"]:
            value *= 10.0 ** int(match["exp"])
        if match["den"]:
            value /= int(match["den"])
    except (OverflowError, ZeroDivisionError, ValueError):  # ValueError: a 5,000-digit exponent
        return None
    if match["sign"]:
        value = -value
    return value if math.isfinite(value) else None


def extract_number(text: str) -> float | None:
    """The final numeric answer in ``text`` (GSM8K style), or None.

    In order of trust: the number after the last ``####``, inside the last ``\\boxed{}``,
    after the last "answer" ("The answer is $1,234.", "Final answer: -3"); else the last
    number in the text. ``$``, thousands separators, ``%`` and a trailing period are ignored;
    ``3/4`` and ``\\frac{3}{4}`` are 0.75.
    """
    text = _LATEX_FRACTION.sub(r"\1/\2", text)
    for marker in _ANSWER_MARKERS:
        found = None
        for mark in marker.finditer(text):
            line_end = text.find("\n", mark.end())
            after = text[mark.end() : line_end if line_end != -1 else len(text)]
            number = _NUMBER.search(after)
            if number is not None and (value := _number_value(number)) is not None:
                found = value
        if found is not None:
            return found
    values = [v for m in _NUMBER.finditer(text) if (v := _number_value(m)) is not None]
    return values[-1] if values else None


@dataclass(frozen=True)
class NumericGrader(TextGrader):
    """1 when the answer's final number equals the reference's within tolerance."""

    name: ClassVar[str] = "numeric"
    rel_tol: float = 1e-6
    abs_tol: float = 1e-6

    def __post_init__(self) -> None:
        if self.rel_tol < 0 or self.abs_tol < 0:
            raise ValueError("rel_tol and abs_tol must be >= 0")

    @classmethod
    def check_query(cls, query: Query) -> None:
        super().check_query(query)
        for ref in query.references:
            if extract_number(ref) is None:
                raise InvalidQuery("reference", f"grader 'numeric' needs a number, got {ref!r}")

    def score(self, answer: str, query: Query) -> float:
        value = extract_number(answer)
        if value is None:
            return 0.0
        refs = (extract_number(ref) for ref in query.references)
        return float(
            any(math.isclose(value, r, rel_tol=self.rel_tol, abs_tol=self.abs_tol) for r in refs if r is not None)
        )


# ------------------------------------------------------------------ multiple choice
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DEFAULT_N_CHOICES = 10  # A-J, as in MMLU-Pro, when the query gives no choices


def _choice_patterns(letters: str) -> tuple[re.Pattern[str], ...]:
    letter = f"([{letters}])"
    # Letters in upper case only: a bare "a" or "I" is a word far more often than an option.
    return (
        re.compile(rf"\b(?i:answer)\b[^A-Za-z\n]{{0,12}}(?i:is)?\s*:?\s*(?i:option\s+|choice\s+)?[(\[*]*{letter}\b"),
        re.compile(rf"^\W*{letter}\W*$"),
        re.compile(rf"^\s*[(\[*]*{letter}[)\].:*]"),
        re.compile(rf"\b(?i:option|choice)\s+[(\[*]*{letter}\b"),
        re.compile(rf"\({letter}\)"),
        re.compile(rf"\*\*{letter}\*\*"),
    )


def extract_choice(text: str, n_choices: int = DEFAULT_N_CHOICES, choices: tuple[str, ...] = ()) -> str | None:
    """The option letter an answer picks, or None.

    Tries, in order: "the answer is (B)" / "Answer: B"; an answer that is only a letter;
    an answer starting with "B)" / "B." / "(B)"; "option B"; the last "(B)"; "**B**"; and,
    when ``choices`` are given, the one option whose text the answer is or contains.
    Later occurrences win within a rule.
    """
    letters = LETTERS[: max(1, min(n_choices, len(LETTERS)))]
    for pattern in _choice_patterns(letters):
        found = pattern.findall(text.strip())
        if found:
            return found[-1]
    return _choice_by_text(text, choices)


def _choice_by_text(text: str, choices: tuple[str, ...]) -> str | None:
    answer = normalize_text(text)
    if not answer:
        return None
    options = [normalize_text(c) for c in choices]
    exact = [i for i, option in enumerate(options) if option and option == answer]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    contained = [i for i, option in enumerate(options) if option and re.search(rf"\b{re.escape(option)}\b", answer)]
    return LETTERS[contained[0]] if len(contained) == 1 else None


def reference_letter(reference: str, choices: tuple[str, ...]) -> str | None:
    """A reference given as a letter ("B", "(b)", "B.") or as the text of one of the choices."""
    letters = LETTERS[: len(choices) or DEFAULT_N_CHOICES]
    match = re.fullmatch(r"\s*[(\[]?\s*([A-Za-z])\s*[)\].]?\s*", reference)
    if match and match[1].upper() in letters:
        return match[1].upper()
    return _choice_by_text(reference, choices) if choices else None


@dataclass(frozen=True)
class MultipleChoice(TextGrader):
    """1 when the option letter the answer picks is the reference's."""

    name: ClassVar[str] = "choice"

    @classmethod
    def check_query(cls, query: Query) -> None:
        super().check_query(query)
        for ref in query.references:
            if reference_letter(ref, query.choices) is None:
                raise InvalidQuery(
                    "reference", f"grader 'choice' needs an option letter or the text of a choice, got {ref!r}"
                )

    def score(self, answer: str, query: Query) -> float:
        n_choices = len(query.choices) or DEFAULT_N_CHOICES
        picked = extract_choice(answer, n_choices, query.choices)
        return float(picked is not None and any(picked == reference_letter(r, query.choices) for r in query.references))
