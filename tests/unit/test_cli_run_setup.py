"""``autodemo run``: the setup it records, resumes refused across setups, error numbering,
the help's model specs, and the one answering path shared with ``--via batch-api``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.cli.resume import setup_path
from langchain_autodemo.models import KINDS, SPEC_FORMS

FAKE = "fake:answer=sum"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _write_questions(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "question": f"What is {i} + {10 * i}?"}) + "\n"
            for i in range(1, n + 1)
        )
    )
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())  # unwrap click's box


def _interrupted_run(cli: CliRunner, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """A run whose output lost its last line (as after Ctrl-C): 2 of 3 items done."""
    source = _write_questions(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, *args])
    assert result.exit_code == 0, result.output
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:2]))
    return source, out


def test_run_records_its_setup_beside_the_output(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "4", "-i", "Add."]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(setup_path(out).read_text())
    assert setup_path(out).name == "out.jsonl.meta.json"
    assert meta["setup"] == {
        "model": FAKE, "instructions": "Add.", "mode": "auto_demo", "batch_size": 4,
        "reasoning": True, "restate": "full", "field": "question", "template": None,
        "select": None,
        "demo_pool": None, "prompt": None, "max_tokens": None, "audit": None, "escalate": 0.0,
        "answer_field": "answer",
        "demonstrations": None,
        # every other setting of the record, as it holds it (a new one joins on its own)
        "escalate_below": None, "head_words": 8, "reask_with_answered": False,
        "slot_accuracy": [],
    }  # fmt: skip
    assert meta["command"].startswith("autodemo ")
    # the output itself is unchanged: one record per line, each with its input line
    assert [(r["input_line"], r["answer"]) for r in _records(out)] == [(1, "11"), (2, "22")]


@pytest.mark.parametrize(
    ("args", "changed"),
    [
        (["--model", "fake:answer=const:7"], "model: was 'fake:answer=sum', now 'fake:answer=const:7'"),
        (["--instructions", "Sum them."], "instructions: was 'Answer each question accurately.', "
                                          "now 'Sum them.'"),
        (["--mode", "batch"], "mode: was 'auto_demo', now 'batch'"),
        (["--batch-size", "2"], "batch_size: was 8, now 2"),
        (["--no-reasoning"], "reasoning: was True, now False"),
        (["--template", "Q: {question}"], "template: was None, now 'Q: {question}'"),
        (["--max-tokens", "64"], "max_tokens: was None, now 64"),
        (["--answer-field", "result"], "answer_field: was 'answer', now 'result'"),
        (["--select", "similarity"], "select: was None, now 'similarity'"),
    ],
    ids=["model", "instructions", "mode", "batch-size", "reasoning", "template", "max-tokens",
         "answer-field", "select"],
)  # fmt: skip
def test_run_refuses_to_resume_an_output_of_another_setup(
    cli: CliRunner, tmp_path: Path, args: list[str], changed: str
) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    before = out.read_text()
    for extra in ([], ["--retry-errors"], ["--via", "batch-api"]):
        result = cli.invoke(
            app, ["run", str(source), "-o", str(out), "--model", FAKE, *args, *extra]
        )
        assert result.exit_code == 2, result.output
        message = _flat(result.output)
        assert "was written with another setup" in message and changed in message
        assert "another -o" in message and "--overwrite" in message
        assert out.read_text() == before, "left as it was"
    fresh = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, *args, "--overwrite"]
    )
    assert fresh.exit_code == 0, fresh.output
    assert len(_records(out)) == 3
    resumed = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, *args])
    assert resumed.exit_code == 0 and "Nothing to do" in resumed.output, resumed.output


@pytest.mark.parametrize(
    ("first", "then", "changed"),
    [([], ["--audit", "1"], "audit: was None, now 1.0"),
     (["--audit", "0.5"], [], "audit: was 0.5, now None"),
     (["--audit", "0.5"], ["--audit", "1"], "audit: was 0.5, now 1.0")],
)  # fmt: skip
def test_a_resume_with_another_audit_setting_is_refused(
    cli: CliRunner, tmp_path: Path, first: list[str], then: list[str], changed: str
) -> None:
    source, out = _interrupted_run(cli, tmp_path, "-n", "2", *first)
    before = out.read_text()
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "2",
                              *then])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert changed in _flat(result.output)
    assert out.read_text() == before
    same = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "2",
                            *first])  # fmt: skip
    assert same.exit_code == 0, same.output


def test_a_setup_record_without_audit_resumes_without_audit(cli: CliRunner, tmp_path: Path) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    meta = json.loads(setup_path(out).read_text())
    del meta["setup"]["audit"]  # as an autodemo that did not record it wrote it
    setup_path(out).write_text(json.dumps(meta))
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 0, result.output
    fresh = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "--overwrite",
                             "--audit", "1", "-n", "2"])  # fmt: skip
    assert fresh.exit_code == 0, fresh.output  # --overwrite starts afresh


def test_every_changed_setting_is_named(cli: CliRunner, tmp_path: Path) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "3", "--mode", "batch"]
    )
    assert result.exit_code == 2, result.output
    message = _flat(result.output)
    assert "mode: was 'auto_demo', now 'batch'" in message
    assert "batch_size: was 8, now 3" in message


def test_run_resumes_with_the_same_setup(cli: CliRunner, tmp_path: Path) -> None:
    source, out = _interrupted_run(cli, tmp_path, "-n", "2", "--no-reasoning")
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "2", "--no-reasoning",
              "--max-concurrency", "2", "--no-sort", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Resuming: 2 of 3" in result.output
    assert [r["answer"] for r in _records(out)] == ["11", "22", "33"]


def test_single_mode_ignores_the_batch_size(cli: CliRunner, tmp_path: Path) -> None:
    source, out = _interrupted_run(cli, tmp_path, "--mode", "single", "-n", "4")
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--mode", "single", "-n", "2"]
    )
    assert result.exit_code == 0, result.output


def test_another_demo_pool_content_is_another_setup(cli: CliRunner, tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"question": "What is 5 + 50?", "answer": "55"}\n')
    source, out = _interrupted_run(cli, tmp_path, "--demo-pool", str(pool))
    pool.write_text('{"question": "What is 6 + 60?", "answer": "66"}\n')
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--demo-pool", str(pool)]
    )
    assert result.exit_code == 2, result.output
    assert "demo_pool: was 'sha256:" in _flat(result.output)


def test_an_output_without_a_setup_record_is_resumed_and_recorded(
    cli: CliRunner, tmp_path: Path
) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    setup_path(out).unlink()  # as an older autodemo left it
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "has no record of the settings" in _flat(result.output)
    assert json.loads(setup_path(out).read_text())["setup"]["batch_size"] == 2


def test_a_broken_setup_record_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    setup_path(out).write_text("notes")
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 2 and "not the setup record" in _flat(result.output)
    assert setup_path(out).read_text() == "notes"


def test_a_rejected_run_writes_no_setup_record(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    for args in (["--model", "llamacpp:/no/such/model.gguf"], ["--model", FAKE, "--via",
                                                               "batch-api"]):  # fmt: skip
        result = cli.invoke(app, ["run", str(source), "-o", str(out), *args])
        assert result.exit_code == 2, result.output
        assert not out.exists() and not setup_path(out).exists()


def test_an_error_names_the_input_line_as_its_record_does(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    # line 1 is done, so line 2 is the first item (item 0) of this run's runner
    first = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert first.exit_code == 0
    out.write_text(out.read_text().splitlines()[0] + "\n")
    setup_path(out).unlink()
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", "fake:drop=2 +"])
    assert result.exit_code == 1, result.output
    failed = [r for r in _records(out) if "error" in r]
    assert [r["input_line"] for r in failed] == [2]
    assert failed[0]["error"].startswith("input line 2: "), failed[0]["error"]
    assert "item 0" not in failed[0]["error"] and "attempt(s)" in failed[0]["error"]


@pytest.mark.parametrize("command", ["run", "eval", "serve"])
def test_the_help_lists_every_model_spec_in_full(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "langchain_autodemo.cli", command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert set(SPEC_FORMS) == set(KINDS)
    for kind, (form, meaning) in SPEC_FORMS.items():
        assert kind in result.stdout
        assert form in result.stdout, form
        assert meaning in result.stdout, meaning
    assert "…" not in result.stdout.split("Model specs")[1]


def test_a_setting_only_a_config_gives_is_recorded_and_guards_the_resume(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Settings without a flag of their own (escalate_below, slot_accuracy) come from a
    tuned config; a resume under another value is refused like any other setting."""
    from langchain_autodemo.settings import TunedConfig

    first = TunedConfig(mode="batch", batch_size=2, escalate=0.5, slot_accuracy=(0.9, 0.4))
    then = first.replace(slot_accuracy=(0.4, 0.9))
    first.write(tmp_path / "first.json")
    then.write(tmp_path / "then.json")
    source, out = _interrupted_run(cli, tmp_path, "--config", str(tmp_path / "first.json"))
    assert json.loads(setup_path(out).read_text())["setup"]["slot_accuracy"] == [0.9, 0.4]
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE,
                              "--config", str(tmp_path / "then.json")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "slot_accuracy: was [0.9, 0.4], now [0.4, 0.9]" in _flat(result.output)
    same = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE,
                            "--config", str(tmp_path / "first.json")])  # fmt: skip
    assert same.exit_code == 0, same.output


def test_a_setup_record_from_before_a_setting_existed_reads_as_its_default(
    cli: CliRunner, tmp_path: Path
) -> None:
    source, out = _interrupted_run(cli, tmp_path)
    meta = json.loads(setup_path(out).read_text())
    for name in ("escalate_below", "head_words", "reask_with_answered", "slot_accuracy"):
        del meta["setup"][name]  # as an autodemo that did not record them wrote it
    setup_path(out).write_text(json.dumps(meta))
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 0, result.output
    assert "Resuming: 2 of 3" in result.output
