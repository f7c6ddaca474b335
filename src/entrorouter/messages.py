"""The text of an OpenAI-style chat message, one definition for training and serving.

The router must see the same text for a query at serving time as it saw for it in its
training table, so ``collect`` (which writes the table) and the gateway (which routes
requests) both read messages through :func:`message_text`. This module imports nothing of
the project, so either side can use it without loading the other.
"""

from __future__ import annotations

from typing import Any

# Text parts are joined by a newline: they are separate blocks, and gluing them would merge
# the last word of one with the first word of the next.
PART_SEPARATOR = "\n"


def message_text(message: Any) -> str:
    """A message's string ``content``, or the ``text`` of its text parts joined by newlines.

    A part is text when its ``type`` is ``"text"`` or absent; images, audio and files are
    ignored, as is anything that is not a message.
    """
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        texts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
        ]
        return PART_SEPARATOR.join(texts)
    return ""
