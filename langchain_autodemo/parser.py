"""Turn one completion, whole or streamed, into per-item results as each item closes.

The scanner works line by line and only ever looks at the current line, so streaming
a completion in tiny chunks costs the same as parsing it whole (linear in its size).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.outputs import Generation
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict

from langchain_autodemo.markers import Markers
from langchain_autodemo.messages import non_text_kinds, reasoning_of, text_of

__all__ = [
    "ParsedItem",
    "CompletionScanner",
    "AutoDemoOutputParser",
    "clean_final_answer",
    "json_candidate",
    "non_text_kinds",
    "reasoning_of",
    "text_of",
]

ClosedBy = Literal["final_answer", "answer_line", "next_marker", "end_of_stream"]

# "The answer is 18." / "Final answer: 18" / "**Answer:** 18" / "Therefore, the answer is $18."
_FINAL_ANSWER = re.compile(
    r"(?:\bfinal\s+answer\b|\bthe\s+answer\s+is\b|^[\s*_#>-]*answer\b)[\s*_`]*(?:is\b)?[\s*_`]*[:：]?\s*(.+)$",
    re.IGNORECASE,
)
# A LaTeX \boxed{...} is how math-tuned models mark their final answer.
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
# A code fence line, opening or closing (```json, ```, ~~~), as models fence structured answers.
_FENCE = re.compile(r"^[\s*_]*(?:`{3,}|~{3,})\s*[A-Za-z0-9_+-]*\s*$")
_FENCE_TAIL = re.compile(r"(?:`{3,}|~{3,})\s*[A-Za-z0-9_+-]*\s*$")
_LANGUAGE = re.compile(r"^\s*[A-Za-z0-9_+-]*\s*$")
_TRAILING = re.compile(r"[\s.;,*_`]+$")
_LEADING = re.compile(r"^[\s*_`:]+")
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\$")
# Answer lines at least this long count towards loop detection (shorter ones, such as
# "Step 1:", repeat in healthy reasoning).
_LOOP_LINE_CHARS = 24


def _whole_json(text: str) -> bool:
    """Whether ``text`` is one complete JSON value (a terse answer that opened one and
    stops being read once it closes)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def clean_final_answer(text: str) -> str:
    """Strip the decoration models put around a final answer (bold, LaTeX, final period).

    Example:
        >>> clean_final_answer(r"**\\(\\boxed{18}\\)**.")
        '18'
    """
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1)
    text = _MATH_DELIMITERS.sub("", text)
    return _TRAILING.sub("", _LEADING.sub("", text)).strip()


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One (restated question, answer) pair found in a completion.

    ``index`` is the number the model wrote after the marker (1-based), which may be
    wrong: :mod:`langchain_autodemo.alignment` decides which input the item belongs to.
    """

    index: int
    question: str | None
    answer: str | None
    final_answer: str | None
    closed_by: ClosedBy
    marker_conflict: bool = False
    """True when an answer marker's index differed from the question it followed."""

    @property
    def value(self) -> str | None:
        """The final answer when the block states one, else the whole answer block."""
        if self.final_answer:
            return self.final_answer
        return self.answer or None


class _OpenItem:
    __slots__ = (
        "index",
        "question",
        "answer",
        "final",
        "conflict",
        "in_answer",
        "implicit",
        "gap",
        "seen",
        "loops",
        "fence",
        "json",
    )

    def __init__(self, index: int, question: str | None) -> None:
        self.index = index
        self.question: list[str] | None = [question] if question is not None else None
        self.answer: list[str] | None = None
        self.final: str | None = None
        self.conflict = False
        self.in_answer = question is None
        self.implicit = False  # answer text that began without its A[i] marker
        self.gap = False  # a blank line followed the restated question
        self.seen: dict[str, int] = {}  # answer lines long enough to tell a loop from a habit
        self.loops = 0  # how often the most repeated such line came back
        self.fence: list[str] | None = None  # the lines of a fenced final answer, while open
        self.json: list[str] | None = None  # the lines of a JSON answer, while unfinished

    def close(self, closed_by: ClosedBy) -> ParsedItem:
        answer = "\n".join(self.answer).strip() if self.answer is not None else None
        question = " ".join(p for p in self.question if p).strip() if self.question else None
        return ParsedItem(
            index=self.index,
            question=question or None,
            answer=answer or None,
            final_answer=self.final,
            closed_by=closed_by,
            marker_conflict=self.conflict,
        )


