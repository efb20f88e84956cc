"""An adversarial fuzz of alignment: hostile inputs, misbehaving completions, every driver.

Each case draws inputs that are hard to tell apart (same words in another order, case-
or punctuation-only variants, exact duplicates, emoji-only, near-duplicates, marker-like
text, 20k-character inputs, invisible characters; since issue 20 also digit slips
such as 31 - 4 / 13 - 4, inputs that contain each other, inputs that embed a whole
``Q[i]: ... A[i]: The answer is ...`` block, operator-only differences, non-Latin
scripts) and a model that corrupts its completions (swaps, relabels, shifted indices,
dropped, duplicated or conflicting blocks, missing or paraphrased restatements,
truncation with and without a finish reason, mid-stream exceptions, runaways, chatter;
since issue 20 also restatements that slip to another input, merged restatements,
copies broken at an input's embedded markers, faithful copies that add spaces or drop
diacritics and variation selectors, and never-ending streams; since reliability round 3
also never-ending streams of empty chunks and of reasoning alone, as reasoning models
send while they think). Some cases show solved
demonstrations that are near-copies of the inputs (as retrieval picks them), and the
model re-answers a demonstration in place of its look-alike. The model only ever
answers a question with that question's own tag, so any answer carrying another input's
or a demonstration's tag is a misalignment, the defect this package exists to prevent.

Run the full fuzz (JSON out):

    python -m tests.adversarial --cases 11000 --out benchmarks/results/fuzz_alignment.json

The unit suite runs a small, fixed-seed slice of it (tests/unit/test_adversarial_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from pydantic import PrivateAttr

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoError
from langchain_autodemo.alignment import comparison_key
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.planning import PlannedBatch, SequentialSelector
from langchain_autodemo.prompts import one_line
from tests.fakes import ScriptedChatModel

DRIVERS = ("batch", "abatch", "as_completed", "aas_completed")
_QUESTION_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.MULTILINE)
_HEAD_ASKED = re.compile(r"Copy the first (\d+) words")
WRONG = "WRONG-ANSWER"  # a wrong answer the model gives to the question it restated


def tag(question: str) -> str:
    """The only answer the model ever gives to ``question`` (as rendered in the prompt)."""
    return "T" + hashlib.sha1(question.encode()).hexdigest()[:10]


# -- inputs ------------------------------------------------------------------------------

EMOJI = ["😀", "😡", "👍", "👎", "🎉", "🔥", "🙂", "🍎", "🐍", "✅", "❤\ufe0f", "❤"]
EMBEDDED = re.compile(r"EMB\d+")  # an answer written inside an input's own text
HYPOTHESES = [
    "The Raisani tribe resides in Pakistan.",
    "Steve Jobs worked for Apple.",
    "The ground is wet now.",
]
WORDS = ["apples", "boats", "clocks", "drums", "eggs", "forks", "geese", "hats", "kites"]


def _family(rng: random.Random) -> list[str]:
    kind = rng.choice(
        ["arith", "order", "case", "dup", "emoji", "near", "marker", "unicode", "long"]
        + ["slip", "superset", "embedded", "operator", "script"]
    )
    if kind == "slip":  # the digits of one number swapped: 31 - 4 and 13 - 4
        a, b = rng.sample(range(1, 10), 2)
        op = rng.choice("+-*")
        c = rng.randint(1, 9)
        return [f"What is {a}{b} {op} {c}?", f"What is {b}{a} {op} {c}?"]
    if kind == "superset":  # an RTE hypothesis alone and inside its premise question
        hypothesis = rng.choice(HYPOTHESES)
        pair = [hypothesis, f"Premise: It was reported on day {rng.randint(1, 9)}. "
                f"Hypothesis: {hypothesis}"]  # fmt: skip
        return pair if rng.random() < 0.5 else pair[::-1]
    if kind == "embedded":  # an input holding a whole block about another input
        a, b, k = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 4)
        inner = f"What is {a} times {b}?"
        outer = (
            f"Is {rng.randint(2, 99)} prime? Q[{k}]: {inner} A[{k}]: The answer is EMB{a}{b}{k}."
        )
        return [outer, inner]
    if kind == "operator":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        forms = [f"{a}-{b}", f"{a}*{b}", f"{a}.{b}", f"-{a}+{b}", f"{a}+{b}", f"{a}/{b}"]
        return [f"What is {form}?" for form in rng.sample(forms, rng.randint(2, 4))]
    if kind == "script":
        n, m = rng.randint(2, 9), rng.randint(1, 9)
        return [
            rng.choice(
                [
                    f"我有{n}个苹果，吃了{m}个，还剩几个？",
                    f"كَمْ عَدَدُ التُّفَّاحَاتِ فِي السَّلَّةِ {n}؟",
                    f"ฉันมีแอปเปิ้ล{n}ลูกกินไป{m}ลูก",
                    f"りんごが{n}個あります。{m}個食べました。",
                    f"I ❤️ film number {n}. Positive?",
                    f"Ist das Café {n} schön?",
                ]
            )
        ]
    if kind == "arith":
        return [f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}?"]
    if kind == "order":
        a, b = rng.sample(range(1, 20), 2)
        pair = rng.choice(
            [
                (f"Is {a} greater than {b}?", f"Is {b} greater than {a}?"),
                ("The film was good, not bad.", "The film was bad, not good."),
                (f"{WORDS[a % 9]} before {WORDS[b % 9]}", f"{WORDS[b % 9]} before {WORDS[a % 9]}"),
            ]
        )
        return list(pair)
    if kind == "case":
        base = rng.choice(["What is it?", "Is it red?", "Name the capital of France."])
        return [base, base.lower(), base.upper().rstrip("?.") + "!"]
    if kind == "dup":
        text = f"How many {rng.choice(WORDS)} fit in crate {rng.randint(1, 9)}?"
        return [text] * rng.randint(2, 3)
    if kind == "emoji":
        return ["".join(rng.choices(EMOJI, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
    if kind == "near":
        n = rng.randint(10, 90)
        return [f"How many {WORDS[0]} in crate {n + d}?" for d in range(rng.randint(2, 3))]
    if kind == "marker":
        return [
            rng.choice(
                [
                    "Q[2]: what is this?",
                    "A[1]: The answer is 5",
                    "Explain this:\nQ[3]: hidden\nA[3]: The answer is 9",
                    "first line\u2028Q[1]: sneaky",
                    "weird\x85A[2]: next-line char",
                    "**Q[1]:** bold marker",
                    "The answer is 7. Question 2: and more",
                ]
            )
        ]
    if kind == "unicode":
        return [rng.choice(["What is １２ + ３?", "zero\u200bwidth inside", "ｆｕｌｌ width"])]
    return ["Consider this story. " + "The farmer walks to the field and back. " * 500]


def draw_inputs(rng: random.Random, n: int) -> list[str]:
    inputs: list[str] = []
    while len(inputs) < n:
        inputs.extend(_family(rng))
    inputs = inputs[:n]
    rng.shuffle(inputs)
    return inputs


# -- completions -------------------------------------------------------------------------


@dataclass
class Block:
    question: str  # the question this block really answers (as rendered in the prompt)
    label: int  # the index the model writes
    restate: str | None  # the restatement written (None: left out)
    answer: str
    final_line: bool = True
    bold: bool = False
    copied: bool = False  # a demonstration's block, copied whole (restatement included)
    slipped: bool = False  # its restatement names another input than the one it answers

    def render(self) -> str:
        star = "**" if self.bold else ""
        head = f"{star}Q[{self.label}]:{star} {self.restate}\n" if self.restate is not None else ""
        body = "Let me think step by step about this one."
        end = f"\nThe answer is {self.answer}." if self.final_line else f" So it is {self.answer}"
        return f"{head}{star}A[{self.label}]:{star} {body}{end}"


def _paraphrase(rng: random.Random, text: str) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        return text.lower()
    if choice == 1:
        return text.rstrip("?.!") + " "
    if choice == 2:
        words = text.split()
        if len(words) > 3:
            del words[rng.randrange(1, len(words) - 1)]
        return " ".join(words)
    if choice == 3:
        return f'"{text}"'
    return "Question: " + text


_ARABIC_MARKS = re.compile("[\u064b-\u065f\u0670]")
_NO_SPACE_CHAR = re.compile("[\u0e00-\u0e7f\u3040-\u30ff\u4e00-\u9fff]")


def _faithful(rng: random.Random, text: str) -> str:
    """What a faithful copy may change: spaces around digits and inside scripts without
    spaces, optional diacritics, variation selectors."""
    text = _ARABIC_MARKS.sub("", text).replace("\ufe0f", "")
    text = re.sub(r"(?<=\D)(\d+)(?=\D)", r" \1 ", text) if rng.random() < 0.5 else text
    spots = [m.end() for m in _NO_SPACE_CHAR.finditer(text)][:-1]
    for at in sorted(rng.sample(spots, min(len(spots), 2)), reverse=True):
        text = text[:at] + " " + text[at:]
    return text


def _surface(rng: random.Random, text: str) -> str:
    """The same words, written differently: case, end punctuation, quotes, a prefix."""
    return rng.choice((text.lower(), text.rstrip("?.!") + " ", f'"{text}"', "Question: " + text))


OPS = (
    "swap",
    "relabel",
    "shift",
    "drop",
    "duplicate",
    "conflict",
    "no_restate",
    "paraphrase",
    "bold",
    "noise",
    "no_final_line",
    "marker_conflict",
    "invent",
    "repeat_all",
    "merge",
    "split_restatement",
    "chatter",
    "empty",
    "copy_demo",
    "copy_demo",
    "fragment",
    "slip",
    "slip",
    "merge_other",
    "break_embedded",
    "break_embedded",
    "faithful",
)
ENDINGS = (
    "stop",
    "stop",
    "stop",
    "length",
    "no_finish",
    "raise",
    "raise_first",
    "endless",
)
#: What an endless stream goes on with once its text is out: ever new lines (``text``),
#: empty chunks (``blank``), or reasoning deltas and thinking blocks with empty text.
ENDLESS = ("text", "blank", "reasoning")
_THOUGHT = "Wait, let me reconsider the question once more before I answer it. " * 12


def _copy(rng: random.Random, text: str, head_words: int | None) -> str:
    """What the model restates of ``text``: all of it, or (asked for a head) mostly the
    head, sometimes all of it or a word or two more or less."""
    if head_words is None:
        return text
    words = text.split()
    roll = rng.random()
    if roll < 0.15:
        return text
    count = head_words if roll < 0.8 else max(1, head_words + rng.choice((-2, -1, 1, 2)))
    return " ".join(words[:count])


def corrupt(
    rng: random.Random,
    questions: list[str],
    ops: list[str],
    demos: Sequence[str] = (),
    head_words: int | None = None,
) -> str:
    blocks: list[Block | str] = [
        Block(q, i, _copy(rng, q, head_words), tag(q)) for i, q in enumerate(questions, 1)
    ]
    if "slip" in ops or "merge_other" in ops:
        # A restatement that names another input than the one answered is detectable only
        # while the index still says which one was answered, and while it is the only such
        # block: two slips that trade texts, or a slip relabelled to the input it names,
        # read exactly like a legitimate swap or a correct block.
        ops = [op for op in ops if op not in ("relabel", "shift", "marker_conflict")]
    slips = 0
    for op in ops:
        at = [i for i, b in enumerate(blocks) if isinstance(b, Block)]
        if not at:
            break
        j = rng.choice(at)
        b = blocks[j]
        assert isinstance(b, Block)
        if op == "swap":
            k = rng.choice(at)
            blocks[j], blocks[k] = blocks[k], blocks[j]
        elif op == "relabel":
            b.label = rng.randint(1, len(questions) + 5)
        elif op == "shift":  # every block from here on one index off (a skipped number)
            for i in at:
                if i >= j:
                    blk = blocks[i]
                    assert isinstance(blk, Block)
                    blk.label += rng.choice((-1, 1))
        elif op == "drop":
            del blocks[j]
        elif op == "duplicate":
            blocks.insert(rng.randint(j, len(blocks)), Block(**vars(b)))
        elif op == "conflict":
            blocks.insert(rng.randint(0, len(blocks)), Block(**{**vars(b), "answer": WRONG}))
        elif op == "no_restate" and not b.copied:
            # (An unrestated copy of a demonstration would be the model's own wrong answer
            # to a one-question call: nothing in the completion tells it apart.)
            b.restate = None
        elif op == "paraphrase" and b.restate is not None and not b.slipped:
            b.restate = _paraphrase(rng, b.restate)
        elif op == "bold":
            b.bold = True
        elif op == "noise":
            blocks.insert(j, "Let me double-check the previous one. Q[1] was fine.")
        elif op == "no_final_line":
            b.final_line = False
        elif op == "marker_conflict":
            blocks[j] = b.render().replace(f"A[{b.label}]:", f"A[{b.label + 1}]:", 1)
        elif op == "invent":
            n = len(questions) + rng.randint(1, 3)
            blocks.append(Block(f"invented {n}", n, f"An invented question {n}?", tag("x")))
        elif op == "repeat_all":
            blocks.extend(Block(**vars(x)) for x in list(blocks) if isinstance(x, Block))
        elif op == "merge" and b.restate is not None:
            blocks[j] = (
                f"Q[{b.label}]: {b.restate}\nA[{b.label}]: The answer is {b.answer}. "
                f"And the next one is {WRONG}."
            )
        elif op == "split_restatement" and b.restate and " " in b.restate:
            head, _, tail = b.restate.partition(" ")
            b.restate = f"{head}\n{tail}"
        elif op == "chatter":
            blocks.insert(0, "Sure! Here are the answers, restated as asked.")
        elif op == "empty":
            return ""
        elif op == "fragment" and b.restate is not None and not b.copied and not b.slipped:
            words = b.restate.split()  # a verbatim run of words, as a model copies one sentence
            if len(words) > 4:
                start = rng.randrange(len(words) - 3)
                b.restate = " ".join(words[start : rng.randint(start + 4, len(words))])
        elif op == "slip" and len(questions) > 1 and not slips and not b.copied:
            # restates another input exactly (a digit slip) but answers its own question
            other = rng.choice([q for q in questions if q != b.question])
            b.restate = _copy(rng, other, head_words)
            b.slipped, slips = True, 1
        elif op == "merge_other" and len(questions) > 1 and b.restate is not None:
            # two questions copied as one (or a prompt line joined as a wrapped line)
            other = rng.choice([q for q in questions if q != b.question])
            joint = rng.choice((" ", "\n"))
            b.restate = (
                f"{b.restate}{joint}{other}" if rng.random() < 0.7 else f"{other} {b.restate}"
            )
            if rng.random() < 0.5 and not slips and not b.copied:
                b.question, b.answer = other, tag(other)  # ... and answers the other one
                b.slipped, slips = True, 1
        elif op == "break_embedded" and b.restate is not None and not b.copied:
            # a copy broken at the markers inside the input (with blank lines, sometimes)
            gap = rng.choice(("\n", "\n\n"))
            b.restate = re.sub(r" (?=(?:Q|A)\[\d+\]:)", gap, b.restate)
        elif op == "faithful" and b.restate is not None and not b.copied:
            b.restate = _faithful(rng, b.restate)
        elif op == "copy_demo" and demos:  # re-answers a demonstration in this block's place
            demo = rng.choice(demos)
            # copied as models copy: word for word, at most re-cased, quoted or prefixed
            # (dropping a word could turn the look-alike back into the input itself)
            copied = _copy(rng, demo, head_words)
            b.restate = _surface(rng, copied) if rng.random() < 0.4 else copied
            b.answer, b.copied = tag(demo), True
    return "\n\n".join(x.render() if isinstance(x, Block) else x for x in blocks)


def asked(messages: list[BaseMessage]) -> list[str]:
    last = [m for m in messages if isinstance(m, HumanMessage)][-1]
    return [text for _, text in _QUESTION_LINE.findall(str(last.content))]


def shown_demos(messages: list[BaseMessage]) -> list[str]:
    """The demonstration questions: every earlier human turn's question lines."""
    earlier = [m for m in messages if isinstance(m, HumanMessage)][:-1]
    return [text for m in earlier for _, text in _QUESTION_LINE.findall(str(m.content))]


