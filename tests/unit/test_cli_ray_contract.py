"""``autodemo run --engine ray`` keeps the online engine's contract: the same input checks,
the same recorded setup and its check on resume, the same lock, the same output file
and records. What these tests check happens before a Ray cluster is started (the job
itself runs in tests/integration/test_ray_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray")
pd = pytest.importorskip("pandas")

from langchain_autodemo.cli import app  # noqa: E402
from langchain_autodemo.cli.inputs import Item  # noqa: E402
from langchain_autodemo.cli.ray_run import RECORD_COLUMN, parts_path, recover_parts  # noqa: E402
from langchain_autodemo.cli.resume import OutputError, output_lock, setup_path  # noqa: E402

FAKE = "fake:answer=sum"


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def _source(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": f"What is {i} + {10 * i}?"}) + "\n"
                            for i in range(1, n + 1)))  # fmt: skip
    return path


def _invoke(source: Path, out: Path, *args: str, engine: str = "ray") -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["run", str(source), "-o", str(out), "-m", FAKE, "--no-progress",
              "--engine", engine, *args],
    )  # fmt: skip
    return result.exit_code, _flat(result.output)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_parts(out: Path, rows: list[dict], name: str = "part-0.parquet") -> Path:
    """Parts as the Ray job's workers write them (ray_data's output columns)."""
    folder = parts_path(out)
    folder.mkdir(exist_ok=True)
    frame = pd.DataFrame(
        [{"input_line": r["line"], RECORD_COLUMN: json.dumps(r["record"]),
          "answer": r.get("answer"), "error_kind": r.get("error_kind"),
          "error_message": r.get("error_message"), "input_tokens": 1, "output_tokens": 1,
          "attempts": 1} for r in rows]
    )  # fmt: skip
    frame.to_parquet(folder / name, index=False)
    return folder


def _record(i: int) -> dict:
    return {"id": i, "question": f"What is {i} + {10 * i}?"}


def _online_then_cut(tmp_path: Path, n: int, keep: int, *args: str) -> tuple[Path, Path]:
    source, out = _source(tmp_path, n), tmp_path / "out.jsonl"
    code, output = _invoke(source, out, *args, engine="local")
    assert code == 0, output
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:keep]))
    return source, out


def test_bad_input_lines_are_refused_as_the_online_engine_refuses_them(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"question": null}\n{"question": "ok"}\n{"question": "\\ud800"}\n')
    out = tmp_path / "out.jsonl"
    code, output = _invoke(source, out)
    assert code == 2, output
    assert "2 bad input line(s)" in output and "in.jsonl:1: field 'question' is null" in output
    assert "in.jsonl:3: field 'question' holds a lone surrogate" in output
    assert not out.exists() and not parts_path(out).exists()


def test_a_resume_over_another_setup_is_refused(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 4, 2)
    before = out.read_text()
    for args, changed in [(["-m", "fake:answer=const:7"], "model: was 'fake:answer=sum'"),
                          (["-i", "Sum."], "instructions: was"),
                          (["-n", "3"], "batch_size: was 8, now 3")]:  # fmt: skip
        result = CliRunner().invoke(
            app, ["run", str(source), "-o", str(out), "--engine", "ray", "--no-progress",
                  "-m", FAKE, *args],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "was written with another setup" in _flat(result.output)
        assert changed in _flat(result.output)
        assert out.read_text() == before


def test_a_resume_of_an_audited_output_is_refused(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 4, 2, "--audit", "1")
    code, output = _invoke(source, out)
    assert code == 2 and "audit: was 1.0, now None" in output, output


def test_another_run_holding_the_output_is_refused(tmp_path: Path) -> None:
    source, out = _source(tmp_path, 3), tmp_path / "out.jsonl"
    with output_lock(out):
        code, output = _invoke(source, out)
    assert code == 2 and "another autodemo run is writing" in output, output


def test_an_old_format_output_folder_is_refused(tmp_path: Path) -> None:
    source, out = _source(tmp_path, 3), tmp_path / "out.jsonl"
    out.mkdir()  # what an older --engine ray wrote
    (out / "part-0.json").write_text('{"input_line": 1, "answer": "11"}\n')
    for engine in ("ray", "local"):
        code, output = _invoke(source, out, engine=engine)
        assert code == 2, output
        assert "is a folder, not an output file" in output and "older --engine ray" in output
    assert (out / "part-0.json").exists()


def test_the_parts_of_a_stopped_job_are_appended_as_online_records(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 4, 1)  # line 1 in the output
    _write_parts(out, [
        {"line": 3, "record": _record(3), "answer": "33"},
        {"line": 2, "record": _record(2), "error_kind": "AutoDemoItemError",
         "error_message": "no answer"},
        {"line": 4, "record": _record(4), "answer": "44"},
        {"line": 1, "record": _record(1), "answer": "11"},  # already in the output
    ])  # fmt: skip
    code, output = _invoke(source, out)  # nothing is left to ask: no cluster starts
    assert code == 1, output  # line 2 is an error
    assert "Resuming: 4 of 4" in output and "Nothing to do" in output
    records = _records(out)
    assert [r["input_line"] for r in records] == [1, 2, 3, 4]  # once each, in input order
    assert records[2] == {"input_line": 3, **_record(3), "answer": "33"}
    assert records[1] == {"input_line": 2, **_record(2), "error": "input line 2: no answer"}
    assert not parts_path(out).exists()


def test_parts_of_another_input_are_refused(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 3, 1)
    _write_parts(out, [{"line": 2, "record": {"id": 2, "question": "Other?"}, "answer": "x"}])
    code, output = _invoke(source, out)
    assert code == 2 and "whose records are not those of this input" in output, output
    with pytest.raises(OutputError):
        recover_parts(out, [Item(2, _record(2), "q")], ("answer", "error"), {})


def test_a_corrupted_part_is_refused_by_name(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 3, 1)
    folder = _write_parts(out, [{"line": 2, "record": _record(2), "answer": "22"}])
    (folder / "part-1.parquet").write_bytes(b"PAR1 not really")
    code, output = _invoke(source, out)
    assert code == 2, output
    assert "part-1.parquet: cannot read this output file" in output
    assert "Traceback" not in output
    assert len(_records(out)) == 1  # nothing appended


def test_parts_written_with_another_setup_are_refused(tmp_path: Path) -> None:
    source, out = _online_then_cut(tmp_path, 3, 1)
    _write_parts(out, [{"line": 2, "record": _record(2), "answer": "22"}])
    meta = json.loads(setup_path(out).read_text())
    meta["setup"]["instructions"] = "Something else."
    setup_path(out).write_text(json.dumps(meta))
    code, output = _invoke(source, out)
    assert code == 2 and "instructions: was 'Something else.'" in output, output
    assert parts_path(out).exists()
