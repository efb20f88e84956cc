"""Evaluation datasets: the built-in ones (GSM8K, RTE, BoolQ, SST-2) and JSONL files.

A :class:`Dataset` is a list of :class:`Example` (the text the model sees and the gold
answer) plus the :class:`Task` that says how to instruct the model and score it, and an
optional pool of solved demonstrations for the ``demo_pool`` selection method.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.scoring import (
    Score,
    extract_last_number,
    match_label,
    score_label,
    score_numeric,
    score_text,
)

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "DatasetError",
    "Example",
    "Task",
    "data_dir",
    "gsm8k_demo",
    "load_dataset",
    "read_jsonl",
]


class DatasetError(ConfigurationError):
    """A dataset name, file or record that cannot be used (message is for the user)."""


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    """What the model is asked (one item of a batch)."""
    gold: str
    """The gold answer (a number as text for numeric tasks, a label for label tasks)."""
    input: Any = None
    """What the runner is given, where it is not ``text``: a user's prompt rendered for this
    example (a ``ChatPromptValue``), or a record of template fields."""
    expected: Any = None
    """The expected output as the user gave it (a custom scorer gets it), where not ``gold``."""

    @property
    def asked(self) -> Any:
        """The runner's input for this example."""
        return self.text if self.input is None else self.input


@dataclass(frozen=True)
class Task:
    """How to instruct the model and score its answers."""

    kind: str  # "numeric" | "label" | "text"
    instructions: str
    labels: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    scorer: Callable[[Any, Any], Any] | None = None
    """A user's scorer: ``(answer, expected) -> bool`` or a score from 0 to 1 (0.5 and
    above count as correct); it replaces the kind's own rule."""

    def instructions_for(self, reasoning: bool) -> str:
        """The instructions as a call with or without reasoning gives them: without it, a
        task's "Think step by step, then give the final answer" becomes "Give the final
        answer", so the system message never contradicts the layout's "final answer only".

        Example:
            >>> Task("numeric", NUMERIC_INSTRUCTIONS).instructions_for(False)
            'Solve each problem. Give the final answer as a single number.'
        """
        if reasoning:
            return self.instructions
        return _STEP_BY_STEP.sub("Give the final answer", self.instructions)

    def score(
        self, prediction: str | None, gold: str, *, answer: Any = None, expected: Any = None
    ) -> Score:
        """How ``prediction`` (the answer as text; ``answer`` as the runner returned it)
        fared against ``gold`` (``expected``: as the user gave it)."""
        if self.scorer is not None:
            if prediction is None:
                return Score(correct=False, parsed=False)
            verdict = self.scorer(
                prediction if answer is None else answer, gold if expected is None else expected
            )
            if isinstance(verdict, dict):  # a LangChain/LangSmith evaluation result
                verdict = verdict.get("score", verdict.get("value"))
            correct = verdict >= 0.5 if isinstance(verdict, int | float) else bool(verdict)
            return Score(correct=bool(correct), parsed=True, extracted=prediction)
        if self.kind == "numeric":
            return score_numeric(prediction, gold)
        if self.kind == "label":
            return score_label(prediction, gold, self.labels, self.aliases)
        text_score = score_text(prediction, gold)
        if not text_score.correct and self.labels:  # a short label set: accept "yes." for "Yes"
            label = match_label(prediction, self.labels, self.aliases)
            if label is not None:
                return Score(correct=label == gold, parsed=True, extracted=label)
        return text_score


@dataclass
class Dataset:
    name: str
    task: Task
    examples: list[Example]
    demo_pool: Callable[[], list[tuple[str, str]]] | None = None
    """Solved (question, answer text) pairs disjoint from ``examples``, built on demand."""
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)


def data_dir() -> Path:
    """The folder of the built-in data files (shipped inside the package)."""
    return Path(str(resources.files("langchain_autodemo") / "datasets" / "data"))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line; malformed lines raise
    :class:`DatasetError` naming the file and line."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: malformed JSON line ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object, got {record!r:.60}")
            yield number, record


# The reasoning directive of a task's instructions (dropped where no reasoning is asked).
_STEP_BY_STEP = re.compile(r"Think step by step, then give the final answer", re.IGNORECASE)

