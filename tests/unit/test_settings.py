"""The settings record: every answer-shaping setting declared once, and reaching every
record that carries settings, the runner and ``tuned.json`` without being declared again.

The table :data:`OTHER_VALUES` gives each field a value other than its default; a field
added to :class:`Settings` without one fails :func:`test_every_field_has_an_example`, and
from there every test below checks it travels everywhere on its own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_autodemo.cli.evaluate import EvalOptions
from langchain_autodemo.cli.run import RunOptions
from langchain_autodemo.engine import EngineSettings
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.bootstrap import BootstrapSettings
from langchain_autodemo.prompts import Mode, Restate
from langchain_autodemo.ray_data import RayJobConfig
from langchain_autodemo.runnable import AutoDemoBatchRunnable
from langchain_autodemo.settings import (
    Settings,
    TunedConfig,
    explicit_flags,
    settings_of,
)
from langchain_autodemo.testing import ScriptedChatModel

#: A value other than the default for every field (grouping left out where a runner is
#: built: it would build a Chroma selector; it has its own test).
OTHER_VALUES: dict[str, Any] = {
    "mode": Mode.BATCH,
    "batch_size": 5,
    "grouping": "similarity",
    "reasoning": False,
    "instructions": "Label the sentiment.",
    "demonstrations": (("Is 2 even?", "yes"),),
    "restate": Restate.HEAD,
    "escalate": 0.25,
    "escalate_below": 0.4,
    "head_words": 6,
    "reask_with_answered": True,
    "slot_accuracy": (0.9, 0.5),
}

#: A value each field's rule refuses.
BAD_VALUES: dict[str, Any] = {
    "mode": "packed",
    "batch_size": 0,
    "grouping": "kmeans",
    "reasoning": "no",
    "instructions": 3,
    "demonstrations": [("only a question",)],
    "restate": "tail",
    "escalate": 1.5,
    "escalate_below": -0.1,
    "head_words": True,
    "reask_with_answered": 1,
    "slot_accuracy": (0.9, 1.2),
}

#: Every record that carries the settings, and the defaults it may set differently (the
#: Ray job says what its model is asked to do when no config does).
RECORDS: dict[type[Settings], dict[str, Any]] = {
    EngineSettings: {},
    TunedConfig: {},
    RunOptions: {},
    EvalOptions: {},
    RayJobConfig: {"instructions": "Answer each question accurately."},
    BootstrapSettings: {},
}


#: Fields a record needs beyond the settings.
REQUIRED: dict[type[Settings], dict[str, Any]] = {
    RunOptions: {"input": Path("in.jsonl"), "output": Path("out.jsonl")},
}


#: Values a record's own rules narrow (the bootstrap asks alone or with Auto-Demo, and reasons).
NARROWED: dict[type[Settings], dict[str, Any]] = {
    BootstrapSettings: {"mode": Mode.SINGLE, "reasoning": True},
}


def _make(record: type[Settings], **fields: Any) -> Settings:
    return record(**REQUIRED.get(record, {}), **fields)


def _other(**leave_out: bool) -> Settings:
    return Settings(**{k: v for k, v in OTHER_VALUES.items() if not leave_out.get(k)})


def test_every_field_has_an_example() -> None:
    assert set(OTHER_VALUES) == set(Settings.field_names())
    assert set(BAD_VALUES) == set(Settings.field_names())
    defaults = Settings()
    for name, value in OTHER_VALUES.items():
        assert getattr(defaults, name) != value, name


@pytest.mark.parametrize("record", list(RECORDS), ids=lambda c: c.__name__)
def test_every_record_extends_the_one_record_without_declaring_a_field_again(
    record: type[Settings],
) -> None:
    assert issubclass(record, Settings)
    own = record.__dict__.get("__annotations__", {})
    redeclared = {name for name in Settings.field_names() if name in own}
    assert redeclared == set(RECORDS[record])
    for f in dataclasses.fields(record):
        if f.name in Settings.field_names():
            expected = RECORDS[record].get(f.name, getattr(Settings, f.name))
            assert f.default == expected, (record.__name__, f.name)


@pytest.mark.parametrize("record", list(RECORDS), ids=lambda c: c.__name__)
def test_every_setting_travels_through_every_record(record: type[Settings]) -> None:
    other = _other().replace(**NARROWED.get(record, {}))
    made = _make(record, **other.as_dict())
    assert settings_of(made) == other
    assert made.settings == other
    # a record merged from another takes all of its settings
    merged = _make(record).merged(other)
    assert merged.settings == other


@pytest.mark.parametrize("name", list(OTHER_VALUES))
@pytest.mark.parametrize("record", list(RECORDS), ids=lambda c: c.__name__)
def test_every_rule_holds_in_every_record(record: type[Settings], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        _make(record, **{name: BAD_VALUES[name]})


def test_a_runner_built_from_a_record_gives_the_record_back() -> None:
    settings = _other(grouping=True)
    runner = AutoDemoBatchRunnable.from_settings(ScriptedChatModel(), settings)
    assert settings_of(runner.settings) == settings
    # a keyword override wins over the record, and only for its field
    runner = AutoDemoBatchRunnable.from_settings(ScriptedChatModel(), settings, batch_size=3)
    assert settings_of(runner.settings) == settings.replace(batch_size=3)


def test_a_tuned_file_round_trips_every_setting(tmp_path: Path) -> None:
    config = TunedConfig(**OTHER_VALUES, tuned_on={"dataset": "sst2"})
    read = TunedConfig.read(config.write(tmp_path / "tuned.json"))
    assert read.settings == _other()
    assert read.tuned_on == {"dataset": "sst2"}
    written = json.loads((tmp_path / "tuned.json").read_text())
    assert set(written) == {"format", *Settings.field_names(), "tuned_on"}


def test_a_record_round_trips_through_json() -> None:
    assert Settings.from_json(_other().to_json()) == _other()
    assert json.loads(_other().to_json())["demonstrations"] == [["Is 2 even?", "yes"]]


@pytest.mark.parametrize("name", list(OTHER_VALUES))
def test_a_file_with_a_bad_field_names_the_file_and_the_field(tmp_path: Path, name: str) -> None:
    data = {"format": 1, "mode": "batch", name: BAD_VALUES[name]}
    if name == "demonstrations":
        data[name] = [["only a question"]]
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError) as caught:
        TunedConfig.read(path)
    assert str(caught.value).startswith(str(path))
    assert name in str(caught.value)


def test_a_file_is_read_strictly_not_coerced(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    for text, said in [
        ({"mode": "batch", "reasoning": "false"}, "reasoning must be true or false"),
        ({"mode": "batch", "batch_size": "8"}, "batch_size must be a positive integer"),
        ({"mode": "batch", "batch_sise": 8}, "batch_sise is not a known field"),
        ({"batch_size": 8}, "mode is required"),
        ({"format": 2, "mode": "batch"}, "format must be 1"),
    ]:
        path.write_text(json.dumps(text))
        with pytest.raises(ConfigurationError, match=said):
            TunedConfig.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="expected a JSON object"):
        TunedConfig.read(path)


def test_one_positive_integer_rule_numpy_integers_count_booleans_do_not() -> None:
    assert Settings(batch_size=np.int64(4)).batch_size == 4
    assert type(Settings(batch_size=np.int64(4)).batch_size) is int
    for bad in (True, 2.0, "4", -1):
        with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
            Settings(batch_size=bad)


def test_a_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().batch_size = 3  # type: ignore[misc]


def test_only_flags_given_explicitly_win_over_a_file() -> None:
    flags = Settings().as_dict() | {"batch_size": 4, "restate": "head"}
    assert explicit_flags(flags) == {"batch_size": 4, "restate": "head"}
    # a command's own default counts as not given
    assert explicit_flags({"instructions": "Go."}, instructions="Go.") == {}
    assert explicit_flags({"demonstrations": [["q", "a"]]}) == {"demonstrations": [["q", "a"]]}