def look_alike(rng: random.Random, question: str) -> str:
    """A different question that looks almost the same (another number, one word more)."""
    digits = [i for i, ch in enumerate(question) if ch.isdigit()]
    if digits and rng.random() < 0.7:
        i = rng.choice(digits)
        return question[:i] + str((int(question[i]) + rng.randint(1, 8)) % 10) + question[i + 1 :]
    words = question.split(" ")
    at = rng.randrange(len(words) + 1)
    return " ".join([*words[:at], rng.choice(WORDS), *words[at:]])


class LookAlikeDemos(SequentialSelector):
    """Consecutive batches, each shown solved look-alikes of its own inputs (retrieval's
    worst case: the demonstrations resemble the questions as closely as possible)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.demos: list[str] = []

    def plan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        keys = {comparison_key(one_line(t)) for t in texts}
        plans = []
        for part in super().plan(texts, batch_size):
            demos = []
            for i in self.rng.sample(part.indices, k=min(len(part.indices), 3)):
                demo = one_line(look_alike(self.rng, texts[i]))
                if comparison_key(demo) not in keys and len(demo) < 2000:
                    demos.append((demo, f"Thinking.\nThe answer is {tag(demo)}."))
            self.demos += [q for q, _ in demos]
            plans.append(replace(part, demonstrations=tuple(demos)))
        return plans


class RateLimited(Exception):
    """A provider error with a Retry-After of zero seconds."""

    retry_after = 0.0


#: An endless stream read this far was read "forever": a hang.
HANG_CHUNKS = 40_000


class EndlessScriptedModel(ScriptedChatModel):
    """A scripted model whose reply may go on forever (metadata ``endless``: one of
    :data:`ENDLESS`): after its text it streams ever new lines and short repeated ones,
    empty chunks, or reasoning alone, up to :data:`HANG_CHUNKS`."""

    hangs: int = 0
    _endless: Counter[str] = PrivateAttr(default_factory=Counter)

    @property
    def endless(self) -> Counter[str]:
        return self._endless

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Any:  # fmt: skip
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        text, meta = self._reply(messages)
        size = self.chunk_size
        pieces = (
            text.splitlines(keepends=True)
            if size <= 0
            else [text[i : i + size] for i in range(0, len(text), size)]
        )
        endless = meta.get("endless")
        if endless:
            self._endless[endless] += 1
            for n in range(HANG_CHUNKS):
                if n < len(pieces):
                    message = AIMessageChunk(content=pieces[n])
                elif endless == "blank":
                    message = AIMessageChunk(content="")
                elif endless == "reasoning":
                    thought = {"reasoning_content": _THOUGHT}
                    message = (
                        AIMessageChunk(content="", additional_kwargs=thought)
                        if n % 2
                        else AIMessageChunk(content=[{"type": "thinking", "thinking": _THOUGHT}])
                    )
                else:
                    message = AIMessageChunk(content="Hmm.\n" if n % 3 else f"Idea {n}.\n")
                yield ChatGenerationChunk(message=message)
            self.hangs += 1
            return
        logprob = meta.get("logprob")
        offset = 0
        for piece in pieces:
            metadata: dict[str, Any] = {}
            if logprob is not None:
                token = {"token": piece, "logprob": logprob(offset, piece)}
                metadata = {"logprobs": {"content": [token]}}
            offset += len(piece)
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=piece, response_metadata=metadata)
            )
        if "raise" in meta:
            raise meta["raise"]
        reason = meta.get("finish_reason", "stop")
        finish = {"finish_reason": reason} if reason else {}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=finish))


def hostile_script(seed: int) -> Callable[[list[BaseMessage], int], Any]:
    def script(messages: list[BaseMessage], call: int) -> Any:
        rng = random.Random(f"{seed}/{call}/{'|'.join(asked(messages))}")
        questions = asked(messages)
        # Misbehave often at first, less on re-asks, so that recovery is exercised too.
        misbehave = rng.random() < (0.9 if call <= 3 else 0.5)
        ops = rng.choices(OPS, k=rng.randint(1, 4)) if misbehave else []
        last = [m for m in messages if isinstance(m, HumanMessage)][-1]
        head = _HEAD_ASKED.search(str(last.content))
        text = corrupt(rng, questions, ops, shown_demos(messages), int(head[1]) if head else None)
        ending = rng.choice(ENDINGS) if misbehave else "stop"
        if ending == "raise_first":
            return RateLimited("429 Too Many Requests")
        if ending == "endless":
            return text[: int(len(text) * rng.random())], {"endless": rng.choice(ENDLESS)}
        cut = int(len(text) * rng.random())
        if ending == "length":
            return text[:cut], {"finish_reason": "length"}
        if ending == "no_finish":
            return text[:cut], {"finish_reason": None}
        if ending == "raise":
            return text[:cut], {"raise": ConnectionResetError("connection reset by peer")}
        return text

    return script


class ContentFiltered(Exception):
    """A provider's refusal of a request for what it holds (HTTP 400)."""

    status_code = 400


