"""Property: whatever a model does to a well-formed completion, every input gets exactly
one result or one explicit error, in input order, and no answer lands on the wrong input."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import BaseMessage

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from tests.fakes import ScriptedChatModel, asked_questions

WORDS = [
    "apples",
    "boats",
    "clocks",
    "drums",
    "eggs",
    "forks",
    "geese",
    "hats",
    "inks",
    "jars",
    "kites",
    "lamps",
    "maps",
    "nails",
    "owls",
    "pens",
]


# Inputs that are hard to tell apart: the same words in another order, case-only
# variants and emoji-only texts, beside ordinary distinct questions.
HARD = [
    "Is 3 greater than 7?",
    "Is 7 greater than 3?",
    "The film was good, not bad.",
    "The film was bad, not good.",
    "What is it?",
    "what is it",
    "😀😀",
    "😡",
    "😀",
    "👍👎",
    "👎👍",
]
POOL = [f"How many {word} fit in crate number {k}?" for k, word in enumerate(WORDS)] + HARD


def answer(k: int) -> str:
    return f"ANS{k}X"


@dataclass(frozen=True)
class Block:
    truth: int  # the input this block really answers
    text: str  # that input's text, as the model restates it
    slot: int  # its marker number in the prompt (1-based)
    label: int  # the index the model wrote
    restate: bool = True
    answer: str = ""
    bold: bool = False

    def render(self) -> str:
        star = "**" if self.bold else ""
        head = f"{star}Q[{self.label}]:{star} {self.text}\n" if self.restate else ""
        return f"{head}{star}A[{self.label}]:{star} Reasoning here.\nThe answer is {self.answer}."


corruption = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 15)),
    st.tuples(st.just("duplicate"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("swap"), st.integers(0, 15), st.integers(0, 15)),
    # exact restatements under each other's indices (the blocks stay where they are)
    st.tuples(st.just("swap_labels"), st.integers(0, 15), st.integers(0, 15)),
    st.tuples(st.just("relabel"), st.integers(0, 15), st.integers(1, 20)),
    st.tuples(st.just("no_restatement"), st.integers(0, 15)),
    st.tuples(st.just("bold"), st.integers(0, 15)),
    st.tuples(st.just("noise"), st.integers(0, 15)),
)


def corrupt(blocks: list[Block], ops: list[tuple]) -> tuple[list[str], bool]:
    parts: list[Block | str] = list(blocks)
    for op in ops:
        blocks_at = [i for i, p in enumerate(parts) if isinstance(p, Block)]
        if not blocks_at:
            break
        j = blocks_at[op[1] % len(blocks_at)]
        block = parts[j]
        assert isinstance(block, Block)
        if op[0] == "drop":
            del parts[j]
        elif op[0] == "duplicate":
            parts.insert(j + 1, block if op[2] else replace(block, answer="WRONG"))
        elif op[0] == "swap":
            k = blocks_at[op[2] % len(blocks_at)]
            parts[j], parts[k] = parts[k], parts[j]
        elif op[0] == "swap_labels" and block.restate:
            k = blocks_at[op[2] % len(blocks_at)]
            other = parts[k]
            assert isinstance(other, Block)
            if other.restate:
                parts[j], parts[k] = (
                    replace(block, label=other.label),
                    replace(other, label=block.label),
                )
        elif op[0] == "relabel" and block.restate:
            parts[j] = replace(block, label=op[2])  # the echo still says which input it is
        elif op[0] == "no_restatement" and block.label == block.slot:
            parts[j] = replace(block, restate=False)  # only the (correct) index remains
        elif op[0] == "bold":
            parts[j] = replace(block, bold=True)
        elif op[0] == "noise":
            parts.insert(j, "Let me think about the next one carefully.")
    return [p.render() if isinstance(p, Block) else p for p in parts], True


call_plan = st.tuples(
    st.lists(corruption, max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),  # truncate at this fraction (finish_reason=length)
    st.one_of(st.none(), st.floats(0.0, 1.0)),  # raise mid-stream at this fraction
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=st.lists(st.sampled_from(POOL), min_size=1, max_size=12, unique=True),
    batch_size=st.integers(1, 8),
    plans=st.lists(call_plan, max_size=8),
)
def test_every_input_gets_its_own_answer_or_an_explicit_error(inputs, batch_size, plans) -> None:
    n = len(inputs)

    def script(messages: list[BaseMessage], call: int):
        asked = asked_questions(messages)
        blocks = [
            Block(inputs.index(q), q, i, i, answer=answer(inputs.index(q)))
            for i, q in enumerate(asked, 1)
        ]
        if call > len(plans):
            return "\n\n".join(b.render() for b in blocks)
        ops, truncate_at, raise_at = plans[call - 1]
        text = "\n\n".join(corrupt(blocks, ops)[0])
        if raise_at is not None:
            return text[: int(len(text) * raise_at)], {"raise": RuntimeError("connection reset")}
        if truncate_at is not None:
            return text[: int(len(text) * truncate_at)], {"finish_reason": "length"}
        return text

    runner = AutoDemoBatchRunnable(
        ScriptedChatModel(script=script, chunk_size=5),
        batch_size=batch_size,
        retry_initial_delay=0.0,
    )
    results = runner.batch(inputs, return_exceptions=True)

    assert len(results) == n
    for k, result in enumerate(results):
        if isinstance(result, AutoDemoItemError):
            assert result.index == k and result.reason
        else:
            # "WRONG" is a wrong answer the model gave to this very question (a conflicting
            # duplicate whose original was dropped): wrong, but not misaligned.
            assert result in (answer(k), "WRONG"), f"input {k} got {result!r}"
