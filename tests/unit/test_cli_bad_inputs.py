"""``autodemo run``'s input lines are all checked before the first model call: every bad
line reported in one pass, non-text questions and lone surrogates refused by line and
field; and the output writer never fails on the text it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.cli.inputs import SHOWN, BadInputError, read_items
from langchain_autodemo.cli.resume import (
    OutputWriter,
    read_finished,
    read_setup,
    sort_output,
    write_setup,
)

FAKE = "fake:answer=sum"


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def _source(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _good(i: int) -> str:
    return json.dumps({"question": f"What is {i} + {i}?"})


def _run(tmp_path: Path, source: Path, *args: str) -> tuple[int, str, Path]:
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["run", str(source), "-o", str(out), "-m", FAKE, "--no-progress", *args]
    )
    return result.exit_code, _flat(result.output), out


def _nothing_asked(out: Path) -> bool:
    return not out.exists() and not out.with_name(out.name + ".meta.json").exists()


# -- item 9: the question must be text -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [("null", "null"), ("5", "a number"), ("true", "a boolean"), ('["a"]', "a list"),
     ('{"a": 1}', "an object")],
)  # fmt: skip
def test_a_question_that_is_not_text_is_a_bad_line(tmp_path: Path, value: str, kind: str) -> None:
    source = _source(tmp_path, [_good(1), '{"question": ' + value + "}", _good(3)])
    with pytest.raises(BadInputError) as caught:
        read_items(source, "question", None)
    assert caught.value.problems == [(2, f"field 'question' is {kind}, not text: the question "
                                         "must be a string")]  # fmt: skip
    code, output, out = _run(tmp_path, source)
    assert code == 2 and f"in.jsonl:2: field 'question' is {kind}" in output, output
    assert "Traceback" not in output and _nothing_asked(out)


def test_a_template_field_that_is_null_is_a_bad_line(tmp_path: Path) -> None:
    source = _source(tmp_path, ['{"a": 2, "b": 3}', '{"a": null, "b": 3}'])
    code, output, out = _run(tmp_path, source, "--template", "{a} + {b}")
    assert code == 2 and "in.jsonl:2: field 'a' is null" in output, output
    assert _nothing_asked(out)


# -- item 8: a lone surrogate ------------------------------------------------------------


def test_a_lone_surrogate_in_an_input_line_is_refused_before_any_call(tmp_path: Path) -> None:
    lines = [_good(i) for i in range(1, 41)]
    lines[24] = '{"question": "What is \\ud800 + 1?"}'  # a valid JSON escape, no character
    lines[30] = '{"question": "What is 3 + 1?", "note": "\\udfff"}'  # any field: it is copied
    source = _source(tmp_path, lines)
    code, output, out = _run(tmp_path, source)
    assert code == 2, output
    assert "in.jsonl:25: field 'question' holds a lone surrogate" in output
    assert "in.jsonl:31: field 'note' holds a lone surrogate" in output
    assert "Traceback" not in output and _nothing_asked(out)


def test_a_line_that_is_not_utf8_is_a_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(_good(1).encode() + b'\n{"question": "caf\xe9"}\n')
    code, output, out = _run(tmp_path, source)
    assert code == 2 and "in.jsonl:2: not UTF-8 text" in output, output
    assert _nothing_asked(out)


def test_the_writer_never_fails_on_a_string(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    odd = "a \ud800 b \udcff \U0001f600 é"
    with OutputWriter(out) as writer:
        writer.write(2, {"question": "q", "answer": odd})
        writer.write(1, {"question": "plain", "answer": "fine é"})
        writer.write(3, {"question": odd, "answer": "x"})
    assert read_finished(out)[2]["answer"] == odd  # escaped, read back as the same string
    assert read_finished(out)[3]["question"] == odd
    assert "fine é" in out.read_text(encoding="utf-8")  # other lines stay plain UTF-8
    sort_output(out)
    assert [r["answer"] for r in read_finished(out).values()] == ["fine é", odd, "x"]
    write_setup(out, {"instructions": odd}, command="autodemo run \udcff")
    assert read_setup(out) == {"instructions": odd}


def test_an_answer_with_a_lone_surrogate_is_written(tmp_path: Path) -> None:
    source = _source(tmp_path, [_good(i) for i in range(1, 5)])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(source), "-o", str(out), "-m", "fake:answer=const:x\ud800y",
         "-i", "Add \udcff.", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["answer"] for r in read_finished(out).values()] == ["x\ud800y"] * 4


# -- item 14: every bad line in one pass -------------------------------------------------


def test_every_bad_line_is_reported_in_one_pass(tmp_path: Path) -> None:
    lines = [_good(i) for i in range(1, 11)]
    lines[1] = "{oops"
    lines[3] = '{"text": "no question"}'
    lines[5] = '{"question": null}'
    lines[8] = '{"question": "  "}'
    source = _source(tmp_path, lines)
    code, output, out = _run(tmp_path, source)
    assert code == 2, output
    assert "4 bad input line(s)" in output
    for line, why in [(2, "malformed JSON"), (4, "record lacks field(s) question"),
                      (6, "field 'question' is null"), (9, "the text to answer is empty")]:  # fmt: skip
        assert f"in.jsonl:{line}: {why}" in output, (line, output)
    assert _nothing_asked(out)


def test_many_bad_lines_are_capped_with_a_count(tmp_path: Path) -> None:
    source = _source(tmp_path, ['{"question": 1}'] * (SHOWN + 7) + [_good(1)])
    with pytest.raises(BadInputError) as caught:
        read_items(source, "question", None)
    assert len(caught.value.problems) == SHOWN + 7
    message = str(caught.value)
    assert message.count("is a number") == SHOWN and "and 7 more bad line(s)" in message
    code, output, _ = _run(tmp_path, source)
    assert code == 2 and "and 7 more bad line(s)" in output
