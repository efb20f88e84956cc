"""The input file of ``autodemo run``: one item per JSON line, every line checked up front.

Both engines (online and ``--engine ray``) read their input here, so a line is refused by
the same rule whichever answers it, and before the first model call. A file is read
whole before anything is asked, and every bad line is reported in one go (the first
:data:`SHOWN` of them, and how many more), so that one run finds them all.

A line is bad when it is not UTF-8 text, not a JSON object, lacks the field(s) to ask,
already has the ``input_line`` field the output is keyed by, or its text to ask is not a
non-empty string: a ``null``, number, boolean, list or object in ``--field`` is refused
rather than asked as its JSON text (``null`` would be asked as the word "null"). A line
whose values hold a lone surrogate (``"\\ud800"``, valid JSON escape but no Unicode
character) is refused too: the record is copied to the output, which is UTF-8.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_autodemo.cli.resume import LINE_KEY
from langchain_autodemo.errors import ConfigurationError

__all__ = ["SHOWN", "BadInputError", "Item", "read_items", "record_problem"]

SHOWN = 20
"""Bad lines listed in the error; the rest are counted."""


@dataclass(frozen=True)
class Item:
    """One input record and what the model is asked about it."""

    line: int
    """Line number in the input file: the key that resumes it."""
    record: dict[str, Any]
    text: str
    """What the model is asked (with ``--prompt``: the question of the rendered prompt)."""
    asked: Any = None
    """With ``--prompt``: the prompt rendered with the record's fields, as ``prompt |
    runner`` gives it to the runner (``None``: the runner is given :attr:`text`)."""

    @property
    def runner_input(self) -> Any:
        return self.text if self.asked is None else self.asked


class BadInputError(ConfigurationError):
    """Lines of the input file that cannot be asked (every one, each with its line)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        """``(line number, why)`` of every bad line, in file order."""
        lines = [f"  {path}:{number}: {why}" for number, why in problems[:SHOWN]]
        if len(problems) > SHOWN:
            lines.append(f"  ... and {len(problems) - SHOWN} more bad line(s)")
        super().__init__(
            f"{path}: {len(problems)} bad input line(s), nothing was asked; fix "
            f"{'it' if len(problems) == 1 else 'them'} and run again:\n" + "\n".join(lines)
        )


def renderer(field: str, template: str | None) -> tuple[str | None, list[str]]:
    """``(template or None, the record fields it needs)``; a bad template is refused."""
    if template is None:
        return None, [field]
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ConfigurationError(f"bad --template: {exc}") from None
    if not names:
        raise ConfigurationError("--template names no field, e.g. 'Premise: {premise}'")
    return template, [name.split(".")[0].split("[")[0] for name in names]


def read_items(path: Path, field: str, template: str | None, prompt: Any = None) -> list[Item]:
    """One item per record of ``path``; raises :class:`BadInputError` listing every bad
    line (nothing is asked of a file with one). With ``prompt`` (``--prompt``), each
    record's fields fill the prompt's variables and the item is the rendered prompt."""
    if not path.exists():
        raise ConfigurationError(f"input file not found: {path}")
    ask: Callable[[dict[str, Any]], tuple[str, Any] | str]
    if prompt is not None:
        ask = _prompted(prompt)
    else:
        fmt, needed = renderer(field, template)

        def ask(record: dict[str, Any]) -> tuple[str, Any] | str:
            text, why = record_problem(record, field, fmt, needed)
            return why if why is not None else (text or "", None)

    items: list[Item] = []
    problems: list[tuple[int, str]] = []
    for number, record in _records(path):
        asked = record if isinstance(record, str) else ask(record)
        if isinstance(asked, str):  # why the line is bad
            problems.append((number, asked))
        else:
            items.append(Item(number, record, *asked))  # type: ignore[arg-type]
    if problems:
        raise BadInputError(path, problems)
    if not items:
        raise ConfigurationError(f"{path}: no records")
    return items


def _prompted(prompt: Any) -> Callable[[dict[str, Any]], tuple[str, Any] | str]:
    """What a record asks through ``prompt``: (its question text, the rendered prompt), or
    why it cannot be asked."""
    from langchain_core.messages import HumanMessage

    from langchain_autodemo.messages import text_of

    needed = sorted(getattr(prompt, "input_variables", ()) or ())

    def ask(record: dict[str, Any]) -> tuple[str, Any] | str:
        missing = [name for name in needed if name not in record]
        invalid = _not_unicode(record)
        wrong = [name for name in needed if name in record and not isinstance(record[name], str)]
        if missing:
            return f"record lacks the prompt's field(s) {', '.join(missing)}"
        if LINE_KEY in record:
            return f"record has an '{LINE_KEY}' field; rename it"
        if invalid is not None:
            return f"field '{invalid}' holds a lone surrogate; fix the text"
        if wrong:
            return f"field '{wrong[0]}' is {_kind(record[wrong[0]])}, not text"
        try:
            asked = prompt.invoke({name: record[name] for name in needed})
        except (KeyError, ValueError) as exc:
            return f"the prompt cannot be filled: {exc}"
        humans = [m for m in asked.to_messages() if isinstance(m, HumanMessage)]
        text = text_of(humans[-1]) if humans else ""
        return (text, asked) if text.strip() else "the prompt's question is empty for this record"

    return ask


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, record)`` for each non-blank line, or ``(line number, why)`` for a
    line that is not a JSON object (read as bytes: a line that is not UTF-8 is one bad
    line, not a failed read)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, f"not UTF-8 text (byte {exc.start + 1} of the line)"
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, f"malformed JSON ({exc.msg})"
            continue
        if not isinstance(record, dict):
            yield number, f"expected a JSON object, got {record!r:.60}"
            continue
        yield number, record


def record_problem(
    record: Mapping[str, Any], field: str, fmt: str | None, needed: list[str]
) -> tuple[str | None, str | None]:
    """``(the text to ask, None)`` for a good record, ``(None, why)`` for a bad one."""
    missing = [name for name in needed if name not in record]
    if missing:
        return None, (
            f"record lacks field(s) {', '.join(missing)} "
            "(choose the text with --field NAME or --template '...')"
        )
    if LINE_KEY in record:
        return None, (
            f"record has an '{LINE_KEY}' field, which the output uses to resume; rename it"
        )
    invalid = _not_unicode(record)
    if invalid is not None:
        return None, (
            f"field '{invalid}' holds a lone surrogate (a \\ud800-\\udfff escape that is "
            "no Unicode character); fix the text"
        )
    if fmt is None:
        value = record[field]
        if not isinstance(value, str):
            why = f"field '{field}' is {_kind(value)}, not text: the question must be a string"
            return None, why
        text = value
    else:
        nulls = [name for name in needed if record[name] is None]
        if nulls:
            return None, f"field '{nulls[0]}' is null: --template needs a value"
        try:
            text = fmt.format_map(record)
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            return None, f"--template failed: {exc!r}"
    if not text.strip():
        return None, "the text to answer is empty"
    return text, None


def _not_unicode(record: Mapping[str, Any]) -> str | None:
    """The first field whose name or value cannot be written as UTF-8 (a lone surrogate)."""
    for key, value in record.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return key.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object"
