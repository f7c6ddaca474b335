"""Training (collect's query table) and serving (the gateway) read a chat message's text the same way."""

from __future__ import annotations

import json
from pathlib import Path

from entrorouter.collection.queries import load_queries
from entrorouter.messages import message_text
from entrorouter.serving.chat import routing_text

PARTS = [
    {"type": "text", "text": "Translate to French:"},
    {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}},
    {"type": "text", "text": "good morning"},
]


def test_multi_part_text_is_joined_by_newlines_and_ignores_other_parts() -> None:
    assert message_text({"role": "user", "content": PARTS}) == "Translate to French:\ngood morning"
    assert message_text({"role": "user", "content": [{"text": "no type is text"}]}) == "no type is text"
    assert message_text({"role": "user", "content": None}) == "" and message_text("not a message") == ""


def test_collect_and_gateway_route_on_the_same_text(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PARTS}]
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": messages, "reference": "bonjour"}) + "\n")
    (query,) = load_queries(path, "exact")
    assert query.text == routing_text(messages, max_chars=10_000) == "Translate to French:\ngood morning"