# -- GSM8K --------------------------------------------------------------------------

GSM8K_INSTRUCTIONS = (
    "Solve each grade-school math word problem. Think step by step, then give the final "
    "answer as a single number."
)

_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_demo(question: str, answer: str) -> tuple[str, str]:
    """A GSM8K training record as a demonstration: the reasoning without the
    ``<<...>>`` calculator annotations, then ``The answer is N.``"""
    reasoning, _, final = answer.rpartition("####")
    reasoning = _CALCULATOR.sub("", reasoning).strip()
    number = final.strip().replace(",", "")
    return question, f"{reasoning}\nThe answer is {number}.".strip()


def _gsm8k(limit: int | None) -> Dataset:
    folder = data_dir()
    examples = []
    for number, record in read_jsonl(folder / "gsm8k_test.jsonl"):
        gold = extract_last_number(record["answer"].rpartition("####")[2])
        examples.append(Example(f"gsm8k-test-{number}", record["question"], _fmt(gold)))
        if limit is not None and len(examples) >= limit:
            break

    def pool() -> list[tuple[str, str]]:
        train = folder / "gsm8k_train.jsonl"
        return [gsm8k_demo(r["question"], r["answer"]) for _, r in read_jsonl(train)]

    return Dataset("gsm8k", Task("numeric", GSM8K_INSTRUCTIONS), examples, pool,
                   "gsm8k_test.jsonl (demo pool: gsm8k_train.jsonl)")  # fmt: skip


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else f"{value:g}"


# -- label tasks ----------------------------------------------------------------------

RTE_TASK = Task(
    "label",
    "Decide whether the premise entails the hypothesis: could a person reading the premise "
    "conclude that the hypothesis is true? Answer with exactly one label: entailment or "
    "not_entailment.",
    labels=("entailment", "not_entailment"),
    aliases={
        "not entailment": "not_entailment", "not entailed": "not_entailment",
        "no entailment": "not_entailment", "does not entail": "not_entailment",
        "non entailment": "not_entailment", "contradiction": "not_entailment",
        "neutral": "not_entailment", "no": "not_entailment", "false": "not_entailment",
        "entailed": "entailment", "entails": "entailment", "yes": "entailment",
        "true": "entailment",
    },
)  # fmt: skip

BOOLQ_TASK = Task(
    "label",
    "Answer each yes/no question using the passage given with it. Answer with exactly one "
    "word: yes or no.",
    labels=("yes", "no"),
    aliases={"true": "yes", "false": "no", "correct": "yes", "incorrect": "no"},
)

SST2_TASK = Task(
    "label",
    "Classify the sentiment of each movie review sentence. Answer with exactly one label: "
    "positive or negative.",
    labels=("positive", "negative"),
    aliases={"pos": "positive", "neg": "negative", "good": "positive", "bad": "negative"},
)


def _label_dataset(
    name: str,
    task: Task,
    records: list[tuple[str, str, str]],
    limit: int | None,
    source: str,
) -> Dataset:
    """``records`` are (id, text, gold label); items past ``limit`` form the demo pool."""
    cut = len(records) if limit is None else min(limit, len(records))
    examples = [Example(i, text, gold) for i, text, gold in records[:cut]]

    def pool() -> list[tuple[str, str]]:
        return [(text, f"The answer is {gold}.") for _, text, gold in records[cut:]]

    return Dataset(name, task, examples, pool, source)


def _rte(limit: int | None) -> Dataset:
    records = [
        (f"rte-{r.get('idx', n)}", f"Premise: {r['premise']} Hypothesis: {r['hypothesis']}",
         r["label"])
        for n, r in read_jsonl(data_dir() / "rte_val.jsonl")
    ]  # fmt: skip
    return _label_dataset("rte", RTE_TASK, records, limit, "rte_val.jsonl (SuperGLUE RTE val)")


def _boolq(limit: int | None) -> Dataset:
    records = [
        (f"boolq-{n}", f"Passage: {r['passage']} Question: {r['question']}?",
         "yes" if str(r["answer"]).strip().lower() == "true" else "no")
        for n, r in read_jsonl(data_dir() / "boolq_dev.jsonl")
    ]  # fmt: skip
    return _label_dataset("boolq", BOOLQ_TASK, records, limit, "boolq_dev.jsonl")


