"""Built-in datasets, JSONL dataset files, methods and batch-size parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.evaluation.datasets import (
    BUILTIN_DATASETS,
    DatasetError,
    data_dir,
    gsm8k_demo,
    load_dataset,
)
from langchain_autodemo.evaluation.methods import (
    Method,
    MethodError,
    parse_batch_sizes,
    parse_methods,
)
from langchain_autodemo.prompts import Mode


def test_builtin_data_ships_with_the_package() -> None:
    names = {p.name for p in data_dir().iterdir()}
    assert {
        "gsm8k_test.jsonl",
        "gsm8k_train.jsonl",
        "rte_val.jsonl",
        "boolq_dev.jsonl",
        "sst2_dev.txt",
        "README.md",
    } <= names
    readme = (data_dir() / "README.md").read_text()
    assert "licence" in readme and "openai/grade-school-math" in readme


@pytest.mark.parametrize("name", list(BUILTIN_DATASETS))
def test_builtin_datasets_load_with_limit(name: str) -> None:
    data = load_dataset(name, limit=5)
    assert len(data) == 5
    assert all(example.text.strip() and example.gold for example in data.examples)
    assert len({example.id for example in data.examples}) == 5
    pool = data.demo_pool()
    assert pool, "every built-in dataset has demonstrations"
    texts = {example.text for example in data.examples}
    assert not texts & {question for question, _ in pool}, "demos must not contain test items"


def test_gsm8k_gold_and_demo_format() -> None:
    data = load_dataset("gsm8k", limit=1)
    assert data.task.kind == "numeric"
    assert data.examples[0].gold == "18"  # Janet's ducks
    question, answer = gsm8k_demo("Q?", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072")
    assert answer == "Natalia sold 48/2 = 24 clips.\nThe answer is 1072."
    assert "<<" not in data.demo_pool()[0][1]
    assert data.demo_pool()[0][1].endswith("The answer is 72.")


def test_label_datasets_gold_labels() -> None:
    assert {e.gold for e in load_dataset("rte", limit=50).examples} == {
        "entailment",
        "not_entailment",
    }
    assert {e.gold for e in load_dataset("boolq", limit=50).examples} == {"yes", "no"}
    assert {e.gold for e in load_dataset("sst2", limit=50).examples} == {"positive", "negative"}
    rte = load_dataset("rte", limit=1)
    assert rte.examples[0].text.startswith("Premise: ") and "Hypothesis: " in rte.examples[0].text
    assert rte.task.score("not entailment", "not_entailment").correct


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_path_dataset_numeric_detection(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "math.jsonl",
        [
            {"question": "2+2?", "answer": "It is 4"},
            {"question": "3+3?", "answer": "#### 6"},
        ],
    )
    data = load_dataset(str(path))
    assert data.task.kind == "numeric"
    assert [e.gold for e in data.examples] == ["4", "6"]
    assert data.task.score("so 6.0", data.examples[1].gold).correct


def test_path_dataset_text_and_forced_label(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "capitals.jsonl",
        [
            {"question": "Capital of France?", "answer": "Paris"},
            {"question": "Capital of Italy?", "answer": "Rome"},
            {"question": "Capital of Spain?", "answer": "Madrid"},
        ],
    )
    data = load_dataset(str(path), limit=2)
    assert data.task.kind == "text"
    assert len(data) == 2 and data.demo_pool() == [("Capital of Spain?", "Madrid")]
    assert data.task.score("paris.", "Paris").correct
    assert not data.task.score("Lyon", "Paris").correct
    labelled = load_dataset(str(path), task="label")
    assert labelled.task.kind == "label"
    assert labelled.task.score("I think it is Rome", "Rome").correct


def test_path_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": oops}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: malformed JSON"):
        load_dataset(str(bad))
    lacking = _write(tmp_path / "lacking.jsonl", [{"question": "a"}])
    with pytest.raises(DatasetError, match=r"lacking.jsonl:1: record lacks field\(s\) answer"):
        load_dataset(str(lacking))
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mnli")
    with pytest.raises(DatasetError, match="--task only applies"):
        load_dataset("gsm8k", task="numeric")


def test_parse_methods() -> None:
    methods = parse_methods("single, batch,auto_demo,auto_demo+similarity,auto_demo+demo_pool")
    assert [m.name for m in methods] == [
        "single",
        "batch",
        "auto_demo",
        "auto_demo+similarity",
        "auto_demo+demo_pool",
    ]
    assert not methods[0].batched and methods[1].batched
    assert methods[4].needs_pool
    assert parse_methods("batch,batch") == [Method(Mode.BATCH)]
    assert parse_methods("batch+similarity")[0].grouping == "similarity"
    for bad in ("sometimes", "auto_demo+magic", "single+similarity", ""):
        with pytest.raises(MethodError):
            parse_methods(bad)


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("4, 8,16,8") == [4, 8, 16]
    for bad in ("0", "four", "", "-2"):
        with pytest.raises(MethodError):
            parse_batch_sizes(bad)