class CompletionScanner:
    """Incremental, I/O-free scanner: ``feed`` text, get back the items it closed.

    An item closes at its final-answer line (``The answer is ...``), at the end of its
    answer line when ``reasoning=False``, at the next marker, or at the end of the
    stream. Text before the first marker and after a closed item (preambles, closing
    remarks) is ignored.

    ``continues(restatement)`` (optional) says whether a restatement still reads as the
    start of an input that has marker-like text inside: a marker line that keeps it so
    is taken as more of the restatement (a copy of that input broken at its markers).

    Example:
        >>> scanner = CompletionScanner()
        >>> scanner.feed("Q[1]: 2+2?\\nA[1]: 2 plus 2 is 4.\\nThe answer")
        []
        >>> [item.value for item in scanner.feed(" is 4.\\nQ[2]: 3+5?\\n")]
        ['4']
        >>> [item.value for item in scanner.feed("A[2]: The answer is 8.")]
        []
        >>> [item.value for item in scanner.finish()]
        ['8']
    """

    def __init__(
        self,
        markers: Markers | None = None,
        *,
        reasoning: bool = True,
        continues: Callable[[str], bool] | None = None,
    ) -> None:
        self._pattern = (markers or Markers()).line_pattern
        self._reasoning = reasoning
        self._continues = continues
        self._pending: list[str] = []  # pieces of the current, unfinished line
        self._item: _OpenItem | None = None
        self._finished = False

    def feed(self, text: str) -> list[ParsedItem]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        closed: list[ParsedItem] = []
        if "\n" not in text:
            if text:
                self._pending.append(text)
            return closed
        lines = text.split("\n")
        self._pending.append(lines[0])
        self._line("".join(self._pending), closed)
        for line in lines[1:-1]:
            self._line(line, closed)
        self._pending = [lines[-1]] if lines[-1] else []
        return closed

    def restated_open(self) -> tuple[int, str] | None:
        """``(index, restated question)`` of the open item once its restatement is
        complete (the model has moved on to its answer), else ``None``.

        Lets a reader decide early that the stream has run past the questions asked.
        """
        item = self._item
        if item is None or item.question is None or not item.in_answer:
            return None
        return item.index, " ".join(p for p in item.question if p).strip()

    def open_repetitions(self) -> int:
        """How many times the open answer's most repeated long line has appeared.

        A small model that loops writes the same paragraph until the token limit (seen on
        Qwen2.5-Coder-1.5B: 60 copies of one line, three quarters of a 16-item completion).
        """
        return self._item.loops if self._item is not None else 0

    def finish(self) -> list[ParsedItem]:
        """Flush the last line and close the open item (end of stream)."""
        if self._finished:
            return []
        closed: list[ParsedItem] = []
        if self._pending:
            self._line("".join(self._pending), closed, last=True)
            self._pending = []
        if self._item is not None:
            closed.append(self._item.close("end_of_stream"))
            self._item = None
        self._finished = True
        return closed

    def _line(self, line: str, closed: list[ParsedItem], last: bool = False) -> None:
        line = line.rstrip("\r")
        match = self._pattern.match(line)
        if match is not None:
            self._marker(match, closed, last)
            return
        item = self._item
        if item is None:
            return
        if not line.strip():
            item.gap = not item.in_answer
            return
        if not item.in_answer:
            if not item.gap:  # a restated question wrapped over several lines
                assert item.question is not None
                item.question.append(line.strip())
                return
            # Real models sometimes drop the A[i] marker and start reasoning after a blank
            # line: the text still answers the question just restated.
            item.in_answer = item.implicit = True
            item.answer = []
        assert item.answer is not None
        item.answer.append(line)
        if len(line) >= _LOOP_LINE_CHARS:
            count = item.seen[line] = item.seen.get(line, 0) + 1
            item.loops = max(item.loops, count)
        self._maybe_close_on(line, closed, last)

    def _marker(self, match: re.Match[str], closed: list[ParsedItem], last: bool) -> None:
        item = self._item
        if (
            self._continues is not None
            and item is not None
            and item.question is not None
            and not item.in_answer
        ):
            line = match.string.strip()
            if self._continues(" ".join([*item.question, line])):
                # A copy of an input with marker-like text inside, broken at those markers:
                # the line is more of the restatement, not an item of its own.
                item.question.append(line)
                return
        rest = match.group("rest").strip()
        groups = match.groupdict()
        if groups["q"] is not None:
            if self._item is not None:
                closed.append(self._item.close("next_marker"))
            self._item = _OpenItem(int(groups.get("qb") or groups.get("qn") or 0), rest)
            return
        index = int(groups.get("ab") or groups.get("an") or 0)
        item = self._item
        if item is not None and item.implicit and item.index == index:
            item.implicit = False  # the marker came late: keep one answer block
            if rest:
                item.answer.append(rest)  # type: ignore[union-attr]
                self._maybe_close_on(rest, closed, last)
            return
        if item is not None and not item.in_answer:
            # The answer marker that follows a restated question.
            item.conflict = item.index != index
            item.in_answer = True
        else:
            if item is not None:
                closed.append(item.close("next_marker"))
            item = self._item = _OpenItem(index, None)
        item.answer = [rest] if rest else []
        if _FENCE_TAIL.search(match.string) and _LANGUAGE.match(rest):
            item.fence = []  # "A[1]: ```json": the answer is the fenced text that follows
            return
        if rest:
            self._maybe_close_on(rest, closed, last)

    def _maybe_close_on(self, line: str, closed: list[ParsedItem], last: bool) -> None:
        item = self._item
        assert item is not None
        if item.fence is not None:  # inside a fenced final answer: read to its closing fence
            if _FENCE.match(line):
                item.final = "\n".join(item.fence).strip() or None
                item.fence = None
                if item.final and not last:
                    closed.append(item.close("final_answer"))
                    self._item = None
            else:
                item.fence.append(line)
            return
        if item.json is not None:  # a JSON value over several lines: read until it is whole
            item.json.append(line)
            if _whole_json("\n".join(item.json)):
                item.final = "\n".join(item.json).strip()
                item.json = None
                if not last:
                    closed.append(item.close("answer_line"))
                    self._item = None
            return
        if not self._reasoning and line.strip()[:1] in ("{", "[") and not _whole_json(line):
            item.json = [line]  # a terse answer that opens a JSON value: it goes on
            return
        final = _FINAL_ANSWER.search(line) or _BOXED.search(line)
        fence_opens = (
            bool(_FENCE_TAIL.search(line)) and _LANGUAGE.match(final.group(final.lastindex or 0))
            if final
            else not self._reasoning and bool(_FENCE.match(line))
        )
        if fence_opens:
            # "The answer is ```json" (or a terse answer that opens a fence): the answer is
            # the fenced text on the lines that follow, not the word after the backticks
            item.fence = []
            return
        value = clean_final_answer(final.group(final.lastindex or 0)) if final else ""
        closed_by: ClosedBy = "final_answer"
        if not value and not self._reasoning:
            value, closed_by = clean_final_answer(line), "answer_line"
        if not value:
            return
        item.final = value
        if not last:  # an unterminated last line may be cut off: finish() closes it
            closed.append(item.close(closed_by))
            self._item = None


