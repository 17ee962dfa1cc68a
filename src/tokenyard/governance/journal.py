"""A local, append-only journal of records waiting for the database: nothing acknowledged is lost.

Records are JSON lines in numbered segment files (`seg-00000001.jsonl`, ...). `append` writes a
batch, flushes and fsyncs before returning, and starts a new segment once the current one passes
`segment_bytes`. A separate cursor file (written to a temporary file, fsync'd, then renamed over the
old one) says how far the database has taken the records; segments wholly behind it are deleted.
After a crash (even SIGKILL) everything after the cursor is read again: delivery is at least once,
and the consumer makes it exactly once by being idempotent on each record's request id. A line
torn by a crash mid-write is cut off when the journal is opened.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

logger = logging.getLogger(__name__)

Record = dict[str, Any]
EncodedRecord = bytes  # a record already encoded as one line of JSON (UTF-8, no newline)
SEGMENT_GLOB = "seg-*.jsonl"
CURSOR_FILE = "cursor.json"
LOCK_FILE = "lock"


class Cursor(BaseModel):
    """A position in the journal: a segment number and a byte offset in it."""

    segment: int = 1
    offset: int = 0


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalBusyError(Exception):
    """Another live process holds this journal directory."""


def _lock_directory(directory: Path) -> BinaryIO:
    """Hold the directory for this process (released when it exits, even by SIGKILL)."""
    handle = (directory / LOCK_FILE).open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise JournalBusyError(f"the journal {directory} is in use by another process") from None
    return handle


def _encoded(record: Record | EncodedRecord) -> bytes:
    if isinstance(record, bytes):
        if b"\n" in record:
            raise ValueError("an encoded journal record must be one line")
        return record
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


class Journal:
    """The journal in one directory; thread-safe (the appender and the drainer run in threads)."""

    def __init__(self, directory: Path, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._owner = _lock_directory(directory)
        self._lock = threading.Lock()
        self._cursor = self._read_cursor()
        segments = self.segments()
        self._active = max(segments[-1] if segments else 1, self._cursor.segment)
        self._size = self._repair_tail(self._path(self._active))

    def _path(self, segment: int) -> Path:
        return self.directory / f"seg-{segment:08d}.jsonl"

    def close(self) -> None:
        """Let another process take the directory."""
        self._owner.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> Cursor:
        return self._cursor

    def segments(self) -> list[int]:
        return sorted(_segment_number(p) for p in self.directory.glob(SEGMENT_GLOB))

    def _read_cursor(self) -> Cursor:
        path = self.directory / CURSOR_FILE
        if not path.exists():
            return Cursor()
        return Cursor.model_validate_json(path.read_bytes())

    @staticmethod
    def _repair_tail(path: Path) -> int:
        """Cut a line a crash left half-written; return the segment's size."""
        if not path.exists():
            return 0
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            logger.warning("journal %s: dropping %d bytes of a torn last line", path, len(data) - keep)
            with path.open("r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
        return keep

    def append(self, records: Sequence[Record | EncodedRecord]) -> None:
        """Write the records durably (fsync) before returning."""
        data = b"".join(_encoded(r) + b"\n" for r in records)
        with self._lock:
            if self._size >= self.segment_bytes:
                self._active += 1
                self._size = 0
            path = self._path(self._active)
            new = not path.exists()
            with path.open("ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if new:
                _fsync_dir(self.directory)
            self._size += len(data)

    def pending(self, limit: int) -> tuple[list[Record], Cursor]:
        """Up to `limit` records after the cursor, and the position just past them."""
        with self._lock:
            position = self._cursor.model_copy()
            active, active_size = self._active, self._size
        records: list[Record] = []
        while len(records) < limit and position.segment <= active:
            end = active_size if position.segment == active else None
            records += self._read(position, limit - len(records), end)
            if position.segment == active or len(records) >= limit:
                break
            position = Cursor(segment=position.segment + 1)
        return records, position

    def _read(self, position: Cursor, limit: int, end: int | None) -> list[Record]:
        """Read whole lines from `position` (advanced in place), never past `end` bytes."""
        path = self._path(position.segment)
        if not path.exists():
            return []
        records: list[Record] = []
        with path.open("rb") as handle:
            handle.seek(position.offset)
            while len(records) < limit and (end is None or position.offset < end):
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break
                position.offset += len(line)
                try:
                    records.append(json.loads(line))
                except ValueError:
                    logger.error("journal %s: skipping an unreadable line at byte %d", path, position.offset)
        return records

    def commit(self, cursor: Cursor) -> None:
        """The consumer has stored everything before `cursor`: remember it, delete spent segments."""
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        tmp.write_text(cursor.model_dump_json())
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / CURSOR_FILE)
        _fsync_dir(self.directory)
        with self._lock:
            self._cursor = cursor
        for segment in self.segments():
            if segment < cursor.segment:
                self._path(segment).unlink(missing_ok=True)

    def backlog(self) -> int:
        """Bytes written but not yet taken by the consumer."""
        with self._lock:
            cursor, active, size = self._cursor, self._active, self._size
        total = 0
        for segment in range(cursor.segment, active + 1):
            path = self._path(segment)
            length = size if segment == active else (path.stat().st_size if path.exists() else 0)
            total += length - (cursor.offset if segment == cursor.segment else 0)
        return max(total, 0)