def _sst2(limit: int | None) -> Dataset:
    records = []
    path = data_dir() / "sst2_dev.txt"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            label, _, sentence = line.strip().partition(" ")
            gold = "positive" if label == "1" else "negative"
            records.append((f"sst2-{number}", sentence, gold))
    return _label_dataset("sst2", SST2_TASK, records, limit, "sst2_dev.txt (SST-2 dev)")


BUILTIN_DATASETS: dict[str, Callable[[int | None], Dataset]] = {
    "gsm8k": _gsm8k,
    "rte": _rte,
    "boolq": _boolq,
    "sst2": _sst2,
}


# -- JSONL files ------------------------------------------------------------------------

GENERIC_INSTRUCTIONS = "Answer each question accurately and concisely."
NUMERIC_INSTRUCTIONS = (
    "Solve each problem. Think step by step, then give the final answer as a single number."
)


def _from_path(path: Path, limit: int | None, task_kind: str | None) -> Dataset:
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; expected a JSONL file")
    records: list[tuple[int, dict[str, Any]]] = list(read_jsonl(path))
    if not records:
        raise DatasetError(f"{path}: no records")
    for number, record in records:
        missing = [key for key in ("question", "answer") if key not in record]
        if missing:
            raise DatasetError(f"{path}:{number}: record lacks field(s) {', '.join(missing)}")
    golds = [str(record["answer"]) for _, record in records]
    if task_kind is None:
        task_kind = "numeric" if all(extract_last_number(g) is not None for g in golds) else "text"
    if task_kind not in ("numeric", "label", "text"):
        raise DatasetError(f"unknown task {task_kind!r}: use numeric or label")
    if task_kind == "numeric":
        task = Task("numeric", NUMERIC_INSTRUCTIONS)
        golds = [_fmt(extract_last_number(g)) for g in golds]
        if any(not g for g in golds):
            bad = next(n for (n, _), g in zip(records, golds, strict=True) if not g)
            raise DatasetError(f"{path}:{bad}: numeric task but the answer has no number")
    else:
        distinct = sorted({g.strip() for g in golds})
        labels = tuple(distinct) if len(distinct) <= 20 else ()
        if task_kind == "label" and not labels:
            raise DatasetError(f"{path}: --task label needs at most 20 distinct answers")
        instructions = GENERIC_INSTRUCTIONS
        if labels:
            instructions += " Answer with exactly one of: " + ", ".join(labels) + "."
        task = Task("label" if task_kind == "label" else "text", instructions, labels)
        golds = [g.strip() for g in golds]
    items = [
        (f"{path.stem}-{number}", str(record["question"]), gold)
        for (number, record), gold in zip(records, golds, strict=True)
    ]
    cut = len(items) if limit is None else min(limit, len(items))
    examples = [Example(*item) for item in items[:cut]]

    def pool() -> list[tuple[str, str]]:
        return [(r["question"], str(r["answer"])) for _, r in records[cut:]]

    return Dataset(path.stem, task, examples, pool, str(path))


def load_dataset(name: str, *, limit: int | None = None, task: str | None = None) -> Dataset:
    """A built-in dataset by name (``gsm8k``, ``rte``, ``boolq``, ``sst2``) or a JSONL path.

    ``limit`` keeps the first K examples; for label datasets (and files) the remaining
    records form the demonstration pool, so demonstrations never include a test item.
    """
    if limit is not None and limit < 1:
        raise DatasetError("--limit must be at least 1")
    key = name.strip().lower()
    if key in BUILTIN_DATASETS:
        if task is not None:
            raise DatasetError("--task only applies to a dataset given as a file path")
        return BUILTIN_DATASETS[key](limit)
    path = Path(name).expanduser()
    if path.suffix.lower() in {".jsonl", ".json"} or path.exists() or "/" in name:
        if not path.exists():
            raise DatasetError(f"dataset file not found: {path}")
        return _from_path(path, limit, task)
    raise DatasetError(
        f"unknown dataset {name!r}: use one of {', '.join(BUILTIN_DATASETS)} or a path to a "
        "JSONL file with question and answer fields"
    )
