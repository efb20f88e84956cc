"""Resumable JSONL output for ``autodemo run``.

Each output line is ``{"input_line": N, ...}``: the line number of its input record first,
then the record and its answer (or error). Lines are appended and flushed as items
complete, so after an interruption :func:`read_finished` tells which input lines are done.

A file is resumed only if every line is such a record. The one exception is a torn last
line (the process died mid-write): it has no newline, is not valid JSON, and starts the
way every line this module writes starts (``{"input_line": ``), so it is recognisably
ours; :func:`prepare_for_append` cuts it off. Anything else is refused, never rewritten.

The settings that shape the answers (model, instructions, mode, batch size, ...) are
recorded beside the output, in ``OUTPUT.meta.json`` (:func:`setup_path`), so the output
itself stays one record per line for its readers. A re-run compares its own settings
with that record (:func:`check_setup`) and refuses to append answers of another setup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from langchain_autodemo.cli.common import check_same_settings
from langchain_autodemo.errors import ConfigurationError

__all__ = [
    "LINE_KEY",
    "OutputError",
    "OutputWriter",
    "check_setup",
    "json_text",
    "lock_path",
    "output_lock",
    "prepare_for_append",
    "read_finished",
    "read_setup",
    "remove_output",
    "setup_path",
    "compact_output",
    "sort_output",
    "write_setup",
]

LINE_KEY = "input_line"
_LINE_START = b'{"' + LINE_KEY.encode() + b'": '


class OutputError(ConfigurationError):
    """The existing output file cannot be resumed (message is for the user)."""


def _is_torn_write(tail: bytes) -> bool:
    """An unterminated last line that this module began writing and did not finish."""
    return tail.startswith(_LINE_START) or _LINE_START.startswith(tail)


def _scan(path: Path) -> tuple[dict[int, dict[str, Any]], int, bytes]:
    """(records by input line, bytes of complete lines, the file's bytes); reads only."""
    raw = path.read_bytes()
    finished: dict[int, dict[str, Any]] = {}
    position = number = 0
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
                if newline == -1 and _is_torn_write(line):
                    return finished, position, raw
                raise OutputError(
                    f"{path}:{number}: not an autodemo output line; refusing to resume into "
                    "this file (use another -o, or --overwrite)"
                ) from None
            finished[record[LINE_KEY]] = record
        position = end
    return finished, position, raw


def read_finished(path: Path) -> dict[int, dict[str, Any]]:
    """The finished records of an existing output file, keyed by input line number.

    Leaves the file as it is. Raises :class:`OutputError` naming the first line that
    this module did not write.
    """
    if not path.exists():
        return {}
    return _scan(path)[0]


def prepare_for_append(path: Path, *, keep: Mapping[int, dict[str, Any]] | None = None) -> None:
    """Make a checked output file ready for :class:`OutputWriter`.

    Cuts off a torn last line and restores a lost final newline; with ``keep``, rewrites
    the file with just those records (e.g. without the errors, to ask them again).
    """
    if not path.exists():
        return
    finished, complete, raw = _scan(path)
    if keep is not None and keep.keys() != finished.keys():
        _rewrite(path, keep.values())
    elif complete < len(raw):
        with path.open("r+b") as handle:
            handle.truncate(complete)
    elif raw and not raw.endswith(b"\n"):  # last record complete, its newline lost
        with path.open("ab") as handle:
            handle.write(b"\n")


def _rewrite(path: Path, records: Iterable[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(_line(record[LINE_KEY], record))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def compact_output(path: Path) -> None:
    """Rewrite an output file with one record per input line, its last (atomically): a
    line rewritten by the audit guard leaves no superseded answer behind."""
    records = read_finished(path)  # the last record of each line wins
    _rewrite(path, records.values())


def sort_output(path: Path) -> None:
    """Rewrite a complete output file in input order (atomically)."""
    records = read_finished(path)
    _rewrite(path, (records[key] for key in sorted(records)))


def _line(number: int, fields: Mapping[str, Any]) -> str:
    # The line number first: that is how a torn last line is recognised as ours.
    record = {LINE_KEY: number, **{k: v for k, v in fields.items() if k != LINE_KEY}}
    return json_text(record) + "\n"


def json_text(value: Any, **options: Any) -> str:
    """``value`` as JSON that UTF-8 can always hold.

    Text is written as it is (``ensure_ascii=False``) where it can be; a value holding a
    string that no UTF-8 can hold (a lone surrogate: a model's answer, or an argument
    the shell could not decode) is written with ``\\u`` escapes instead, which every
    JSON reader decodes back to the same string. Writing an answer never fails on its
    text, so a run never stops part-way on one item's characters.
    """
    text = json.dumps(value, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, **options)
    return text


class OutputWriter:
    """Appends one JSON line per finished item and flushes it to disk at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[str] = path.open("a", encoding="utf-8")
        self.written = 0

    def write(self, number: int, fields: Mapping[str, Any]) -> None:
        """Append the record of input line ``number``."""
        self._handle.write(_line(number, fields))
        self._handle.flush()  # survives a crash or kill of this process
        self.written += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- one writer at a time -----------------------------------------------------------


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``OUTPUT.lock`` beside it."""
    return output.with_name(output.name + ".lock")


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold ``OUTPUT.lock`` (an exclusive ``flock``) while a run reads and writes ``output``.

    Two runs on one output would each answer what the other has not written yet: both
    pay for those items, and the file holds them twice. The second run is refused at
    once instead (:class:`OutputError`). The lock goes with the process (a killed run
    holds none); the empty lock file stays, since removing it would let a third run
    lock a new file while the second still holds the old one. Where ``fcntl`` is
    missing (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(
                f"another autodemo run is writing {output} (it holds {path.name}): wait for "
                "it to end, or use another -o"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- the setup an output was written with ------------------------------------------

SETUP_FORMAT = 1
"""Version of the ``OUTPUT.meta.json`` layout."""


def setup_path(output: Path) -> Path:
    """Where the setup of ``output`` is recorded: ``OUTPUT.meta.json`` beside it."""
    return output.with_name(output.name + ".meta.json")


def read_setup(output: Path) -> dict[str, Any] | None:
    """The settings ``output`` was written with; ``None`` where none are recorded.

    Outputs written before the setup was recorded have no such file.
    """
    path = setup_path(output)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        setup = meta["setup"]
        if not isinstance(setup, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise OutputError(
            f"{path} is not the setup record of an autodemo output; refusing to resume into "
            f"{output} (use another -o, or --overwrite)"
        ) from None
    return setup


def write_setup(output: Path, setup: Mapping[str, Any], *, command: str) -> None:
    """Record the settings of the run that writes ``output`` (atomically)."""
    path = setup_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": SETUP_FORMAT, "output": output.name, "command": command, "setup": setup}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json_text(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def check_setup(
    output: Path, setup: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
) -> bool:
    """Refuse to resume ``output`` with settings other than those it was written with.

    Returns ``False`` when ``output`` has no setup record (written before they were
    recorded), ``True`` when it has one and every setting is the same. Raises
    :class:`OutputError` naming each changed setting otherwise. ``defaults``: the value
    of a setting that an older record lacks.
    """
    earlier = read_setup(output)
    if earlier is None:
        return False
    check_same_settings(
        earlier, setup, keys=list(dict.fromkeys([*setup, *earlier])), defaults=defaults,
        what=f"{output} was written with another setup ({setup_path(output).name})",
        fix="use another -o for the new setup, the earlier settings to resume, or "
        "--overwrite to start afresh",
        error=OutputError,
    )  # fmt: skip
    return True


def remove_output(output: Path) -> None:
    """Delete an output file and its setup record (``--overwrite``)."""
    output.unlink(missing_ok=True)
    setup_path(output).unlink(missing_ok=True)
