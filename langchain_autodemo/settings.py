"""The settings record: every setting that shapes what a packed call asks, declared once.

:class:`Settings` is what a runner is built from (:meth:`AutoDemoBatchRunnable.from_settings
<langchain_autodemo.AutoDemoBatchRunnable.from_settings>`), what ``tuned.json`` holds
(:class:`TunedConfig` is a :class:`Settings` plus the tuning
evidence), and what every entry point extends rather than re-declares: the engine's
:class:`~langchain_autodemo.engine.EngineSettings`, ``autodemo run``'s ``RunOptions``, the
Ray job's ``RayJobConfig``. A new setting is a field here, with its default and its rule in
:data:`_RULES`; the JSON form and the strict file check follow from the field's type.

A record is frozen and checked when made: a bad value raises
:class:`~langchain_autodemo.errors.ConfigurationError` naming the field.

Example:
    >>> s = Settings(mode="batch", batch_size=4)
    >>> s.mode, s.batch_size, s.reasoning
    (<Mode.BATCH: 'batch'>, 4, True)
    >>> Settings.from_json(s.to_json()) == s
    True
    >>> Settings(batch_size=0)
    Traceback (most recent call last):
    ...
    langchain_autodemo.errors.ConfigurationError: batch_size must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from langchain_autodemo._validation import require_positive_int, require_share
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.planning import Demonstration
from langchain_autodemo.prompts import DEFAULT_HEAD_WORDS, Mode, Restate

__all__ = [
    "GROUPINGS",
    "Settings",
    "TunedConfig",
    "explicit_flags",
    "field_errors",
    "settings_of",
    "setup_fields",
]

GROUPINGS = ("similarity", "neighbors")
"""The groupings a record can name: a runner builds its ``SimilarityBatchSelector`` (on
the package's offline embeddings) with that grouping."""

_S = TypeVar("_S", bound="Settings")


@dataclass(frozen=True)
class Settings:
    """What shapes a packed call: how inputs are packed, what the prompt says, which
    answers are asked again. Frozen; each field checked when made (:data:`_RULES`).

    The first eight fields keep the positional order ``tuned.json``'s class always had.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    mode: Mode = Mode.AUTO_DEMO
    """``auto_demo`` (restate, then answer), ``batch`` (answer only) or ``single``."""
    batch_size: int = 8
    """Inputs per packed call (``single`` asks one at a time whatever it says)."""
    grouping: Literal["similarity", "neighbors"] | None = None
    """``None``: inputs in the order given; ``"similarity"``: similar inputs together
    (``"neighbors"``: each call around one input and its nearest neighbours)."""
    reasoning: bool = True
    """Reasoning before each final answer; ``False``: the final answer alone (terse)."""
    instructions: str | None = None
    """The task, said once at the top of every call."""
    demonstrations: tuple[tuple[str, str], ...] = ()
    """Solved (question, answer) exemplars shown before every call."""
    restate: Restate = Restate.FULL
    """What ``auto_demo`` completions copy of each question (see :class:`Restate`)."""
    escalate: float = 0.0
    """Selective escalation: the share of each packed call's answers, least confident
    first, asked again alone (single mode, the same context); 0 turns it off (see
    :func:`~langchain_autodemo.planning.escalation_picks`)."""
    escalate_below: float | None = None
    """Also escalate every packed answer whose confidence is below this."""
    head_words: int = DEFAULT_HEAD_WORDS
    """Words of a ``head`` restatement."""
    reask_with_answered: bool = False
    """Re-ask a garbled call's remaining items after the items that call did answer,
    shown as solved demonstrations (the completion "continues" from them instead of
    starting over). Off by default: adopted only where it measures better."""
    slot_accuracy: tuple[float, ...] = ()
    """Packed accuracy by slot (position in the call, first slot first), as ``autodemo
    tune`` measured it on its sample: where the model sends no log-probabilities, escalation
    asks again the answers of the least accurate slots first (empty: the latest slots
    first; a slot past the list counts as the last one measured)."""

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():  # frozen: the checked value is set once, here
            object.__setattr__(self, name, rule(name, getattr(self, name)))

    # -- one record from another -----------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Only this record's :class:`Settings` fields (a subclass drops its own)."""
        return settings_of(self)

    def replace(self: _S, **changes: Any) -> _S:
        """A copy with ``changes`` applied (checked like a new record)."""
        return dataclasses.replace(self, **changes)

    def merged(self: _S, other: Settings, *, keep: Mapping[str, Any] = {}) -> _S:  # noqa: B006
        """This record with ``other``'s :class:`Settings` fields, except those in
        ``keep`` (name -> value), which win (a flag given explicitly over a file)."""
        return self.replace(**{**settings_of(other).as_dict(), **keep})

    # -- JSON ------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Field -> value, plain Python (enums as their values, pairs as lists)."""
        return _adapter(type(self)).dump_python(self, mode="json")  # type: ignore[no-any-return]

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls: type[_S], text: str | bytes, *, source: str = "settings") -> _S:
        """A record from JSON, strictly typed (a JSON boolean for a boolean, an integer
        for an integer; nothing coerced): an error names ``source`` and each bad field."""
        try:
            return _adapter(cls).validate_json(text, strict=True)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise ConfigurationError(f"{source}: {field_errors(exc, cls)}") from None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def settings_of(record: Settings) -> Settings:
    """The :class:`Settings` part of ``record`` (a ``TunedConfig``, ``RunOptions``, ...)."""
    if type(record) is Settings:
        return record
    return Settings(**{name: getattr(record, name) for name in Settings.field_names()})


