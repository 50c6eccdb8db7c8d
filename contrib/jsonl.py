"""A usage sink that appends one JSON line per record to a file.

Owns: the JSONL record file format (one `record_to_dict` object per line, UTF-8). Useful as an
audit trail, for tests, and as input to `meshproxy usage`.

Does not own: durability guarantees beyond a flush per record (the ledger does that), rotation.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO

from meshproxy_core.records import UsageRecord, record_to_dict

__all__ = ["JsonlSink"]


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def emit(self, record: UsageRecord) -> None:
        line = json.dumps(record_to_dict(record), separators=(",", ":"), default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
