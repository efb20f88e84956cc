"""Evaluation datasets: the built-in ones (GSM8K, RTE, BoolQ, SST-2) and JSONL files.

A :class:`Dataset` is a list of :class:`Example` (the text the model sees and the gold
answer) plus the :class:`Task` that says how to instruct the model and score it, and an
optional pool of solved demonstrations for the ``demo_pool`` selection method.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    "examples_dataset",
    "load_prompt",
    "prompt_dataset",
    "save_prompt",
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


# -- a user's own examples -------------------------------------------------------------


def examples_dataset(
    examples: Iterable[Any],
    *,
    prompt: Any = None,
    scorer: str | Callable[[Any, Any], Any] | Any = "exact",
    name: str = "examples",
) -> Dataset:
    """Your labelled examples as a dataset the search can ask.

    Each example is an ``(inputs, expected)`` pair, a ``{"inputs": ..., "outputs": ...}``
    record, or an object with ``inputs`` and ``outputs`` attributes (a LangSmith
    ``Example``); an ``outputs`` mapping of one key (or with ``answer``/``output``/
    ``label``) gives the expected answer. With ``prompt`` the inputs (a mapping of its
    variables, or the text of its only variable) are rendered through it, as
    ``prompt | runner`` would; without one they go to the runner as they are.
    """
    rows: list[tuple[Any, Any]] = []
    for number, example in enumerate(examples):
        try:
            inputs, expected = _example_parts(example)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"example {number}: {exc}") from None
        rows.append((inputs, expected))
    if not rows:
        raise ConfigurationError("tune needs at least one labelled example")
    golds = [_gold_text(expected) for _, expected in rows]
    task = _task_for(scorer, golds)
    variables = list(getattr(prompt, "input_variables", ()) or ())
    made = []
    for number, (inputs, expected) in enumerate(rows):
        asked: Any = inputs
        if prompt is not None:
            values = inputs
            if not isinstance(values, Mapping):
                if len(variables) != 1:
                    raise ConfigurationError(
                        f"example {number}: the prompt takes {variables}; give the inputs as "
                        "a mapping of them"
                    )
                values = {variables[0]: inputs}
            try:
                asked = prompt.invoke(dict(values))
            except (KeyError, ValueError) as exc:
                raise ConfigurationError(
                    f"example {number}: the prompt cannot render it: {exc}"
                ) from None
        text = _question_text(asked)
        made.append(Example(f"{name}-{number}", text, golds[number], input=asked,
                            expected=expected))  # fmt: skip
    return Dataset(name, task, made, source="examples")


def _question_text(asked: Any) -> str:
    """The question an example asks, for its token estimate and its name in reports: the
    last human message of a rendered prompt, the text itself, or a record's values."""
    from langchain_core.messages import HumanMessage
    from langchain_core.prompt_values import PromptValue

    from langchain_autodemo.messages import text_of

    messages = asked.to_messages() if isinstance(asked, PromptValue) else asked
    if isinstance(messages, list):
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if humans:
            return text_of(humans[-1])
    if isinstance(asked, Mapping):
        return " ".join(str(v) for v in asked.values())
    return str(asked)


def _example_parts(example: Any) -> tuple[Any, Any]:
    if isinstance(example, Mapping):
        if "inputs" not in example or "outputs" not in example:
            raise ValueError("a record needs 'inputs' and 'outputs'")
        return example["inputs"], _one_output(example["outputs"])
    if hasattr(example, "inputs") and hasattr(example, "outputs"):
        return example.inputs, _one_output(example.outputs)
    if isinstance(example, tuple | list) and len(example) == 2:
        return example[0], example[1]
    raise TypeError(
        f"expected an (inputs, expected) pair or an inputs/outputs record, got {example!r:.60}"
    )


def _one_output(outputs: Any) -> Any:
    if not isinstance(outputs, Mapping):
        return outputs
    for key in ("answer", "output", "label", "expected"):
        if key in outputs:
            return outputs[key]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return dict(outputs)


def _gold_text(expected: Any) -> str:
    if isinstance(expected, str):
        return expected
    if hasattr(expected, "model_dump_json"):
        return str(expected.model_dump_json())
    return (
        json.dumps(expected, sort_keys=True) if isinstance(expected, dict | list) else str(expected)
    )


