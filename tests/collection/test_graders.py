"""The text graders and their extraction functions, with tricky inputs and properties."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrorouter.collection.graders import (
    GRADERS,
    ExactMatch,
    MultipleChoice,
    NumericGrader,
    TextGrader,
    TokenF1,
    extract_choice,
    extract_number,
    grader_class,
    make_graders,
    normalize_text,
    token_f1,
)
from entrorouter.collection.queries import Query
from entrorouter.errors import ConfigError


def query(reference: str | tuple[str, ...] = "", grader: str = "exact", choices: tuple[str, ...] = ()) -> Query:
    refs = (reference,) if isinstance(reference, str) else reference
    return Query(
        id="q", messages=({"role": "user", "content": "?"},), text="?", grader=grader, references=refs, choices=choices
    )


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", 72),
        ("#### 1,234", 1234),
        ("The answer is $18.", 18),
        ("The answer is: -3", -3),
        ("The answer is −7 degrees", -7),  # Unicode minus
        ("Final answer: 0.5", 0.5),
        ("so x = \\boxed{42} and we are done, 7 apples", 42),
        ("First 3 then 5 then 1,000,000", 1_000_000),
        ("It costs $1,234.50 in total", 1234.5),
        ("about 3/4 of them", 0.75),
        ("She has 5-3 = 2 left", 2),  # "5-3": a subtraction, not -3
        ("the list 1,2,3", 3),  # not a thousands separator
        ("50% of the time", 50),
        ("1e3 grams", 1000),
        ("so x = \\boxed{\\frac{3}{4}}", 0.75),
        ("1e" + "9" * 5000, None),  # an absurd exponent: no number (and no crash)
        ("The answer is 12. Then she gave 5 away.", 12),  # the announced answer beats the last number
        ("answer: 10 but wait, the answer is 11", 11),  # the last announcement wins
        ("#### 9\nThe answer is 8", 9),  # #### beats "answer is"
        ("I cannot tell.", None),
        ("", None),
        ("divide by 1/0", None),  # no value, rather than a guess
    ],
)
def test_extract_number(text: str, value: float | None) -> None:
    got = extract_number(text)
    if value is None:
        assert got is None
    else:
        assert got == pytest.approx(value)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_extract_number_reads_formatted_integers(n: int) -> None:
    for text in (f"#### {n}", f"The answer is {n:,}.", f"So the total is ${n:,}" if n >= 0 else f"{n}", f"{n}"):
        assert extract_number(text) == n


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_extraction_never_fails_on_any_text(text: str) -> None:
    value = extract_number(text)
    assert value is None or isinstance(value, float)
    assert extract_choice(text, 4, ("alpha", "beta", "gamma", "delta")) in {None, "A", "B", "C", "D"}


@given(st.decimals(min_value=-1e6, max_value=1e6, places=3, allow_nan=False, allow_infinity=False))
def test_extract_number_reads_decimals(d) -> None:
    assert extract_number(f"The answer is {d}") == pytest.approx(float(d))


def test_numeric_grader_tolerance_and_reference_extraction() -> None:
    grader = NumericGrader()
    assert grader.score("#### 18", query("Janet makes 9 * 2 = 18 dollars.\n#### 18", "numeric")) == 1.0
    assert grader.score("The answer is 18.0000001", query("18", "numeric")) == 1.0
    assert grader.score("The answer is 18.1", query("18", "numeric")) == 0.0
    assert grader.score("no number here", query("18", "numeric")) == 0.0
    assert NumericGrader(abs_tol=0.2).score("18.1", query("18", "numeric")) == 1.0


# ------------------------------------------------------------------ multiple choice
@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("answer is **D**", "D"),
        ("B", "B"),
        ("(A)", "A"),
        ("C) Paris is the capital", "C"),
        ("I think it is option D because...", "D"),
        ("A is wrong, and so is B. Thus (C).", "C"),
        ("I believe that a cat is an animal", None),  # "I" and "a" are words, not options
        ("The answer is (E)", None),  # beyond the 4 choices given below
        ("The answer is (J)", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text, n_choices=4) == letter


def test_extract_choice_by_option_text_and_default_range() -> None:
    choices = ("Berlin", "Paris", "Rome", "Madrid")
    assert extract_choice("It must be Paris.", 4, choices) == "B"
    assert extract_choice("Paris or Rome", 4, choices) is None  # ambiguous
    assert extract_choice("The answer is (J)") == "J"  # MMLU-Pro has ten options by default


@given(st.integers(min_value=0, max_value=9), st.sampled_from(["The answer is ({})", "Answer: {}", "{}", "({})"]))
def test_extract_choice_finds_the_stated_letter(index: int, template: str) -> None:
    letter = "ABCDEFGHIJ"[index]
    assert extract_choice(template.format(letter)) == letter


def test_multiple_choice_grader_accepts_letter_or_option_text_references() -> None:
    choices = ("Berlin", "Paris", "Rome")
    grader = MultipleChoice()
    assert grader.score("The answer is (B)", query("b", "choice", choices)) == 1.0
    assert grader.score("The answer is (B)", query("Paris", "choice", choices)) == 1.0
    assert grader.score("The answer is (C)", query("(B)", "choice", choices)) == 0.0
    assert grader.score("no idea", query("B", "choice", choices)) == 0.0


# ------------------------------------------------------------------ exact match and F1
def test_exact_match_normalisation() -> None:
    grader = ExactMatch()
    assert grader.score("  The Eiffel-Tower! ", query("eiffel tower")) == 1.0
    assert grader.score("ÉCOLE", query("école")) == 1.0
    assert grader.score("Paris, France", query(("London", "paris france"))) == 1.0
    assert grader.score("Eiffel", query("Eiffel Tower")) == 0.0


@given(st.text(max_size=60))
def test_normalize_text_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(st.text(max_size=40), st.text(max_size=40))
def test_token_f1_is_a_symmetric_score(a: str, b: str) -> None:
    score = token_f1(a, b)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(token_f1(b, a))
    assert token_f1(a, a) == 1.0


def test_token_f1_partial_credit_and_best_reference() -> None:
    assert token_f1("the big red barn", "red barn") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert TokenF1().score("red barn", query(("blue", "red barn"))) == 1.0


# ------------------------------------------------------------------ registry
def test_registry_holds_every_grader_and_a_new_one_is_one_class() -> None:
    assert {"exact", "numeric", "choice", "f1", "code", "judge"} <= set(GRADERS)

    @dataclass(frozen=True)
    class Shouting(TextGrader):
        name: ClassVar[str] = "test-shouting"
        strict: bool = False

        def score(self, answer: str, query: Query) -> float:
            return float(answer.isupper() and (answer.endswith("!") or not self.strict))

    try:
        assert grader_class("test-shouting") is Shouting
        grader = make_graders(["test-shouting"], {"test-shouting": {"strict": True}}, "pool.yaml")["test-shouting"]
        assert asyncio.run(grader.grade("YES!", query("x"))) == 1.0
        assert asyncio.run(grader.grade("YES", query("x"))) == 0.0
    finally:
        del GRADERS["test-shouting"]


def test_make_graders_validates_options() -> None:
    graders = make_graders(["numeric"], {"numeric": {"rel_tol": 1, "abs_tol": 0.5}}, "pool.yaml")
    assert graders["numeric"] == NumericGrader(rel_tol=1.0, abs_tol=0.5)
    with pytest.raises(ConfigError, match=r"pool.yaml: graders.numeric: unknown option\(s\) \['tol'\]"):
        make_graders(["numeric"], {"numeric": {"tol": 1}}, "pool.yaml")
    with pytest.raises(ConfigError, match=r"graders.numeric.rel_tol: expected float, got 'x'"):
        make_graders(["numeric"], {"numeric": {"rel_tol": "x"}}, "pool.yaml")
    with pytest.raises(ConfigError, match=r"graders.numeric: rel_tol and abs_tol must be >= 0"):
        make_graders(["numeric"], {"numeric": {"rel_tol": -1}}, "pool.yaml")
    with pytest.raises(ConfigError, match=r"unknown grader\(s\) \['nope'\]"):
        make_graders(["numeric"], {"nope": {}}, "pool.yaml")
    with pytest.raises(ConfigError, match=r"graders.judge.backend: the judge needs a backend"):
        make_graders(["judge"], {}, "pool.yaml")
