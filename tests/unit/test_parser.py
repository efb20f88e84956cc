"""AutoDemoOutputParser / CompletionScanner: one completion -> items, as they close."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableLambda

from langchain_autodemo import AutoDemoOutputParser, Markers
from langchain_autodemo.parser import CompletionScanner, clean_final_answer

WELL_FORMED = (
    "Q[1]: What is 2+2?\nA[1]: Two plus two.\nThe answer is 4.\n\n"
    "Q[2]: What is 3+5?\nA[2]: Three plus five.\nThe answer is 8."
)


def values(text: str, **kwargs) -> list[tuple[int, str | None]]:
    return [(item.index, item.value) for item in AutoDemoOutputParser(**kwargs).parse(text)]


def test_well_formed_completion_yields_each_item_with_question_and_final_answer() -> None:
    items = AutoDemoOutputParser().parse(WELL_FORMED)
    assert [(i.index, i.question, i.final_answer) for i in items] == [
        (1, "What is 2+2?", "4"),
        (2, "What is 3+5?", "8"),
    ]
    assert items[0].answer == "Two plus two.\nThe answer is 4."


@pytest.mark.parametrize(
    "completion",
    [
        "**Q[1]:** What is 2+2?\n**A[1]:** The answer is 4.",
        "### Q[1]: What is 2+2?\n\n\n### A[1]:\n\nThe answer is 4.",
        "Question 1: What is 2+2?\nAnswer 1: The answer is 4.",
        "Q [1]: What is 2+2?\nA [1] The answer is 4.",
        "Sure, here you go!\n\nQ[1]: What is 2+2?\nA[1]:\nThe answer is 4.\n\nHope this helps!",
        "Q[1]: What is 2+2?\r\nA[1]: The answer is **4**.\r\n",
        "Q[1]: What is 2+2?\nA[1]: 2 + 2 = \\(\\boxed{4}\\)",
    ],
)
def test_tolerates_what_real_models_write(completion: str) -> None:
    assert values(completion) == [(1, "4")]


def test_reasoning_without_its_answer_marker_after_a_blank_line_still_answers() -> None:
    """Seen with Qwen2.5-Coder-1.5B: `Q[1]: ...`, blank line, reasoning, no `A[1]:`."""
    text = "Q[1]: What is 2+2?\n\nTwo plus two.\nThe answer is 4.\n\nQ[2]: What is 3+5?\n\nA[2]: The answer is 8."
    items = AutoDemoOutputParser().parse(text)
    assert [(i.index, i.question, i.value) for i in items] == [
        (1, "What is 2+2?", "4"),
        (2, "What is 3+5?", "8"),
    ]


def test_a_late_answer_marker_continues_the_implicit_answer() -> None:
    text = "Q[1]: What is 2+2?\n\nLet me see.\nA[1]: Two plus two.\nThe answer is 4."
    assert values(text) == [(1, "4")]


def test_a_wrapped_restatement_stays_one_question() -> None:
    (item,) = AutoDemoOutputParser().parse("Q[1]: What is\n2+2?\nA[1]: The answer is 4.")
    assert item.question == "What is 2+2?"


def test_prose_that_starts_like_a_marker_is_not_a_marker() -> None:
    text = "Q[1]: A train?\nA[1]: A 3-hour drive.\nA 5. detour\nQuestion: why?\nThe answer is 3."
    assert values(text) == [(1, "3")]


def test_answer_without_final_line_is_the_whole_block() -> None:
    text = "Q[1]: x?\nA[1]: It is twelve.\nQ[2]: y?\nA[2]: It is five."
    assert values(text) == [(1, "It is twelve."), (2, "It is five.")]


def test_direct_answers_close_at_the_end_of_their_line() -> None:
    scanner = CompletionScanner(reasoning=False)
    assert [i.value for i in scanner.feed("A[1]: positive\n")] == ["positive"]
    assert [i.value for i in scanner.feed("A[2]: negative\nThanks!")] == ["negative"]
    assert scanner.finish() == []


def test_answer_marker_with_another_index_than_its_question_is_flagged() -> None:
    (item,) = AutoDemoOutputParser().parse("Q[3]: x?\nA[5]: The answer is 1.")
    assert item.marker_conflict


def test_items_are_emitted_as_soon_as_they_close() -> None:
    scanner = CompletionScanner()
    assert scanner.feed("Q[1]: What is 2+2?\nA[1]: Two plus two.\n") == []
    assert [i.value for i in scanner.feed("The answer is 4.\n")] == ["4"]
    assert scanner.feed("Q[2]: What is 3+5?\nA[2]: The answer is 8.") == []
    assert [i.value for i in scanner.finish()] == ["8"]


def test_unterminated_last_line_is_closed_by_end_of_stream() -> None:
    scanner = CompletionScanner()
    scanner.feed("Q[1]: x?\nA[1]: The answer is 4")
    (item,) = scanner.finish()
    assert (item.closed_by, item.final_answer) == ("end_of_stream", "4")


@pytest.mark.parametrize("size", [1, 3, 4, 17, 1000])
def test_streaming_in_chunks_of_any_size_equals_parsing_whole(size: int) -> None:
    parser = AutoDemoOutputParser()
    chunks = [WELL_FORMED[i : i + size] for i in range(0, len(WELL_FORMED), size)]
    streamed = list(parser.transform(iter(chunks)))
    assert all(len(chunk) == 1 for chunk in streamed)  # one item per chunk, as it closes
    assert sum(streamed, []) == parser.parse(WELL_FORMED)


def test_transform_accepts_message_chunks() -> None:
    parser = AutoDemoOutputParser()
    chunks = [AIMessageChunk(content=WELL_FORMED[i : i + 5]) for i in range(0, len(WELL_FORMED), 5)]
    assert [i.value for (i,) in parser.transform(iter(chunks))] == ["4", "8"]


async def test_atransform_streams_items() -> None:
    async def chunks():
        for i in range(0, len(WELL_FORMED), 4):
            yield WELL_FORMED[i : i + 4]

    assert [i.value async for (i,) in AutoDemoOutputParser().atransform(chunks())] == ["4", "8"]


# -- the stream contract: chunks add up to the invoke output --------------------------


def chat_model_then_parser_then_step():
    """A streaming chat model, the parser, and a step that needs the whole list."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content=WELL_FORMED)] * 3))
    finals = RunnableLambda(lambda items: [item.final_answer for item in items])
    return model | AutoDemoOutputParser() | finals


