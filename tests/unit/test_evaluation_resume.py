"""Resumable output files: torn last lines, foreign files, error re-asks, sorting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.evaluation.resume import (
    OutputError,
    OutputWriter,
    read_finished,
    sort_output,
)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_missing_file_means_nothing_finished(tmp_path: Path) -> None:
    assert read_finished(tmp_path / "none.jsonl") == {}


def test_writer_appends_and_reader_resumes(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with OutputWriter(path) as writer:
        writer.write({"q": "a", "input_line": 3, "answer": "1"})
        writer.write({"q": "b", "input_line": 1, "answer": "2"})
    assert sorted(read_finished(path)) == [1, 3]
    sort_output(path)
    assert [r["input_line"] for r in _records(path)] == [1, 3]


def test_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n{"input_line": 2, "ans')
    assert list(read_finished(path)) == [1]
    assert path.read_text() == '{"input_line": 1, "answer": "x"}\n'


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n{"input_line": 2, "answer": "y"}')
    assert sorted(read_finished(path)) == [1, 2]
    assert path.read_text().endswith('"y"}\n')
    with OutputWriter(path) as writer:
        writer.write({"input_line": 3, "answer": "z"})
    assert [r["input_line"] for r in _records(path)] == [1, 2, 3]


def test_malformed_line_in_the_middle_refuses(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1}\nnot json\n{"input_line": 3}\n')
    with pytest.raises(OutputError, match=r"out.jsonl:2"):
        read_finished(path)


def test_foreign_jsonl_refuses(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"question": "no line number"}\n{"question": "x"}\n')
    with pytest.raises(OutputError, match="not an autodemo output line"):
        read_finished(path)


def test_drop_errors_rewrites_without_them(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n{"input_line": 2, "error": "missing"}\n')
    assert sorted(read_finished(path)) == [1, 2]
    assert sorted(read_finished(path, drop_errors=True)) == [1]
    assert [r["input_line"] for r in _records(path)] == [1]
