"""The resumable output file of `autodemo run`: torn last lines, foreign files, error re-asks, sorting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.cli.resume import (
    OutputError,
    OutputWriter,
    prepare_for_append,
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
        writer.write(3, {"q": "a", "answer": "1"})
        writer.write(1, {"q": "b", "answer": "2"})
    assert path.read_text().startswith('{"input_line": 3, "q": "a"'), "line number first"
    assert sorted(read_finished(path)) == [1, 3]
    sort_output(path)
    assert [r["input_line"] for r in _records(path)] == [1, 3]


def test_torn_last_line_is_cut_off_when_appending(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    text = '{"input_line": 1, "answer": "x"}\n{"input_line": 2, "ans'
    path.write_text(text)
    assert list(read_finished(path)) == [1]
    assert path.read_text() == text, "reading changes nothing"
    prepare_for_append(path)
    assert path.read_text() == '{"input_line": 1, "answer": "x"}\n'


@pytest.mark.parametrize("torn", ["{", '{"inpu', '{"input_line": ', '{"input_line": 12, "q": "'])
def test_any_prefix_of_a_line_of_ours_is_a_torn_write(tmp_path: Path, torn: str) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n' + torn)
    prepare_for_append(path)
    assert list(read_finished(path)) == [1]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n{"input_line": 2, "answer": "y"}')
    assert sorted(read_finished(path)) == [1, 2]
    prepare_for_append(path)
    assert path.read_text().endswith('"y"}\n')
    with OutputWriter(path) as writer:
        writer.write(3, {"answer": "z"})
    assert [r["input_line"] for r in _records(path)] == [1, 2, 3]


def test_malformed_line_in_the_middle_refuses(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1}\nnot json\n{"input_line": 3}\n')
    with pytest.raises(OutputError, match=r"out.jsonl:2"):
        read_finished(path)


@pytest.mark.parametrize(
    "text",
    [
        '{"question": "no line number"}\n{"question": "x"}\n',
        '{"question": "one foreign line"}\n',  # was taken for a torn write and cut off
        '{"question": "one foreign line, unterminated"}',
        '{"input_line": 1}\n{"question": "foreign, unterminated',
        "plain text",
        '{"input_line": 1}\n{"input_line": 2, "q": "terminated but cut"\n',
    ],
)
def test_foreign_content_refuses_and_is_left_alone(tmp_path: Path, text: str) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(text)
    for action in (read_finished, prepare_for_append, sort_output):
        with pytest.raises(OutputError, match="not an autodemo output line"):
            action(path)
        assert path.read_text() == text


def test_keep_rewrites_with_just_those_records(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"input_line": 1, "answer": "x"}\n{"input_line": 2, "error": "missing"}\n')
    finished = read_finished(path)
    assert sorted(finished) == [1, 2]
    prepare_for_append(path, keep={1: finished[1]})
    assert [r["input_line"] for r in _records(path)] == [1]