def test_stream_chunks_add_up_to_the_invoke_output() -> None:
    parser = AutoDemoOutputParser()
    chunks = list(parser.stream(WELL_FORMED))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total == parser.invoke(WELL_FORMED)
    assert len(chunks) == 2


async def test_astream_chunks_add_up_to_the_ainvoke_output() -> None:
    parser = AutoDemoOutputParser()
    chunks = [chunk async for chunk in parser.astream(WELL_FORMED)]
    assert len(chunks) == 2 and sum(chunks, []) == await parser.ainvoke(WELL_FORMED)


def test_a_step_after_the_parser_works_under_stream() -> None:
    assert list(chat_model_then_parser_then_step().stream("go")) == [["4", "8"]]


async def test_a_step_after_the_parser_works_under_astream() -> None:
    assert [c async for c in chat_model_then_parser_then_step().astream("go")] == [["4", "8"]]


def test_a_step_after_the_parser_works_under_batch() -> None:
    assert chat_model_then_parser_then_step().batch(["go", "go"]) == [["4", "8"], ["4", "8"]]


def test_streamed_chain_without_a_following_step_yields_each_item_as_it_closes() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content=WELL_FORMED)]))
    chunks = list((model | AutoDemoOutputParser()).stream("go"))
    assert [[i.value for i in chunk] for chunk in chunks] == [["4"], ["8"]]


def test_custom_markers() -> None:
    markers = Markers(
        question_label="Input", answer_label="Output", question_aliases=(), answer_aliases=()
    )
    text = "Input[1]: hi\nOutput[1]: The answer is hello."
    assert values(text, markers=markers) == [(1, "hello")]


def test_markers_must_differ() -> None:
    with pytest.raises(ValueError, match="differ"):
        Markers(question_label="X", answer_label="x")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("18.", "18"), ("**$18**", "18"), ("\\(\\boxed{120}\\)", "120"), ("7 dozens.", "7 dozens")],
)
def test_clean_final_answer(raw: str, clean: str) -> None:
    assert clean_final_answer(raw) == clean


REAL = Path(__file__).parent.parent / "data" / "real_completions_qwen1.5b_gsm8k.jsonl"


def real_completions() -> list[dict]:
    return [json.loads(line) for line in REAL.read_text().splitlines()]


@pytest.mark.parametrize(
    "record", real_completions(), ids=lambda r: f"{r['prompt_style']}-{len(r['questions'])}"
)
def test_real_qwen_completions_parse_into_in_range_items_without_crashing(record: dict) -> None:
    items = AutoDemoOutputParser().parse(record["completion"])
    assert items, "every real completion holds at least one item"
    assert all(1 <= item.index <= len(record["questions"]) for item in items)
    if record["prompt_style"] == "auto_demo":
        assert all(item.question for item in items)


def test_real_completion_that_stops_after_item_one_yields_one_item() -> None:
    short = [r for r in real_completions() if r["completion"].count("Q[") == 1]
    assert short, "the data set holds completions that stop after the first item"
    for record in short:
        assert len(AutoDemoOutputParser().parse(record["completion"])) == 1