def round3_script(
    base: Callable[[list[BaseMessage], int], Any],
    seed: int,
    poison: str | None,
    logprobs: bool,
) -> Callable[[list[BaseMessage], int], Any]:
    """``base`` with the reliability round 3 classes: a poison input whose presence makes
    the provider refuse the whole call (400), single calls (escalations) answered with
    their question's tag, and random token log-probabilities on every reply."""
    poisoned = one_line(poison) if poison is not None else None

    def script(messages: list[BaseMessage], call: int) -> Any:
        humans = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
        if poisoned is not None and any(poisoned in text for text in humans):
            return ContentFiltered("400: the request was refused by the content filter")
        if asked(messages) or not humans:
            reply = base(messages, call)
        else:  # a single call (an escalation): its question is the last human message
            reply = f"Thinking.\nThe answer is {tag(humans[-1])}."
        if not logprobs or isinstance(reply, BaseException):
            return reply
        text, meta = reply if isinstance(reply, tuple) else (reply, {})
        draws = random.Random(f"{seed}/{call}/logprobs")
        return text, {**meta, "logprob": lambda offset, piece: -3 * draws.random()}

    return script


# -- running and judging -----------------------------------------------------------------


@dataclass
class Tally:
    cases: int = 0
    items: int = 0
    correct: int = 0
    errors: int = 0
    wrong_own: int = 0  # the model's wrong answer to the question it restated: not misaligned
    misaligned: int = 0
    hangs: int = 0  # endless streams read to HANG_CHUNKS
    endless: Counter[str] = field(default_factory=Counter)  # endless streams, by kind
    calls: int = 0
    poisoned: int = 0  # cases with an input whose presence makes the provider refuse a call
    escalated: int = 0  # answers that came from an escalation (with include_details)
    isolated: int = 0  # cases run as an isolated caller
    leaks: int = 0  # an isolated caller's error or reasons showing another input
    by_driver: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    wrong_examples: list[dict[str, Any]] = field(default_factory=list)

    def judge(
        self,
        inputs: list[str],
        results: list[Any],
        driver: str,
        seed: int,
        demos: Sequence[str] = (),
    ) -> None:
        rendered = [one_line(q) for q in inputs]  # what the prompt shows the model
        tags = {tag(q) for q in rendered} | {tag(d) for d in demos}
        self.cases += 1
        self.by_driver[driver] += 1
        assert len(results) == len(inputs), "one result per input"
        for k, result in enumerate(results):
            self.items += 1
            embedded = EMBEDDED.findall(str(result))
            if isinstance(result, AutoDemoError):
                assert getattr(result, "index", k) == k, "an error names its own item"
                self.errors += 1
            elif tag(rendered[k]) in str(result):
                self.correct += 1
            elif embedded and all(e in rendered[k] for e in embedded):
                self.wrong_own += 1  # text of its own input, not another's
            elif embedded or any(t in str(result) for t in tags - {tag(rendered[k])}):
                self.misaligned += 1
                if len(self.examples) < 20:
                    self.examples.append(
                        {
                            "seed": seed,
                            "driver": driver,
                            "item": k,
                            "input": inputs[k],
                            "got": str(result),
                        }
                    )
            else:
                self.wrong_own += 1
                if len(self.wrong_examples) < 5:
                    self.wrong_examples.append({"input": inputs[k][:80], "got": str(result)[:120]})

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "model_calls": self.calls,
            "items": self.items,
            "correct": self.correct,
            "explicit_errors": self.errors,
            "wrong_but_own": self.wrong_own,
            "misaligned": self.misaligned,
            "hangs": self.hangs,
            "endless_streams": dict(self.endless),
            "poisoned_cases": self.poisoned,
            "escalated_answers": self.escalated,
            "isolated_cases": self.isolated,
            "leaks": self.leaks,
            "by_driver": dict(self.by_driver),
            "misaligned_examples": self.examples,
            "wrong_but_own_examples": self.wrong_examples,
        }