def _task_for(scorer: Any, golds: Sequence[str]) -> Any:
    if scorer == "exact":
        return Task("text", "")
    if scorer == "numeric":
        return Task("numeric", "")
    if scorer == "label":
        labels = tuple(sorted({g.strip() for g in golds}))
        if len(labels) > 20:
            raise ConfigurationError("scorer='label' needs at most 20 distinct expected answers")
        return Task("label", "", labels)
    evaluate_strings = getattr(scorer, "evaluate_strings", None)
    if callable(evaluate_strings):  # a LangChain string evaluator

        def evaluated(answer: Any, expected: Any) -> Any:
            return evaluate_strings(prediction=str(answer), reference=str(expected))

        return Task("text", "", scorer=evaluated)
    if callable(scorer):
        return Task("text", "", scorer=scorer)
    raise ConfigurationError(
        f"scorer {scorer!r}: use 'exact', 'numeric', 'label', a callable (answer, expected) "
        "or a LangChain string evaluator"
    )


def save_prompt(prompt: Any, path: str | Path) -> Path:
    """Save a ``ChatPromptTemplate`` for ``--prompt``: ``langchain_core.load.dumpd`` JSON,
    with any part LangChain cannot serialise that takes no variables (a
    ``FewShotChatMessagePromptTemplate`` with fixed examples) written out as the messages
    it renders, which is what every request sends."""
    from langchain_core.load import dumpd
    from langchain_core.prompts import ChatPromptTemplate

    parts: list[Any] = []
    for part in getattr(prompt, "messages", []):
        fixed = not getattr(part, "input_variables", None)
        if fixed and hasattr(part, "format_messages") and not part.is_lc_serializable():
            parts.extend(part.format_messages())
        else:
            parts.append(part)
    if parts:
        prompt = ChatPromptTemplate.from_messages(parts)
    path = Path(path)
    path.write_text(json.dumps(dumpd(prompt), indent=1), encoding="utf-8")
    return path


def load_prompt(path: str | Path) -> Any:
    """The prompt ``--prompt`` names: ``langchain_core.load.dumpd`` JSON (see
    :func:`save_prompt`), or a JSON list of ``[role, template]`` pairs, as
    ``ChatPromptTemplate.from_messages`` takes them."""
    from langchain_core.load import load
    from langchain_core.prompts import ChatPromptTemplate

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(data, list):
            return ChatPromptTemplate.from_messages([tuple(pair) for pair in data])
        prompt = load(data, allowed_objects="core")  # prompts and messages, nothing else
    except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise ConfigurationError(
            f"--prompt {path}: not a prompt saved with langchain_core.load.dumpd nor a list "
            f"of [role, template] pairs ({str(exc)[:200]}); save a few-shot prompt with "
            "langchain_autodemo.evaluation.datasets.save_prompt"
        ) from None
    if not hasattr(prompt, "invoke"):
        raise ConfigurationError(f"--prompt {path}: holds a {type(prompt).__name__}, not a prompt")
    return prompt


def prompt_dataset(
    path: str | Path,
    prompt: Any,
    *,
    answer_key: str = "answer",
    limit: int | None = None,
    task: str | None = None,
) -> Dataset:
    """A JSONL file of records asked through ``prompt``: each record's fields fill the
    prompt's variables, ``answer_key`` is the expected answer. The scorer follows the
    answers as for a dataset file (``task``: numeric, label or text; default: numeric when
    every answer holds a number, else exact text)."""
    path = Path(path)
    records = list(read_jsonl(path))
    if not records:
        raise DatasetError(f"{path}: no records")
    variables = set(getattr(prompt, "input_variables", ()) or ())
    examples = []
    for number, record in records[: limit or None]:
        if answer_key not in record:
            raise DatasetError(f"{path}:{number}: record lacks the answer field {answer_key!r}")
        missing = sorted(variables - set(record))
        if missing:
            raise DatasetError(f"{path}:{number}: record lacks the prompt's field(s) {missing}")
        inputs = {k: v for k, v in record.items() if k in variables}
        examples.append((inputs, record[answer_key]))
    golds = [str(expected) for _, expected in examples]
    if task is None:
        task = "numeric" if all(extract_last_number(g) is not None for g in golds) else "exact"
    scorer = {"text": "exact"}.get(task, task)
    data = examples_dataset(examples, prompt=prompt, scorer=scorer, name=path.stem)
    data.source = str(path)
    return data
