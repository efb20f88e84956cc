"""``tuned.json`` is checked field by field when it is loaded: strict types, a format
version, and an error naming the file and the field, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.cli import app
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.testing import ScriptedAutoDemoModel
from langchain_autodemo.tuning import TunedConfig

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "mode": "batch",
    "batch_size": 4,
    "grouping": None,
    "reasoning": False,
    "instructions": "Add.",
    "demonstrations": [["1 + 1?", "2"]],
    "restate": "full",
    "tuned_on": {},
}

_MISSING = object()


def _write(tmp_path: Path, **changes: object) -> Path:
    data = {**GOOD, **changes}
    for key in [k for k, v in changes.items() if v is _MISSING]:
        del data[key]
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reasoning": "false"}, "reasoning"),
        ({"reasoning": 0}, "reasoning"),
        ({"instructions": 123}, "instructions"),
        ({"demonstrations": ["qa"]}, "demonstrations[0]"),
        ({"demonstrations": [[None, None]]}, "demonstrations[0]"),
        ({"demonstrations": [["q", "a", "b"]]}, "demonstrations[0]"),
        ({"demonstrations": [["", "a"]]}, "demonstrations[0]"),
        ({"demonstrations": "qa"}, "demonstrations"),
        ({"mode": _MISSING}, "mode"),
        ({"mode": "fast"}, "mode"),
        ({"batch_size": "4"}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"grouping": "random"}, "grouping"),
        ({"restate": "tail"}, "restate"),
        ({"tuned_on": []}, "tuned_on"),
        ({"colour": 1}, "colour"),
        ({"format": 2}, "format"),
        ({"format": "1"}, "format"),
    ],
)
def test_a_bad_field_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigurationError) as caught:
        TunedConfig.read(path)
    message = str(caught.value)
    assert str(path) in message and f"{field} " in message, message
    with pytest.raises(ConfigurationError):  # and so does the runner's loader
        AutoDemoBatchRunnable.from_config(path, ScriptedAutoDemoModel())


def test_the_file_records_its_format_and_one_without_it_is_version_1(tmp_path: Path) -> None:
    config = TunedConfig("auto_demo", 8, None, False, "Add.", (("1 + 1?", "2"),))
    path = config.write(tmp_path / "tuned.json")
    assert json.loads(path.read_text())["format"] == TunedConfig.FORMAT == 1
    assert TunedConfig.read(path) == config
    data = json.loads(path.read_text())
    del data["format"]
    path.write_text(json.dumps(data))
    assert TunedConfig.read(path) == config


def test_the_committed_tune_results_still_load() -> None:
    files = sorted(ROOT.glob("docs/results/tune-*/tuned.json"))
    assert files
    for path in files:
        config = TunedConfig.read(path)
        assert config.mode in ("single", "batch", "auto_demo")
        assert all(q and a for q, a in config.demonstrations)


def test_run_refuses_a_bad_config_before_recording_or_calling(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"question": "What is 1 + 1?"}\n')
    config = _write(tmp_path, instructions=123)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "-m", "fake:answer=sum", "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "instructions" in result.output and "tuned.json" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "out.jsonl.meta.json").exists()
    # The fixed config then runs (nothing of the bad one was recorded).
    config.write_text(json.dumps(GOOD))
    fixed = CliRunner().invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