def json_candidate(text: str) -> str | None:
    """The JSON value inside ``text`` as models write it: in a code fence (whose opening
    backticks the scanner may have taken as decoration, leaving ``json``), over several
    lines, after prose; the last one where there are several (a draft, then the answer).
    ``None`` when there is none.

    Example:
        >>> json_candidate('json\\n{"label": "pos"}\\n```')
        '{"label": "pos"}'
        >>> json_candidate("no json here") is None
        True
    """
    # fence lines, and the bare language tag a fence leaves once its backticks were read
    # as decoration
    lines = [
        line for line in text.splitlines()
        if not (_FENCE.match(line) or line.strip().lower() == "json")
    ]  # fmt: skip
    body = "\n".join(lines)
    decoder = json.JSONDecoder()
    found, at = None, 0
    while at < len(body):  # the last whole value: a final answer comes after any draft
        if body[at] in "{[":
            try:
                _, end = decoder.raw_decode(body, at)
            except ValueError:
                at += 1
                continue
            found, at = body[at:end], end
            continue
        at += 1
    return found


class AutoDemoOutputParser(BaseOutputParser[list[ParsedItem]]):
    """Parse an Auto-Demo (or plain batch) completion into :class:`ParsedItem` objects.

    ``invoke``/``parse`` take a whole completion and return the list of items.
    ``stream``/``transform`` (and their async forms) take a stream of chunks (strings
    or message chunks) and yield each item as soon as it is closed, as a one-element
    list: LangChain adds stream chunks up with ``+``, so the chunks of a stream add up
    to exactly what ``invoke`` returns, and a step after the parser (which receives
    the sum) works under ``stream``, ``astream`` and ``batch`` alike.

    Example:
        >>> parser = AutoDemoOutputParser()
        >>> [(i.index, i.value) for i in parser.invoke("Q[1]: 1+1?\\nA[1]: 2")]
        [(1, '2')]
        >>> chunks = ["Q[1]: 1+1?\\nA[1]: The answer", " is 2.\\nQ[2]: 2+3?\\nA[2]: 5"]
        >>> [[i.value for i in chunk] for chunk in parser.transform(iter(chunks))]
        [['2'], ['5']]
        >>> # chain = prompt | chat_model | parser; for (item,) in chain.stream(...): ...
    """

    markers: Markers = Markers()
    reasoning: bool = True

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _type(self) -> str:
        return "autodemo_output_parser"

    def _scanner(self) -> CompletionScanner:
        return CompletionScanner(self.markers, reasoning=self.reasoning)

    def parse(self, text: str) -> list[ParsedItem]:
        scanner = self._scanner()
        return [*scanner.feed(text), *scanner.finish()]

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> list[ParsedItem]:
        return self.parse(result[0].text)

    def iter_items(self, chunks: Iterable[str | BaseMessage]) -> Iterator[ParsedItem]:
        """Each item of a streamed completion as soon as it closes (bare items, no lists)."""
        scanner = self._scanner()
        for chunk in chunks:
            yield from scanner.feed(text_of(chunk))
        yield from scanner.finish()

    def _stream_chunks(self, chunks: Iterator[str | BaseMessage]) -> Iterator[list[ParsedItem]]:
        for item in self.iter_items(chunks):
            yield [item]

    def stream(
        self, input: str | BaseMessage, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[list[ParsedItem]]:
        yield from self.transform(iter([input]), config, **kwargs)

    async def astream(
        self, input: str | BaseMessage, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[list[ParsedItem]]:
        async def once() -> AsyncIterator[str | BaseMessage]:
            yield input

        async for chunk in self.atransform(once(), config, **kwargs):
            yield chunk

    def transform(
        self,
        input: Iterator[str | BaseMessage],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Iterator[list[ParsedItem]]:
        yield from self._transform_stream_with_config(
            input, self._stream_chunks, config, run_type="parser"
        )

    async def atransform(
        self,
        input: AsyncIterator[str | BaseMessage],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[list[ParsedItem]]:
        async def chunks(
            stream: AsyncIterator[str | BaseMessage],
        ) -> AsyncIterator[list[ParsedItem]]:
            scanner = self._scanner()
            async for chunk in stream:
                for item in scanner.feed(text_of(chunk)):
                    yield [item]
            for item in scanner.finish():
                yield [item]

        async for chunk in self._atransform_stream_with_config(
            input, chunks, config, run_type="parser"
        ):
            yield chunk
