"""Server-sent events, as OpenAI-compatible servers stream chat completions.

The gateway relays a backend's stream event by event: it must see event boundaries to
rename the ``model`` field, to notice the final ``data: [DONE]`` (a stream that ends
without it was truncated) and to add an error event when the backend fails mid-stream.
Bytes are forwarded as soon as an event is complete, never buffered beyond one event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from entrorouter.serving.chat import reject_json_constant

DONE = "[DONE]"
MAX_EVENT_BYTES = 8 * 1024 * 1024  # a chat chunk is a few kB; even one with all its logprobs is far below


@dataclass(frozen=True)
class Event:
    """One SSE event: its raw lines (without the blank line ending it) and its data."""

    raw: bytes
    data: str | None  # the ``data:`` lines joined by "\n"; None for comments / keep-alives
    data_only: bool  # no other field (event:, id:, retry:, comments): safe to re-encode

    @property
    def is_done(self) -> bool:
        return self.data == DONE

    def json(self) -> Any:
        """The data as JSON, or None when it is not JSON (or there is none)."""
        if self.data is None or self.data == DONE:
            return None
        try:
            return json.loads(self.data, parse_constant=reject_json_constant)
        except ValueError:  # not JSON (NaN and Infinity included): relayed as it came, never re-encoded
            return None


class EventTooLarge(Exception):
    """An event grew beyond :data:`MAX_EVENT_BYTES` without ending: the stream is broken."""


class EventDecoder:
    """Splits a byte stream into events; accepts \\n, \\r\\n and \\r line endings.

    A stream that never ends an event would grow the buffer without bound: beyond
    :data:`MAX_EVENT_BYTES` it raises :class:`EventTooLarge`. Each chunk is searched for an
    event's end only where it can be (the new bytes), so a long event costs linear time.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last chunk ended in \r: a leading \n completes that \r\n

    def feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")
        searched = max(len(self._buffer) - 1, 0)  # an event's end may straddle the old end
        self._buffer += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        complete: list[bytes] = []
        if self._buffer.find(b"\n\n", searched) >= 0:
            *complete, self._buffer = self._buffer.split(b"\n\n")
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise EventTooLarge(f"an event of the stream exceeds {MAX_EVENT_BYTES} bytes")
        return [parse_event(raw) for raw in complete if raw.strip(b"\n")]


def parse_event(raw: bytes) -> Event:
    raw = raw.lstrip(b"\n")
    data_lines, other_lines = [], 0
    for line in raw.split(b"\n"):
        if line == b"data" or line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        else:
            other_lines += 1
    data = b"\n".join(data_lines).decode("utf-8", errors="replace") if data_lines else None
    return Event(raw, data, data_only=bool(data_lines) and not other_lines)


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Complete events from a byte stream; an unterminated last event is dropped (per SSE)."""
    decoder = EventDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event


def encode(event: Event) -> bytes:
    return event.raw + b"\n\n"


def data_event(payload: Any) -> bytes:
    """``data: <json>`` + the blank line, ready to send."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
