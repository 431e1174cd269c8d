"""A child's output read with a deadline (one line: its "ready" announcement)."""

from __future__ import annotations

import threading
from typing import IO, AnyStr


def read_line(stream: IO[AnyStr], timeout_s: float) -> AnyStr | None:
    """The next line of ``stream`` ('' or b'' at end of file), or None if none came within
    ``timeout_s`` (the reader thread is left to finish with the stream; it is a daemon)."""
    line: list[AnyStr] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return line[0] if line else None
