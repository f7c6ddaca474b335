"""Graders: score an answer in [0, 1]. Registered names:

* ``exact`` — normalised exact match (case, punctuation, articles, spaces ignored);
* ``numeric`` — the final number (GSM8K style: ``#### 18``, ``\\boxed{18}``, "the answer
  is $18", else the last number) equals the reference within ``rel_tol`` / ``abs_tol``;
* ``choice`` — the option letter the answer picks equals the reference (a letter or the
  text of one of the query's ``choices``);
* ``f1`` — SQuAD token F1 against the best reference (partial credit);
* ``code`` — the answer's Python passes the query's ``tests`` in a limited subprocess;
* ``judge`` — a judge model scores the answer against a rubric (needs ``graders.judge``).

See :mod:`.base` to add one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from entrorouter.backends import RetryPolicy
from entrorouter.collection.graders.base import (
    GRADERS,
    Grader,
    GradingError,
    InvalidQuery,
    TextGrader,
    grader_class,
    grader_names,
)
from entrorouter.collection.graders.code import CodeTests, extract_code
from entrorouter.collection.graders.judge import Judge, parse_judge_score
from entrorouter.collection.graders.text import (
    ExactMatch,
    MultipleChoice,
    NumericGrader,
    TokenF1,
    extract_choice,
    extract_number,
    normalize_text,
    token_f1,
)
from entrorouter.errors import ConfigError

__all__ = [
    "GRADERS",
    "CodeTests",
    "ExactMatch",
    "Grader",
    "GradingError",
    "InvalidQuery",
    "Judge",
    "MultipleChoice",
    "NumericGrader",
    "TextGrader",
    "TokenF1",
    "extract_choice",
    "extract_code",
    "extract_number",
    "grader_class",
    "grader_names",
    "make_graders",
    "normalize_text",
    "parse_judge_score",
    "token_f1",
]


def make_graders(
    names: Iterable[str],
    options: Mapping[str, Mapping[str, Any]],
    source: str,
    *,
    retry: RetryPolicy | None = None,
) -> dict[str, Grader]:
    """One grader per name used, built from pool.yaml's ``graders:`` options.

    Every configured grader is built, used or not, so a typo in its options fails now.
    ``retry`` (pool.yaml's ``retry:``) paces the judge's retries like the collection calls.
    """
    unknown = sorted(set(options) - set(GRADERS))
    if unknown:
        raise ConfigError(f"{source}: graders: unknown grader(s) {unknown}; known graders: {', '.join(grader_names())}")
    used = set(names)
    built = {
        name: grader_class(name).from_options(options.get(name, {}), f"{source}: graders.{name}")
        for name in sorted(used | set(options))
    }
    for grader in built.values():
        if isinstance(grader, Judge) and retry is not None:
            grader.retry = retry
    return {name: grader for name, grader in built.items() if name in used}
