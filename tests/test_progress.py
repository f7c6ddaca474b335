"""Progress bars in a log: the first redraw of each bar, then at most one line per interval."""

from __future__ import annotations

import io

from entrorouter.progress import PlainLines


def test_redraws_become_occasional_plain_lines() -> None:
    sink = io.StringIO()
    stream = PlainLines(sink)
    for i in range(1000):
        stream.write(f"\rembedding: {i / 10:.0f}%")
    stream.write("\r          \r")  # a bar erasing itself
    stream.write("\rtraining: 0%")
    stream.write("\nsaved\n")
    assert sink.getvalue() == "embedding: 0%\ntraining: 0%\n\nsaved\n"
