"""Request validation, model names and the routed text, including property-based tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrorouter.router.calibration import Calibration
from entrorouter.serving.chat import ApiError, parse_chat_request, parse_json_body, resolve_model, routing_text

BACKENDS = frozenset({"small", "large"})


def _calibration() -> Calibration:
    """A real curve: λ = 0, 1, 2 keep 100%, 99% and 90% of the strong model on 20,000 queries."""
    rng = np.random.default_rng(0)
    strong = (rng.random(20_000) < 0.8).astype(float)
    scores = [strong * (rng.random(20_000) < r) for r in (1.0, 0.99, 0.90)]
    costs = [np.full(20_000, c) for c in (1.0, 0.5, 0.1)]
    return Calibration.from_outcomes(np.arange(3.0), scores, costs, strong, np.ones(20_000))


LAM_FOR = _calibration().lam_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def test_model_names() -> None:
    assert resolve_model("entrorouter", BACKENDS, 0.3, LAM_FOR) == (0.3, None)
    assert resolve_model("entrorouter:0", BACKENDS, 0.3, LAM_FOR) == (0.0, None)
    assert resolve_model("entrorouter:1.5e-1", BACKENDS, 0.3, LAM_FOR) == (0.15, None)
    assert resolve_model("large", BACKENDS, 0.3, LAM_FOR) == (None, "large")
    assert resolve_model("entrorouter@0.97", BACKENDS, 0.3, LAM_FOR) == (1.0, None)
    assert resolve_model("entrorouter@0.5", BACKENDS, 0.3, LAM_FOR) == (2.0, None)


@pytest.mark.parametrize("target", ["0", "-0.5", "nan", "abc", "", "2"])
def test_bad_target_is_400(target: str) -> None:
    with pytest.raises(ApiError) as error:
        resolve_model(f"entrorouter@{target}", BACKENDS, 0.3, LAM_FOR)
    assert error.value.status == 400 and error.value.code == "invalid_target"


def test_unreachable_target_is_400_naming_the_highest_reachable() -> None:
    with pytest.raises(ApiError) as error:
        resolve_model("entrorouter@1.2", BACKENDS, 0.3, LAM_FOR)
    assert error.value.status == 400 and error.value.code == "unreachable_target"
    assert "highest reachable retention" in error.value.message


@pytest.mark.parametrize("lam", ["-1", "nan", "inf", "", "abc", "1e999", "1e39", "1000001", "1_0", " 0.2"])
def test_bad_lambda_is_400(lam: str) -> None:
    with pytest.raises(ApiError) as error:
        resolve_model(f"entrorouter:{lam}", BACKENDS, 0.3, LAM_FOR)
    assert error.value.status == 400 and error.value.code == "invalid_lambda" and error.value.param == "model"


@pytest.mark.parametrize("model", ["gpt-4", "entrorouter2", "Large"])
def test_unknown_model_is_404(model: str) -> None:
    with pytest.raises(ApiError) as error:
        resolve_model(model, BACKENDS, 0.3, LAM_FOR)
    assert error.value.status == 404 and error.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "large"}, "messages"),
        ({"model": "large", "messages": []}, "messages"),
        ({"model": "large", "messages": ["hi"]}, "messages[0]"),
        ({"model": "large", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "large", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "large", "messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        ({"model": "large", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ],
)
def test_invalid_fields_are_400_naming_the_param(body: object, param: str | None) -> None:
    with pytest.raises(ApiError) as error:
        parse_chat_request(body, BACKENDS, 0.3, LAM_FOR)
    assert error.value.status == 400
    assert error.value.param == param
    assert set(error.value.body()["error"]) == {"message", "type", "param", "code"}


def test_routing_text_rules() -> None:
    assert routing_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"}], 100) == "q1"
    conversation = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {}}]},
    ]
    assert routing_text(conversation, 100) == "look at"
    image_only = [*conversation[:2], {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    assert routing_text(image_only, 100) == "first question"
    assert routing_text([{"role": "system", "content": "only a system prompt"}], 100) == "only a system prompt"
    assert routing_text([{"role": "user", "content": None}], 100) == ""
    assert routing_text([{"role": "user", "content": "x" * 50}], 10) == "x" * 10


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_parses_or_is_a_clean_400(raw: bytes) -> None:
    try:
        body = parse_json_body(raw)
    except ApiError as exc:
        assert exc.status == 400
        return
    try:
        request = parse_chat_request(body, BACKENDS, 0.3, LAM_FOR)
    except ApiError as exc:
        assert exc.status in (400, 404)
        assert isinstance(exc.message, str) and exc.message
    else:
        assert request.body is body


def test_nan_and_deep_nesting_are_rejected() -> None:
    for raw in (b'{"model": NaN}', b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe{"):
        with pytest.raises(ApiError) as error:
            parse_json_body(raw)
        assert error.value.status == 400


messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
        optional={
            "content": st.none()
            | st.text(max_size=30)
            | st.lists(
                st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10)}),
                max_size=3,
            ),
            "name": st.text(max_size=5),
        },
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(
    messages,
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in {"model", "messages", "stream"}), json_values, max_size=4
    ),
)
def test_valid_requests_keep_every_field(msgs: list, extra: dict) -> None:
    body = {"model": "large", "messages": msgs, **extra}
    request = parse_chat_request(body, BACKENDS, 0.3, LAM_FOR)
    assert request.direct == "large" and request.body == body
    text = routing_text(msgs, 20)
    assert len(text) <= 20