def setup_fields(record: Settings, *, listed: Iterable[str]) -> dict[str, Any]:
    """The settings of ``record`` that a job's setup record (what a resume must share)
    does not list under names or in forms of its own, as JSON values.

    A field added to :class:`Settings` joins every setup record through this, and a
    record written before it existed reads as its default
    (``setup_fields(Settings(), listed=...)``).

    Example:
        >>> sorted(setup_fields(Settings(), listed=Settings.field_names()[1:]))
        ['mode']
    """
    skip = set(listed)
    values = settings_of(record).as_dict()
    return {name: value for name, value in values.items() if name not in skip}


def explicit_flags(flags: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """The settings among ``flags`` given explicitly: those whose value is not the
    default (the record's, or a command's own in ``defaults``). They win over a config
    file's; a flag at its default leaves the file's setting alone.

    Example:
        >>> explicit_flags({"batch_size": 8, "mode": "batch"})
        {'mode': 'batch'}
    """
    return {
        name: value
        for name, value in flags.items()
        if _plain(value) != _plain(defaults.get(name, getattr(Settings, name)))
    }


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (pairs as lists, enums as their values), to compare."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


# -- the rules ----------------------------------------------------------------------------


def _enum(kind: type[Mode] | type[Restate]) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(m.value for m in kind)
            raise ConfigurationError(
                f"unknown {name} {value!r}; choose one of: {choices}"
            ) from None

    return check


def _grouping(name: str, value: Any) -> str | None:
    if value is None or value in GROUPINGS:
        return value  # type: ignore[no-any-return]
    choices = " or ".join(repr(g) for g in GROUPINGS)
    raise ConfigurationError(f"{name} must be None or {choices}, got {value!r}")


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string or None, got {value!r:.60}")
    return value  # type: ignore[no-any-return]


def _demonstrations(name: str, value: Any) -> tuple[Demonstration, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigurationError(f"{name} must be a list of (question, answer) pairs")
    checked = []
    for i, pair in enumerate(value):
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(part, str) and part.strip() for part in pair)
        ):
            raise ConfigurationError(
                f"{name}[{i}] must be a (question, answer) pair of non-empty strings"
            )
        checked.append((pair[0], pair[1]))
    return tuple(checked)


def _share_or_none(name: str, value: Any) -> float | None:
    return None if value is None else require_share(name, value)


