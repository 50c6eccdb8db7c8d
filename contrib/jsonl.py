"""A usage sink that appends one JSON line per record to a file.

Owns: the JSONL record file format (one `record_to_dict` object per line, UTF-8). Useful as an
audit trail, for tests, and as input to `meshproxy usage`.

Does not own: durability guarantees beyond one write per record (the ledger does that), rotation.

Each record is written with a single `write(2)` on an `O_APPEND` descriptor, so concurrent
writers (gunicorn workers sharing one file) never interleave inside a line. A reader may still
see the tail of a line that is being written, because Linux does not make `read(2)` atomic
against a concurrent `write(2)`; readers of a live file should ignore an unterminated last line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from meshproxy_core.records import UsageRecord, record_to_dict

__all__ = ["JsonlSink"]


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, record: UsageRecord) -> None:
        line = json.dumps(record_to_dict(record), separators=(",", ":"), default=str) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"JsonlSink for {self.path} is closed")
            written = os.write(self._fd, data)
            # A regular file takes the whole buffer in one call; loop only for the
            # pathological short write (a full disk returns an error instead).
            while written < len(data):
                written += os.write(self._fd, data[written:])

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
