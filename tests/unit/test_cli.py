"""``autodemo run`` / ``autodemo eval`` in-process, on the scripted fake model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app

FAKE = "fake:answer=sum"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _write_questions(path: Path, n: int, **extra) -> Path:
    lines = [
        json.dumps({"id": i, "question": f"What is {i} + {10 * i}?", **extra})
        for i in range(1, n + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_answers_every_record_in_input_order(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 11)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(
        app,
        [
            "run",
            str(source),
            "-o",
            str(out),
            "--model",
            FAKE,
            "--batch-size",
            "4",
            "--instructions",
            "Add the numbers.",
        ],
    )
    assert result.exit_code == 0, result.output
    records = _records(out)
    assert [r["input_line"] for r in records] == list(range(1, 12))
    assert [r["answer"] for r in records] == [str(11 * i) for i in range(1, 12)]
    assert records[0]["id"] == 1 and records[0]["question"] == "What is 1 + 10?"
    assert "Items: 11/11" in result.output and "calls: 3" in result.output
    assert "tokens in/out" in result.output and "wall time" in result.output


@pytest.mark.parametrize("mode", ["auto_demo", "batch", "single"])
def test_run_modes(cli: CliRunner, tmp_path: Path, mode: str) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--mode", mode, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert [r["answer"] for r in _records(out)] == [str(11 * i) for i in range(1, 6)]
    assert f"calls: {5 if mode == 'single' else 1}" in result.output


def test_run_template_and_field(cli: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "pairs.jsonl"
    source.write_text('{"a": 2, "b": 3}\n{"a": 5, "b": 7}\n')
    out = tmp_path / "out.jsonl"
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--template", "Add {a} and {b}."]
    )
    assert result.exit_code == 0, result.output
    assert [r["answer"] for r in _records(out)] == ["5", "12"]
    text = tmp_path / "text.jsonl"
    text.write_text('{"prompt": "1 plus 1"}\n')
    result = cli.invoke(
        app,
        ["run", str(text), "-o", str(tmp_path / "o2.jsonl"), "--model", FAKE, "--field", "prompt"],
    )
    assert result.exit_code == 0, result.output
    assert _records(tmp_path / "o2.jsonl")[0]["answer"] == "2"


def test_run_keeps_an_existing_answer_field(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 2, answer="gold")
    out = tmp_path / "out.jsonl"
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 0, result.output
    assert "model_answer" in result.output
    assert [(r["answer"], r["model_answer"]) for r in _records(out)] == [
        ("gold", "11"),
        ("gold", "22"),
    ]


def test_run_writes_explicit_errors_and_exits_1(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", "fake:drop=2 +"])
    records = _records(out)
    assert len(records) == 3
    for record in records:
        assert ("answer" in record) != ("error" in record)  # one or the other, never neither
    assert ["error" in record for record in records] == [False, True, False]
    assert result.exit_code == 1, result.output
    assert "1 of 3 items ended in an error" in result.output
    assert [r["input_line"] for r in records] == [1, 2, 3], "complete: sorted all the same"


def test_run_exit_status_counts_errors_left_by_an_earlier_run(
    cli: CliRunner, tmp_path: Path
) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    out.write_text(
        json.dumps({"input_line": 2, "id": 2, "question": "What is 2 + 20?", "error": "x"}) + "\n"
    )
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 1, result.output
    assert "(2 this run, 0 errors)" in result.output
    assert "1 of 3 items ended in an error" in result.output
    again = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert again.exit_code == 1 and "Nothing to do" in again.output
    assert "1 of 3 items ended in an error" in again.output
    retried = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--retry-errors"]
    )
    assert retried.exit_code == 0, retried.output
    assert [r.get("answer") for r in _records(out)] == ["11", "22", "33"]


def test_an_input_records_own_error_field_is_not_a_failure(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 3, error=None)
    out = tmp_path / "out.jsonl"
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 0, result.output
    assert "failures go to 'model_error'" in result.output
    records = _records(out)
    assert [(r["answer"], r["error"]) for r in records] == [
        ("11", None),
        ("22", None),
        ("33", None),
    ]
    again = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "--retry-errors"])
    assert again.exit_code == 0 and "Nothing to do" in again.output, again.output
    assert _records(out) == records, "nothing re-asked"
    failing = cli.invoke(
        app, ["run", str(source), "-o", str(tmp_path / "f.jsonl"), "--model", "fake:drop=2 +"]
    )
    failed = [r for r in _records(tmp_path / "f.jsonl") if "model_error" in r]
    assert failed and all(r["error"] is None for r in failed)
    assert failing.exit_code == 1 and f"{len(failed)} of 3 items ended" in failing.output


@pytest.mark.parametrize(
    "foreign",
    [
        '{"something": 1}\n',  # one foreign line: once taken for a torn write and replaced
        '{"something": 1}',
        "just some notes",
        '{"input_line": 1, "id": 1, "question": "What is 1 + 10?"}\n{"note": "mine"}',
        '{"input_line": 1, "id": 7, "question": "What is 7 + 70?", "answer": "77"}\n',
        '{"input_line": 9, "id": 9, "question": "What is 9 + 90?", "answer": "99"}\n',
    ],
    ids=["one-line", "one-line-unterminated", "text", "foreign-tail", "other-input", "stray"],
)
def test_run_never_touches_an_output_it_did_not_write(
    cli: CliRunner, tmp_path: Path, foreign: str
) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    out.write_text(foreign)
    for extra in ([], ["--retry-errors"], ["--no-sort"]):
        result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, *extra])
        assert result.exit_code == 2, result.output
        assert "another -o, or --overwrite" in result.output
        assert out.read_text() == foreign, "left exactly as it was"
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert [r["answer"] for r in _records(out)] == ["11", "22"]


def test_run_resumes_and_skips_finished_items(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    out.write_text(
        json.dumps({"id": 2, "question": "What is 2 + 20?", "input_line": 2, "answer": "kept"})
        + "\n"
        + '{"input_line": 5, "id": 5, "question": "torn'  # the start of a line of ours
    )
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert result.exit_code == 0, result.output
    assert "Resuming: 1 of 6" in result.output
    records = _records(out)
    assert [r["input_line"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[1]["answer"] == "kept", "a finished item is never asked again"
    again = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE])
    assert again.exit_code == 0 and "Nothing to do" in again.output
    assert _records(out) == records


def test_run_retry_errors(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    out.write_text(
        '{"input_line": 1, "id": 1, "question": "What is 1 + 10?", "error": "item 0: missing"}\n'
    )
    result = cli.invoke(
        app, ["run", str(source), "-o", str(out), "--model", FAKE, "--retry-errors"]
    )
    assert result.exit_code == 0, result.output
    assert [r.get("answer") for r in _records(out)] == ["11", "22"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", [], "input file not found"),
        ("malformed", [], "in.jsonl:3: malformed JSON"),
        ("nofield", [], "in.jsonl:2: record lacks field(s) question"),
        ("ok", ["--model", "gpt-9000"], "unknown model spec 'gpt-9000'"),
        ("ok", ["--model", "llamacpp:/no/such/model.gguf"], "make models"),
        ("ok", ["--model", "openai-compatible:localhost"], "needs an http(s) URL"),
        ("ok", ["--mode", "turbo"], "'turbo' is not one of 'auto_demo', 'batch', 'single'"),
        ("ok", ["--select", "random"], "unknown --select 'random'"),
        ("ok", ["--template", "no fields"], "--template names no field"),
        ("linekey", [], "in.jsonl:1: record has an 'input_line' field"),
        ("foreign", [], "not an autodemo output line"),
        ("same", [], "must not be the input file"),
    ],
)
def test_run_bad_input_is_a_clear_error(
    cli: CliRunner, tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    source = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    if setup != "missing":
        _write_questions(source, 2)
    if setup == "malformed":
        source.write_text(source.read_text() + "{oops\n")
    if setup == "nofield":
        source.write_text('{"question": "1+1"}\n{"text": "2+2"}\n')
    if setup == "linekey":
        source.write_text('{"question": "1+1", "input_line": 4}\n')
    if setup == "foreign":
        out.write_text('{"something": 1}\n{"else": 2}\n')
    if setup == "same":
        out = source
    result = cli.invoke(app, ["run", str(source), "-o", str(out), "--model", FAKE, *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())  # unwrap click's box
    assert "Traceback" not in result.output
    if setup not in ("foreign", "same"):
        assert not out.exists(), "nothing is written when the input is rejected"


def test_eval_on_fake_model_writes_report(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = cli.invoke(
        app,
        [
            "eval",
            "--dataset",
            "gsm8k",
            "--limit",
            "6",
            "--methods",
            "single,batch,auto_demo",
            "--batch-sizes",
            "2,4",
            "--model",
            FAKE,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["batch_size"]) for r in summary["results"]] == [
        ("single", 1),
        ("batch", 2),
        ("batch", 4),
        ("auto_demo", 2),
        ("auto_demo", 4),
    ]
    assert all(r["n"] == 6 for r in summary["results"])
    assert summary["meta"]["dataset"] == "gsm8k" and summary["meta"]["items"] == 6
    assert (out / "accuracy.png").exists() and (out / "tokens_per_item.png").exists()
    assert "| auto_demo | 4 |" in (out / "results.md").read_text()
    assert "| method | N | accuracy |" in result.output


def test_eval_dataset_path_numeric(cli: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"{i} + {i}?", "answer": f"#### {2 * i}"}) + "\n"
            for i in range(1, 5)
        )
    )
    out = tmp_path / "r"
    result = cli.invoke(
        app,
        [
            "eval",
            "--dataset",
            str(data),
            "--methods",
            "auto_demo",
            "--batch-sizes",
            "4",
            "--model",
            FAKE,
            "--out",
            str(out),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "results.json").read_text())["results"]
    assert row["accuracy"] == 1.0 and row["calls"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "squad"], "unknown dataset 'squad'"),
        (["--dataset", "missing/file.jsonl"], "dataset file not found"),
        (["--methods", "auto_demo+magic"], "unknown grouping"),
        (["--batch-sizes", "4,x"], "batch sizes must be positive integers"),
        (["--model", "anthropic:claude"], "unknown model spec"),
        (["--task", "regression", "--dataset", "gsm8k"], "unknown --task"),
    ],
)
def test_eval_bad_input_is_a_clear_error(
    cli: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["eval", "--limit", "2", "--out", str(tmp_path / "r")]
    if "--model" not in args:
        base += ["--model", FAKE]
    result = cli.invoke(app, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_run_with_similarity_selection_and_demo_pool(cli: CliRunner, tmp_path: Path) -> None:
    source = _write_questions(tmp_path / "in.jsonl", 6)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "The answer is 2."}) + "\n")
    for extra in (["--select", "similarity"], ["--demo-pool", str(pool)]):
        out = tmp_path / f"out{len(extra[1])}.jsonl"
        result = cli.invoke(
            app, ["run", str(source), "-o", str(out), "--model", FAKE, "--batch-size", "3", *extra]
        )
        assert result.exit_code == 0, result.output
        assert [r["answer"] for r in _records(out)] == [str(11 * i) for i in range(1, 7)]


def test_importing_the_cli_leaves_its_host_alone() -> None:
    """A library must not change the environment or logging of whoever imports it."""
    script = """