def _shares(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigurationError(f"{name} must be a list of numbers from 0 to 1")
    return tuple(require_share(f"{name}[{i}]", share) for i, share in enumerate(value))


_RULES: dict[str, Callable[[str, Any], Any]] = {
    "mode": _enum(Mode),
    "batch_size": require_positive_int,
    "grouping": _grouping,
    "reasoning": _flag,
    "instructions": _text,
    "demonstrations": _demonstrations,
    "restate": _enum(Restate),
    "escalate": require_share,
    "escalate_below": _share_or_none,
    "head_words": require_positive_int,
    "reask_with_answered": _flag,
    "slot_accuracy": _shares,
}
"""Field -> its check ``(name, value) -> value`` (normalised) or ConfigurationError."""


# -- JSON through pydantic ----------------------------------------------------------------


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(kind: type[Settings]) -> TypeAdapter[Any]:
    """The record's pydantic adapter (made once per class: building one is slow)."""
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def field_errors(error: ValidationError, kind: type[Settings] = Settings) -> str:
    """One phrase per bad field of a record read from JSON, naming it
    (``demonstrations[2]`` for one pair)."""
    known = ", ".join(sorted(kind.field_names()))
    phrases: dict[str, str] = {}
    for problem in error.errors():
        location = problem["loc"]
        if not location:  # a rule of __post_init__: its message names the field
            message = str(problem.get("ctx", {}).get("error", problem["msg"]))
            phrases.setdefault(message, message)
            continue
        name = str(location[0])
        pair = name == "demonstrations" and len(location) > 1
        where = f"{name}[{location[1]}]" if pair else name
        if problem["type"] == "missing":
            rule = "is required"
        elif problem["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            rule = f"is not a known field; known: {known}"
        elif pair:
            rule = "must be a [question, answer] pair of non-empty strings"
        else:
            rule = f"{_RULE_TEXT.get(name, problem['msg'])}, got {problem['input']!r:.60}"
        phrases.setdefault(where, f"{where} {rule}")
    return "; ".join(phrases.values())


_RULE_TEXT = {
    "mode": "must be one of " + ", ".join(repr(m.value) for m in Mode),
    "batch_size": "must be a positive integer",
    "grouping": "must be null or " + " or ".join(repr(g) for g in GROUPINGS),
    "reasoning": "must be true or false (a JSON boolean)",
    "reask_with_answered": "must be true or false (a JSON boolean)",
    "instructions": "must be a string or null",
    "demonstrations": "must be a list of [question, answer] pairs of non-empty strings",
    "restate": "must be " + " or ".join(repr(r.value) for r in Restate),
    "escalate": "must be a number from 0 to 1",
    "escalate_below": "must be null or a number from 0 to 1",
    "head_words": "must be a positive integer",
    "slot_accuracy": "must be a list of numbers from 0 to 1",
}


# -- the record as a file -----------------------------------------------------------------


@dataclass(frozen=True)
class TunedConfig(Settings):
    """A settings record as ``autodemo tune`` writes it (``tuned.json``) and runners load
    it (:meth:`AutoDemoBatchRunnable.from_config
    <langchain_autodemo.AutoDemoBatchRunnable.from_config>`, ``autodemo run --config``),
    with the evidence the choice rests on."""

    tuned_on: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    """What the choice rests on: dataset, items, model, accuracy and cost against single."""

    FORMAT: ClassVar[int] = 1
    """Version of the file's layout, written as its ``format`` field; a file without one
    (written before it was recorded) is version 1."""

    @property
    def method(self) -> str:
        return self.mode.value + (f"+{self.grouping}" if self.grouping else "")

    def runner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~langchain_autodemo.AutoDemoBatchRunnable` (the
        similarity selector is built by ``from_settings``, which owns the embeddings)."""
        return {name: getattr(self, name) for name in Settings.field_names() if name != "grouping"}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        text = json.dumps({"format": self.FORMAT, **self.as_dict()}, indent=2, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> TunedConfig:
        """The configuration in ``path``, every field checked (:meth:`Settings.from_json`).

        The file may be hand-edited or come from elsewhere, and it decides how every item
        is asked: a value of the wrong type is refused here, naming the file and the
        field, rather than coerced (``"false"`` is not ``False``) or failing later, after
        a run recorded it.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path}: expected a JSON object")
        problems = []
        version = data.pop("format", cls.FORMAT)
        if type(version) is not int or version != cls.FORMAT:
            problems.append(
                f"format must be {cls.FORMAT} (a file of a newer autodemo?), got {version!r:.60}"
            )
        if "mode" not in data:  # the one choice a tuned file must make
            problems.append("mode is required")
        try:
            config = cls.from_json(json.dumps(data), source=str(path))
        except ConfigurationError as exc:
            problems.append(str(exc).removeprefix(f"{path}: "))
        if problems:
            raise ConfigurationError(f"{path}: " + "; ".join(problems))
        return config
