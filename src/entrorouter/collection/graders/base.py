"""The grader interface and registry.

A grader turns one answer into a score in [0, 1]. A new grader is one class: subclass
:class:`TextGrader` and implement ``score`` (a pure function of the text), or
:class:`Grader` and implement the async ``grade`` when scoring waits on something (a
subprocess, an HTTP call). Setting the class attribute ``name`` registers it. Options
from pool.yaml (``graders: {<name>: {...}}``) become the fields of the (dataclass) grader.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from entrorouter.errors import ConfigError

if TYPE_CHECKING:
    from entrorouter.collection.queries import Query

GRADERS: dict[str, type[Grader]] = {}


class InvalidQuery(ValueError):
    """A query this grader cannot grade (raised at load time, before anything is sent)."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


class GradingError(Exception):
    """Scoring this answer failed (e.g. the judge did not answer); recorded, never a 0."""


class Grader(ABC):
    """Scores one answer to one query in [0, 1]."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            GRADERS[cls.name] = cls

    @classmethod
    def check_query(cls, query: Query) -> None:
        """Raise :class:`InvalidQuery` when ``query`` lacks what this grader needs."""
        if not query.references:
            raise InvalidQuery("reference", f"grader {cls.name!r} needs a reference answer")

    @abstractmethod
    async def grade(self, answer: str, query: Query) -> float:
        """The score of ``answer``; raise :class:`GradingError` when it cannot be decided."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what ``grade`` opened (connections); called once at the end of a run."""

    def fingerprint(self) -> str:
        """Identifies how this grader scores; stored answers are re-graded when it changes."""
        return f"{self.name}:{self!r}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> Grader:
        """Build the grader from its pool.yaml options (the dataclass fields)."""
        return cls.build(where, **cls.coerce_options(options, where))

    @classmethod
    def coerce_options(cls, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Options checked against the dataclass fields and the types of their defaults."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else {}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {unknown}; grader {cls.name!r} takes {sorted(fields)}")
        return {key: _coerce(value, fields[key], f"{where}.{key}") for key, value in options.items()}

    @classmethod
    def build(cls, where: str, **values: Any) -> Grader:
        """``cls(**values)``, with a value error (from ``__post_init__``) as a config error."""
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, spec: dataclasses.Field[Any], where: str) -> Any:
    """Check a scalar option against the type of its default value."""
    expected = type(spec.default)
    if expected is bool and isinstance(value, bool):
        return value
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")


class TextGrader(Grader):
    """A grader that is a pure function of the answer text: implement ``score``."""

    @abstractmethod
    def score(self, answer: str, query: Query) -> float: ...

    async def grade(self, answer: str, query: Query) -> float:
        return self.score(answer, query)


def grader_names() -> list[str]:
    return sorted(GRADERS)


def grader_class(name: str) -> type[Grader]:
    """The registered grader ``name``; :class:`KeyError` with the known names otherwise."""
    try:
        return GRADERS[name]
    except KeyError:
        raise KeyError(f"unknown grader {name!r}; known graders: {', '.join(grader_names())}") from None
