"""Reading a ``/v1/chat/completions`` request: validation, the target model, the routed text.

The gateway checks only what it needs (a JSON object, ``model``, well-formed ``messages``,
``stream``); every other field, tools and content parts included, is passed to the backend
untouched, so new OpenAI features work without a gateway release.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from entrorouter.errors import EntroRouterError
from entrorouter.messages import message_text
from entrorouter.router.config import LAM_CEILING
from entrorouter.serving.config import ROUTER_MODEL


class ApiError(Exception):
    """An error answered with an OpenAI-style body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}  # sent with the error (say, Retry-After)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: the body to forward and where it should go."""

    body: dict[str, Any]
    stream: bool
    lam: float | None  # the trade-off for a routed request; None when ``direct`` is set
    direct: str | None  # the backend the client named, or None: the router chooses


def parse_json_body(raw: bytes) -> Any:
    """The request body as JSON; 400 when it is not (NaN and Infinity are not JSON).

    A literal too large for a float (``1e999``) would parse as infinity and be forwarded as
    ``Infinity``, which is not JSON either: it is refused the same way.
    """
    try:
        body = json.loads(raw, parse_constant=reject_json_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, f"the request body is not valid JSON: {reason}", code="invalid_json") from None
    # A lone surrogate (an escape such as \ud800 without its pair) parses, but it is no Unicode
    # character: the body could not be encoded again for the backend. Only an escape (or a body
    # in UTF-16/32, rare) can carry one, so the walk runs only then.
    if SURROGATE_ESCAPE.search(raw) or json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
        where = _lone_surrogate(body, "")
        if where is not None:
            message = f"the request body is not valid JSON: {where or 'the body'} holds a lone surrogate escape"
            raise ApiError(400, message, param=where or None, code="invalid_json")
    return body


PLAIN_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path (``messages[0].content``) of the first string, or key, that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            name = key.encode(errors="backslashreplace").decode()  # the path must be printable itself
            inner = f"{path}.{name}" if path else name
            found = _lone_surrogate(key, inner)
            if found is None:
                found = _lone_surrogate(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def reject_json_constant(name: str) -> Any:
    """For ``json.loads``' ``parse_constant``: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"the number {literal[:40]} is out of range")
    return value


def parse_chat_request(
    body: Any, backends: Collection[str], default_lam: float, lam_for_target: Callable[[float], float]
) -> ChatRequest:
    """Validate a parsed body; 400 for an invalid field, 404 for an unknown model.

    ``lam_for_target`` turns a retention target (``entrorouter@0.98``) into a λ through the
    router's calibration curve, raising EntroRouterError when the target is unreachable.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _check_messages(body.get("messages"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    lam, direct = resolve_model(body.get("model"), backends, default_lam, lam_for_target)
    return ChatRequest(body=body, stream=bool(stream), lam=lam, direct=direct)


def resolve_model(
    model: Any, backends: Collection[str], default_lam: float, lam_for_target: Callable[[float], float]
) -> tuple[float | None, str | None]:
    """``(λ, None)`` for ``entrorouter`` / ``entrorouter:<λ>`` / ``entrorouter@<target retention>``,
    ``(None, name)`` for a backend."""
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' must be a non-empty string", param="model")
    if model == ROUTER_MODEL:
        return default_lam, None
    for separator, what, code in ((":", "λ", "invalid_lambda"), ("@", "target retention", "invalid_target")):
        if not model.startswith(ROUTER_MODEL + separator):
            continue
        text = model[len(ROUTER_MODEL) + 1 :]
        value = float(text) if PLAIN_NUMBER.fullmatch(text) else math.nan  # float() alone takes " 1_0 "
        valid = 0 <= value <= LAM_CEILING if separator == ":" else 0 < value <= 1.5  # NaN fails both
        if not valid:
            expected = f"a number λ in [0, {LAM_CEILING:g}]" if separator == ":" else "a fraction such as 0.98"
            raise ApiError(
                400,
                f"'{ROUTER_MODEL}{separator}<{what}>' needs {expected}, got {text[:40]!r}",
                param="model",
                code=code,
            )
        if separator == ":":
            return value, None
        try:
            return lam_for_target(value), None
        except EntroRouterError as exc:
            raise ApiError(400, str(exc), param="model", code="unreachable_target") from None
    if model in backends:
        return None, model
    raise ApiError(
        404,
        f"the model {model[:100]!r} does not exist; use {ROUTER_MODEL!r}, '{ROUTER_MODEL}:<λ>', "
        f"'{ROUTER_MODEL}@<target retention>' or a backend listed by GET /v1/models",
        param="model",
        code="model_not_found",
    )


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"'{where}' must be an object", param=where)
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise ApiError(400, f"'{where}.role' must be a non-empty string", param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ApiError(
                400, f"'{where}.content' must be a string, a list of parts or null", param=f"{where}.content"
            )
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict):
                raise ApiError(400, f"'{where}.content[{j}]' must be an object", param=f"{where}.content[{j}]")


# ------------------------------------------------------------------ routed text
def routing_text(messages: list[dict[str, Any]], max_chars: int) -> str:
    """The text the router sees: the newest user message with text, cut to ``max_chars``.

    A message's text is :func:`entrorouter.messages.message_text` (what ``collect`` puts in
    the training table). When no user message has text, the
    newest message of any role with text is used; otherwise the system prompt and the
    rest of the conversation are not routed on. The head of a long text is kept because
    the router was trained on whole queries and its encoder reads their beginning.
    """
    users = [m for m in reversed(messages) if m.get("role") == "user"]
    for message in (*users, *reversed(messages)):
        text = message_text(message)
        if text.strip():
            return text[:max_chars]
    return ""