import json, logging, os
before_env = dict(os.environ)
names = ("httpx", "httpx2", "chromadb", "")
before = {name: logging.getLogger(name).level for name in names}
import langchain_autodemo.cli
from langchain_autodemo.cli import app
import langchain_autodemo.cli.commands
print(json.dumps({
    "env": {k: v for k, v in os.environ.items() if before_env.get(k) != v},
    "gone": sorted(set(before_env) - set(os.environ)),
    "levels": {n: (before[n], logging.getLogger(n).level) for n in names
               if logging.getLogger(n).level != before[n]},
}))
"""
    env = {k: v for k, v in os.environ.items() if k != "ANONYMIZED_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"env": {}, "gone": [], "levels": {}}


def test_a_missing_cli_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from langchain_autodemo.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tqdm" else real(name, *a)
    )
    with pytest.raises(SystemExit) as stopped:
        main()
    message = str(stopped.value.code)
    assert "tqdm is not installed" in message
    assert "pip install 'langchain-autodemo[cli]'" in message


@pytest.mark.parametrize("command", ["run", "serve"])
def test_both_commands_check_the_mode_against_the_one_enum(cli: CliRunner, command: str) -> None:
    args = ["in.jsonl", "-o", "out.jsonl"] if command == "run" else ["-i", "Add."]
    result = cli.invoke(app, [command, *args, "--mode", "turbo", "--model", "llamacpp:smollm2"])
    assert result.exit_code == 2, result.output
    unwrapped = " ".join(result.output.replace("│", " ").split())
    assert "'turbo' is not one of 'auto_demo', 'batch', 'single'" in unwrapped


def test_eval_resume_runs_only_what_is_missing(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--limit", "4", "--model", FAKE, "--out", str(out)]
    first = cli.invoke(app, [*common, "--methods", "single,auto_demo", "--batch-sizes", "2"])
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())
    again = cli.invoke(
        app, [*common, "--methods", "single,auto_demo", "--batch-sizes", "2,4", "--resume"]
    )
    assert again.exit_code == 0, again.output
    assert "2 earlier results kept" in again.output
    after = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["batch_size"]) for r in after["results"]] == [
        ("single", 1), ("auto_demo", 2), ("auto_demo", 4),
    ]  # fmt: skip
    assert after["results"][:2] == before["results"][:2]  # kept as measured, not re-run
    assert after["meta"]["earlier_commands"] == [before["meta"]["command"]]
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 12
    nothing = cli.invoke(app, [*common, "--methods", "single", "--resume"])
    assert nothing.exit_code == 0 and "Nothing new to run" in nothing.output
    one = cli.invoke(app, [*common, "--methods", "batch", "--batch-sizes", "3", "--resume"])
    assert one.exit_code == 0, one.output
    meta = json.loads((out / "results.json").read_text())["meta"]
    # the meta describes the whole report, not only the last command's part of it
    assert meta["methods"] == ["single", "auto_demo", "batch"]
    assert meta["batch_sizes"] == [2, 3, 4]


def test_eval_rerun_replaces_only_the_chosen_rows(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--limit", "4", "--out", str(out)]
    first = cli.invoke(app, [*common, "--model", FAKE, "--methods", "single,auto_demo",
                             "--batch-sizes", "2"])  # fmt: skip
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())["results"]
    args = [*common, "--methods", "auto_demo", "--batch-sizes", "2", "--resume", "--rerun"]
    again = cli.invoke(app, [*args, "--model", FAKE])
    assert again.exit_code == 0, again.output
    assert "1 earlier results kept, 1 to measure again" in again.output
    assert "auto_demo N=2: accuracy" in again.output
    after = json.loads((out / "results.json").read_text())["results"]
    assert [(r["method"], r["batch_size"]) for r in after] == [("single", 1), ("auto_demo", 2)]
    assert after[0] == before[0]  # single kept as measured
    assert after[1]["wall_time_s"] != before[1]["wall_time_s"]  # measured again
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8
    alone = cli.invoke(app, [*common, "--model", FAKE, "--methods", "single", "--rerun"])
    assert alone.exit_code == 2 and "use it with --resume" in alone.output


def test_eval_resume_refuses_another_sample(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--model", FAKE, "--out", str(out)]
    assert cli.invoke(app, [*common, "--limit", "4", "--methods", "single"]).exit_code == 0
    before = (out / "results.json").read_text()
    result = cli.invoke(app, [*common, "--limit", "6", "--methods", "single", "--resume"])
    assert result.exit_code == 2, result.output
    assert "--resume" in result.output and "items 4" in result.output
    assert "Traceback" not in result.output
    assert (out / "results.json").read_text() == before
    fresh = cli.invoke(app, [*common, "--methods", "single", "--resume", "--out",
                             str(tmp_path / "none")])  # fmt: skip
    assert fresh.exit_code == 2 and "holds no earlier report" in fresh.output


def test_eval_reask_with_answered_is_recorded_and_guards_resume(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--limit", "4", "--model", FAKE, "--out", str(out)]
    first = cli.invoke(app, [*common, "--methods", "auto_demo", "--reask-with-answered"])
    assert first.exit_code == 0, first.output
    assert json.loads((out / "results.json").read_text())["meta"]["reask_with_answered"] is True
    mixed = cli.invoke(app, [*common, "--methods", "auto_demo,batch", "--resume"])
    assert mixed.exit_code == 2 and "reask_with_answered True" in mixed.output


def test_eval_against_a_stopped_server_says_so_and_keeps_nothing_false(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_autodemo.testing as testing
    from tests.fakes import StoppedServerModel

    monkeypatch.setattr(testing, "parse_fake_spec", lambda options: StoppedServerModel())
    out = tmp_path / "results"
    result = cli.invoke(
        app,
        ["eval", "--dataset", "gsm8k", "--limit", "2", "--methods", "single",
         "--model", "fake:", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "every item's model call failed" in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output
    assert not (out / "results.json").exists()  # no row of errors passed off as a result


def test_eval_no_reasoning_asks_every_method_for_the_answer_only(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--limit", "4", "--model", FAKE, "--out", str(out)]
    args = [*common, "--methods", "single,batch,auto_demo", "--batch-sizes", "2"]
    first = cli.invoke(app, [*args, "--no-reasoning"])
    assert first.exit_code == 0, first.output
    assert json.loads((out / "results.json").read_text())["meta"]["reasoning"] is False
    records = _records(out / "predictions.jsonl")
    assert len(records) == 12
    # the scripted model reasons unless the prompt asks for the final answer only
    assert all("Working it out" not in r["raw_answer"] and "think" not in r["raw_answer"]
               for r in records)  # fmt: skip
    assert all(r["raw_answer"].strip() == r["gold"] for r in records if r["correct"])
    assert sum(r["correct"] for r in records) > 0
    mixed = cli.invoke(app, [*args, "--resume"])
    assert mixed.exit_code == 2 and "reasoning False" in mixed.output
    boot = cli.invoke(app, [*common, "--methods", "auto_demo+bootstrap", "--no-reasoning",
                            "--out", str(tmp_path / "other")])  # fmt: skip
    assert boot.exit_code == 2 and "+bootstrap" in boot.output
    assert "Traceback" not in boot.output


def test_eval_reasoning_is_the_default_and_reports_without_the_key_resume(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    common = ["eval", "--dataset", "gsm8k", "--limit", "4", "--model", FAKE, "--out", str(out)]
    assert cli.invoke(app, [*common, "--methods", "single"]).exit_code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["meta"]["reasoning"] is True
    assert all("Let me think" in r["raw_answer"] for r in _records(out / "predictions.jsonl"))
    del report["meta"]["reasoning"]  # a report written before the option existed
    (out / "results.json").write_text(json.dumps(report))
    again = cli.invoke(app, [*common, "--methods", "single,batch", "--batch-sizes", "2",
                             "--resume"])  # fmt: skip
    assert again.exit_code == 0, again.output


def test_serve_refuses_a_bad_template_before_starting_a_model(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["serve", "--instructions", "Add.", "--template", "Q: {0}",
              "--model", "llamacpp:/no/such/model.gguf"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "use named keys" in result.output and "make models" not in result.output
