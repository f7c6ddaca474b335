"""The SSE decoder: events come out whole however the bytes are cut."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrorouter.serving.sse import MAX_EVENT_BYTES, EventDecoder, EventTooLarge, encode, parse_event

STREAM = (
    b'data: {"model": "m", "choices": [{"delta": {"content": "a\\nb"}}]}\n\n'
    b": keep-alive\n\n"
    b"event: ping\ndata: 1\n\n"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)


def decode(chunks: list[bytes]) -> list:
    decoder = EventDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_events_and_their_data() -> None:
    events = decode([STREAM])
    assert [e.data for e in events] == [
        '{"model": "m", "choices": [{"delta": {"content": "a\\nb"}}]}',
        None,
        "1",
        "line one\nline two",
        "[DONE]",
    ]
    assert [e.data_only for e in events] == [True, False, False, True, True]
    assert events[0].json()["model"] == "m"
    assert events[-1].is_done and events[-1].json() is None
    assert b"".join(encode(e) for e in events) == STREAM


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_split_and_line_ending_gives_the_same_events(cuts: list[int], newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    points = [0, *sorted(cuts), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert [e.data for e in decode(chunks)] == [e.data for e in decode([STREAM])]


def test_unterminated_event_is_not_emitted() -> None:
    assert decode([b"data: 1\n\ndata: 2\n"]) == [parse_event(b"data: 1")]


def test_an_event_that_never_ends_is_refused_past_the_limit() -> None:
    decoder = EventDecoder()
    chunk = b"data: " + b"x" * (1024 * 1024)
    for _ in range(MAX_EVENT_BYTES // len(chunk)):
        assert decoder.feed(chunk) == []  # buffered, searched only where an end can be
    with pytest.raises(EventTooLarge):
        decoder.feed(chunk)


def test_an_event_end_split_across_chunks_is_found() -> None:
    assert decode([b"data: 1\n", b"\ndata: 2\r", b"\n\r\n"]) == [parse_event(b"data: 1"), parse_event(b"data: 2")]


def test_nan_in_an_event_is_not_json() -> None:
    assert parse_event(b'data: {"x": NaN}').json() is None  # relayed as it came, never re-encoded
