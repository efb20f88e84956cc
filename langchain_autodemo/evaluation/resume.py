"""Resumable JSONL output for ``autodemo run``.

Each output line is the input record plus ``input_line`` (its line number in the input
file) and the answer (or ``error``). Lines are appended and flushed as items complete, so
after an interruption :func:`read_finished` tells which input lines are done, and a torn
last line (the process died mid-write) is cut off instead of corrupting the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from langchain_autodemo.errors import ConfigurationError

__all__ = ["LINE_KEY", "OutputError", "OutputWriter", "read_finished", "sort_output"]

LINE_KEY = "input_line"


class OutputError(ConfigurationError):
    """The existing output file cannot be resumed (message is for the user)."""


def read_finished(
    path: Path, *, drop_errors: bool = False, error_key: str = "error"
) -> dict[int, dict[str, Any]]:
    """The finished records of an existing output file, keyed by input line number.

    A torn (unterminated, unparsable) last line is removed from the file. A malformed line
    anywhere else raises :class:`OutputError`. With ``drop_errors`` the records that hold
    an error are removed from the file, so that they are asked again.
    """
    if not path.exists():
        return {}
    raw = path.read_bytes()
    finished: dict[int, dict[str, Any]] = {}
    dropped = False
    good_end = position = 0
    number = 0
    while position < len(raw):
        newline = raw.find(b"\n", position)
        end = len(raw) if newline == -1 else newline + 1
        line, number = raw[position:end], number + 1
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get(LINE_KEY), int):
                    raise ValueError("not an output record")
            except ValueError:
                if end == len(raw):  # torn write at the very end: cut it off
                    break
                raise OutputError(
                    f"{path}:{number}: not an autodemo output line; refusing to resume into "
                    "this file (choose another -o, or use --overwrite)"
                ) from None
            if drop_errors and error_key in record:
                dropped = True
            else:
                finished[record[LINE_KEY]] = record
        good_end = position = end
    if dropped:
        _rewrite(path, finished.values())
    elif good_end < len(raw):
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    elif raw and not raw.endswith(b"\n"):  # last record complete, its newline lost
        with path.open("ab") as handle:
            handle.write(b"\n")
    return finished


def _rewrite(path: Path, records: Iterable[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def sort_output(path: Path) -> None:
    """Rewrite a complete output file in input order (atomically)."""
    records = read_finished(path)
    _rewrite(path, (records[key] for key in sorted(records)))


class OutputWriter:
    """Appends one JSON line per finished item and flushes it to disk at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[str] = path.open("a", encoding="utf-8")
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()  # survives a crash or kill of this process
        self.written += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