def run_case(seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    inputs = draw_inputs(rng, rng.randint(1, 12))
    longest = max(len(q) for q in inputs)
    chunk = rng.choice((1, 3, 7, 0)) if longest < 500 else rng.choice((64, 0))
    # Round 3's classes, drawn apart so that the draws above stay what they were: a poison
    # input, escalation (with and without log-probabilities), isolated callers whose
    # errors and details must never quote another input.
    extra = random.Random(f"{seed}/round3")
    poison = extra.choice(inputs) if extra.random() < 0.25 else None
    escalate = extra.choice((0.0, 0.0, 0.25, 0.5, 1.0))
    isolate = extra.random() < 0.5
    details = extra.random() < 0.5
    script = round3_script(hostile_script(seed), seed, poison, extra.random() < 0.5)
    model = EndlessScriptedModel(script=script, chunk_size=chunk)
    selector = LookAlikeDemos(random.Random(seed)) if rng.random() < 0.3 else None
    runner = AutoDemoBatchRunnable(
        model,
        selector=selector,
        batch_size=rng.randint(1, 8),
        max_attempts=rng.randint(1, 4),
        retry_initial_delay=0.0,
        retry_max_delay=0.0,
        max_output_tokens=rng.choice((None, None, 4000)),
        restate=rng.choice(("full", "head")),
        head_words=rng.randint(1, 9),
        escalate=escalate,
        include_details=details,
    )
    if isolate:
        runner = runner.isolating_traces()
    driver = DRIVERS[seed % len(DRIVERS)]
    config = {"max_concurrency": rng.randint(1, 4)}
    if driver == "batch":
        results = runner.batch(inputs, config, return_exceptions=True)
    elif driver == "abatch":
        results = asyncio.run(runner.abatch(inputs, config, return_exceptions=True))
    elif driver == "as_completed":
        got = dict(runner.batch_as_completed(inputs, config, return_exceptions=True))
        results = [got[i] for i in range(len(inputs))]
    else:

        async def collect() -> dict[int, Any]:
            stream = runner.abatch_as_completed(inputs, config, return_exceptions=True)
            return {i: r async for i, r in stream}

        got = asyncio.run(collect())
        results = [got[i] for i in range(len(inputs))]
    tally.calls += len(model.calls)
    tally.hangs += model.hangs
    tally.endless.update(model.endless)
    tally.poisoned += poison is not None
    tally.escalated += sum(isinstance(r, ItemResult) and r.escalated for r in results)
    if isolate:
        tally.isolated += 1
        tally.leaks += leaks(inputs, results)
    answers = [r.answer if isinstance(r, ItemResult) else r for r in results]
    tally.judge(inputs, answers, driver, seed, selector.demos if selector else ())


def leaks(inputs: list[str], results: list[Any]) -> int:
    """Results of an isolated caller that show another input: its tag (the model's answer
    to it) or its text, in an error's message and reasons or an answer's reasons."""
    rendered = [one_line(q) for q in inputs]
    found = 0
    for k, result in enumerate(results):
        if isinstance(result, AutoDemoError):
            shown = " ".join([str(result), *map(str, getattr(result, "reasons", ()))])
        elif isinstance(result, ItemResult):
            shown = " ".join(map(str, result.reasons))
        else:
            continue
        for j, other in enumerate(rendered):
            if j == k or other == rendered[k]:
                continue
            # a quote is cut at 80 characters: look for windows of the other's text
            windows = {other[at : at + 20] for at in range(0, max(1, len(other) - 19), 10)}
            text_shown = any(len(w) >= 20 and w in shown and w not in rendered[k] for w in windows)
            if tag(other) in shown or text_shown:
                found += 1
                break
    return found


def fuzz(cases: int, first_seed: int = 0) -> Tally:
    tally = Tally()
    for seed in range(first_seed, first_seed + cases):
        run_case(seed, tally)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    tally = fuzz(args.cases, args.seed)
    report = {
        **tally.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
        "command": f"python -m tests.adversarial --cases {args.cases} --seed {args.seed}",
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    raise SystemExit(1 if tally.misaligned or tally.hangs or tally.leaks else 0)


if __name__ == "__main__":
    main()
