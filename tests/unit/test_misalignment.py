"""Issue 7: every answer provably belongs to its input; ambiguity is re-asked, never guessed.

Each class of misalignment the independent fuzz found is a test here, first at the
engine (fed chunk by chunk, no runnable) and then through ``batch()``.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.alignment import EchoMatcher, comparison_key, distinguishable_parts
from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.parser import ParsedItem
from langchain_autodemo.planning import PlannedBatch, SequentialSelector
from langchain_autodemo.prompts import Mode
from tests.fakes import ScriptedChatModel, asked_questions, feed_completion


def judge(
    inputs: list[str],
    completion: str,
    *,
    finish: str | None = "stop",
    mode=Mode.AUTO_DEMO,
    chunk: int = 3,
):
    """Feed ``completion`` to one engine call over ``inputs`` (one batch) in small chunks."""
    settings = EngineSettings(mode=mode, batch_size=len(inputs))
    engine = Engine(inputs, SequentialSelector().plan(inputs, len(inputs)), settings)
    calls = engine.initial_calls()
    session = engine.open(calls[0])
    report = feed_completion(session, completion, chunk=chunk, finish=finish)
    return {i: r.answer for i, r in report.accepted.items()}, report.failures, calls


def block(i: int, question: str | None, answer: str) -> str:
    head = f"Q[{i}]: {question}\n" if question is not None else ""
    return f"{head}A[{i}]: Thinking.\nThe answer is {answer}.\n\n"


# -- 1. same words, other order ----------------------------------------------------------


SAME_WORDS = [
    ["Is 3 greater than 7?", "Is 7 greater than 3?"],
    ["The film was good, not bad.", "The film was bad, not good."],
    ["Dog bites man.", "Man bites dog."],
    ["😀😀", "😡"],
    ["👍", "👎"],
]


@pytest.mark.parametrize("inputs", SAME_WORDS)
def test_exact_restatements_under_swapped_indices_go_to_their_own_inputs(inputs) -> None:
    swapped = block(1, inputs[1], "second") + block(2, inputs[0], "first")
    accepted, failures, _ = judge(inputs, swapped)
    assert accepted == {0: "first", 1: "second"} and not failures


@pytest.mark.parametrize("inputs", SAME_WORDS[:3])
def test_a_paraphrase_that_fits_two_inputs_equally_is_re_asked(inputs) -> None:
    words = comparison_key(inputs[0]).split()
    paraphrase = " ".join(sorted(words))  # the same words in neither input's order
    accepted, failures, _ = judge(inputs, block(1, paraphrase, "x") + block(2, inputs[1], "y"))
    assert 0 not in accepted and accepted.get(1) == "y"
    assert "match" in failures[0]


def test_inputs_that_differ_only_in_case_or_punctuation_never_share_a_call() -> None:
    inputs = ["What is it?", "what is it", "WHAT IS IT!", "What is that?"]
    engine = Engine(inputs, SequentialSelector().plan(inputs, 4), EngineSettings())
    batches = [call.batch.indices for call in engine.initial_calls()]
    assert batches == [(0, 3), (1,), (2,)]
    assert distinguishable_parts([0, 1, 2], ["a", "a", "a"]) == [[0], [1], [2]]


def test_case_only_variants_are_answered_separately_even_when_the_model_swaps() -> None:
    inputs = ["What is it?", "what is it"]

    def script(messages: list[BaseMessage], n: int) -> str:
        [question] = asked_questions(messages)  # one per call: they cannot be told apart
        return block(1, question.swapcase(), question)

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), batch_size=8)
    assert runner.batch(inputs) == inputs


def test_emoji_only_restatements_do_not_match_every_input() -> None:
    matcher = EchoMatcher(["😀😀", "😡"])
    assert matcher.match("😡").position == 1
    assert matcher.match("🙂").position is None


# -- 2. answers without a restatement -----------------------------------------------------


def test_answers_without_restatements_are_never_placed_by_index_alone() -> None:
    inputs = ["1+1", "2+2", "3+3"]
    # The model skipped the first question and numbered the others from 1.
    shifted = block(1, None, "4") + block(2, None, "6")
    accepted, failures, _ = judge(inputs, shifted)
    assert accepted == {}
    assert failures[0] == "answered without restating its question"
    assert set(failures) == {0, 1, 2}


def test_one_question_alone_needs_no_restatement() -> None:
    accepted, _, _ = judge(["1+1"], block(1, None, "2"))
    assert accepted == {0: "2"}


def test_through_batch_the_shifted_answers_are_re_asked_and_end_right() -> None:
    inputs = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]

    def script(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        if n == 1:
            return block(1, None, "4") + block(2, None, "6")
        return "".join(block(i, q, str(2 * int(q.split()[2]))) for i, q in enumerate(questions, 1))

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), batch_size=3)
    assert runner.batch(inputs) == ["2", "4", "6"]


def test_batch_mode_trusts_indices_only_when_every_question_was_answered_in_order() -> None:
    inputs = ["1+1", "2+2", "3+3"]
    in_order = block(1, None, "2") + block(2, None, "4") + block(3, None, "6")
    assert judge(inputs, in_order, mode=Mode.BATCH)[0] == {0: "2", 1: "4", 2: "6"}
    skipped = block(1, None, "4") + block(2, None, "6")  # renumbered after a skip
    accepted, failures, _ = judge(inputs, skipped, mode=Mode.BATCH)
    assert accepted == {} and "out of order or incomplete" in failures[0]
    swapped = block(2, None, "4") + block(1, None, "2") + block(3, None, "6")
    assert judge(inputs, swapped, mode=Mode.BATCH)[0] == {}


# -- 3. truncation -----------------------------------------------------------------------


def test_a_stream_cut_before_its_finish_reason_does_not_trust_its_open_item() -> None:
    inputs = ["What is 100 + 23?"]
    accepted, failures, _ = judge(
        inputs, "Q[1]: What is 100 + 23?\nA[1]: Sum.\nThe answer is 12", finish=None
    )
    assert accepted == {} and "without a finish reason" in failures[0]


@pytest.mark.parametrize("finish", ["length", "max_tokens", "MAX_TOKENS"])
def test_a_truncated_completion_does_not_trust_its_open_item(finish: str) -> None:
    text = block(1, "a?", "1") + "Q[2]: b?\nA[2]: Sum.\nThe answer is 12"
    accepted, failures, _ = judge(["a?", "b?"], text, finish=finish)
    assert accepted == {0: "1"} and "truncated" in failures[1]


def test_an_explicit_stop_makes_the_last_block_as_trustworthy_as_the_others() -> None:
    middle = "Q[1]: a?\nA[1]: It is seven.\n\n"  # no final-answer line, closed by the next marker
    last = "Q[2]: b?\nA[2]: It is eight."  # the same shape, closed by the end of the stream
    accepted, failures, _ = judge(["a?", "b?"], middle + last, finish="stop")
    assert accepted == {0: "It is seven.", 1: "It is eight."} and not failures


def test_a_mid_stream_exception_keeps_closed_items_and_fails_the_open_one() -> None:
    settings = EngineSettings(batch_size=2)
    engine = Engine(["a?", "b?"], [PlannedBatch((0, 1))], settings)
    session = engine.open(engine.initial_calls()[0])
    session.feed(AIMessageChunk(content=block(1, "a?", "1") + "Q[2]: b?\nA[2]: The answer is 12"))
    report = session.finish(ConnectionResetError("peer reset"))
    assert set(report.accepted) == {0}
    assert report.failures[1].startswith("model call failed: ConnectionResetError")


# -- 4. conflicting duplicates ----------------------------------------------------------


def test_conflicting_copies_that_were_both_read_are_re_asked() -> None:
    text = block(1, "a?", "1") + block(1, "a?", "9") + block(2, "b?", "2")
    accepted, failures, _ = judge(["a?", "b?"], text)
    assert accepted == {1: "2"} and "conflicting" in failures[0]


def test_a_repetition_after_every_item_is_in_is_never_read() -> None:
    """Deliberate: once every item has its answer the stream is dropped, so a later
    repetition (the usual runaway) costs nothing and cannot veto the answers read."""
    text = block(1, "a?", "1") + block(2, "b?", "2") + block(1, "a?", "9") * 50
    accepted, failures, _ = judge(["a?", "b?"], text)
    assert accepted == {0: "1", 1: "2"} and not failures


# -- runaways ---------------------------------------------------------------------------


def test_reading_stops_once_the_completion_runs_past_the_questions() -> None:
    invented = "".join(block(i, f"invented question {i}?", str(i)) for i in range(3, 60))
    text = block(1, "a?", "1") + invented
    settings = EngineSettings(batch_size=2)
    engine = Engine(["a?", "b?"], [PlannedBatch((0, 1))], settings)
    session = engine.open(engine.initial_calls()[0])
    fed = 0
    for i in range(0, len(text), 4):
        session.feed(AIMessageChunk(content=text[i : i + 4]))
        fed = i + 4
        if session.done_reading:
            break
    assert session.runaway and fed < len(
        block(1, "a?", "1") + block(3, "invented question 3?", "3")
    )
    report = session.finish()
    assert report.accepted[0].answer == "1" and "past question 2" in report.failures[1]


def test_reading_stops_when_the_completion_repeats_itself() -> None:
    text = block(1, "a?", "1") + block(2, "b?", "2") * 40
    settings = EngineSettings(batch_size=3)
    engine = Engine(["a?", "b?", "c?"], [PlannedBatch((0, 1, 2))], settings)
    session = engine.open(engine.initial_calls()[0])
    read = 0
    for i in range(0, len(text), 5):
        session.feed(AIMessageChunk(content=text[i : i + 5]))
        read = i
        if session.done_reading:
            break
    assert "repeated itself" in str(session.runaway) and read < len(text) // 4


# -- the parts of the matcher -----------------------------------------------------------


def test_a_long_input_abbreviated_by_the_model_still_matches_by_its_prefix() -> None:
    long = "Consider the following long story about a farmer and her fields. " * 300
    matcher = EchoMatcher([long, "Short question?"])
    assert matcher.match(long[:200] + " ...").position == 0


def test_marker_conflicts_and_out_of_range_indices_are_rejected() -> None:
    matcher = EchoMatcher(["a?", "b?"], require_echo=False)
    assert matcher.verdict(ParsedItem(3, None, "x", "x", "next_marker")).position is None
    conflict = ParsedItem(1, "a?", "x", "x", "next_marker", marker_conflict=True)
    assert matcher.verdict(conflict).position is None


def test_comparison_key_ignores_case_width_and_invisible_characters() -> None:
    assert comparison_key("What is １２?") == comparison_key("what is 12")
    assert comparison_key("a\u200bb c") == comparison_key("ab c")
    assert comparison_key("?!") == "? !"  # punctuation counts when it is all there is
    assert comparison_key("\u200b\u200d") == ""


def test_every_invisible_format_character_is_ignored() -> None:
    import sys
    import unicodedata

    invisible = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert comparison_key("a" + "".join(invisible) + "b") == "ab"


def test_an_item_error_keeps_every_attempts_reason() -> None:
    def never(messages: list[BaseMessage], n: int) -> str:
        return "I cannot help with that."

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=never), batch_size=2)
    [error, _] = runner.batch(["a?", "b?"], return_exceptions=True)
    assert isinstance(error, AutoDemoItemError)
    assert error.attempts == 3 and len(error.reasons) == 3


def test_a_real_qwen_loop_is_cut_early_and_only_the_looping_items_are_re_asked() -> None:
    """Qwen2.5-Coder-1.5B looped on item 14 of 16 until the token limit (tests/data)."""
    import json
    from pathlib import Path

    rows = Path(__file__).parent.parent / "data" / "real_completions_qwen1.5b_gsm8k.jsonl"
    [row] = [
        r for r in map(json.loads, rows.read_text().splitlines()) if len(r["completion"]) > 20000
    ]
    questions, text = row["questions"], row["completion"]
    engine = Engine(questions, [PlannedBatch(tuple(range(16)))], EngineSettings(batch_size=16))
    session = engine.open(engine.initial_calls()[0])
    read = 0
    for i in range(0, len(text), 4):
        session.feed(AIMessageChunk(content=text[i : i + 4]))
        read = i + 4
        if session.done_reading:
            break
    report = session.finish()
    assert "looped" in str(session.runaway)
    assert read < 0.45 * len(text)  # measured: 9,336 of 23,379 characters read
    assert len(report.accepted) == 13 and set(report.failures) == {13, 14, 15}


# -- copies of demonstrations --------------------------------------------------------------

DEMO_Q = "Tom has 3 apples and eats 1. How many apples are left?"
NEAR_DEMO = "Tom has 4 apples and eats 1. How many apples are left?"
OTHER = "What is the capital of France?"


def judge_with_demos(inputs: list[str], completion: str, demos) -> tuple[dict, dict]:
    settings = EngineSettings(mode=Mode.AUTO_DEMO, batch_size=len(inputs))
    plan = PlannedBatch(tuple(range(len(inputs))), demonstrations=tuple(demos))
    engine = Engine(inputs, [plan], settings)
    (call,) = engine.initial_calls()
    session = engine.open(call)
    session.feed(AIMessageChunk(content=completion, response_metadata={"finish_reason": "stop"}))
    report = session.finish()
    return {i: r.answer for i, r in report.accepted.items()}, report.failures


@pytest.mark.parametrize("inputs", [[NEAR_DEMO], [NEAR_DEMO, OTHER], [OTHER, NEAR_DEMO]])
@pytest.mark.parametrize(
    "restated", [DEMO_Q, DEMO_Q.lower().rstrip("?"), DEMO_Q.replace("apples are", "are")]
)
def test_a_restated_demonstration_never_answers_the_input_it_resembles(inputs, restated) -> None:
    # Retrieved demonstrations are chosen for resembling the inputs; a model that re-answers
    # one must not have that answer (2) placed on the near-identical input (answer 3).
    at = inputs.index(NEAR_DEMO) + 1
    completion = "".join(
        block(i, restated if q == NEAR_DEMO else q, "2" if q == NEAR_DEMO else "Paris")
        for i, q in enumerate(inputs, 1)
    )
    accepted, failures = judge_with_demos(inputs, completion, [(DEMO_Q, "The answer is 2.")])
    assert inputs.index(NEAR_DEMO) not in accepted
    assert "copies a demonstration" in failures[at - 1]
    if OTHER in inputs:
        assert accepted == {inputs.index(OTHER): "Paris"}


def test_the_input_itself_still_matches_beside_a_similar_demonstration() -> None:
    completion = block(1, NEAR_DEMO, "3") + block(2, OTHER, "Paris")
    accepted, failures = judge_with_demos(
        [NEAR_DEMO, OTHER], completion, [(DEMO_Q, "The answer is 2.")]
    )
    assert accepted == {0: "3", 1: "Paris"} and not failures


def test_a_demonstration_equal_to_an_input_does_not_block_it() -> None:
    accepted, _ = judge_with_demos([NEAR_DEMO], block(1, NEAR_DEMO, "3"), [(NEAR_DEMO, "3")])
    assert accepted == {0: "3"}


def test_an_example_in_the_chat_context_is_a_distractor_too() -> None:
    matcher = EchoMatcher([NEAR_DEMO, OTHER], distractors=[DEMO_Q])
    verdict = matcher.match(DEMO_Q.upper(), claimed=0)
    assert verdict.position is None and "demonstration" in (verdict.reason or "")
    long_demo = DEMO_Q + " Think about the ones in the basket as well, please."
    matcher = EchoMatcher([DEMO_Q + " Count the basket too."], distractors=[long_demo])
    assert matcher.match(DEMO_Q, claimed=0).position is None  # a prefix of both


def test_through_the_runnable_a_copied_demonstration_is_re_asked_and_ends_right() -> None:
    class DemoSelector(SequentialSelector):
        def plan(self, texts, batch_size):
            return [
                PlannedBatch(p.indices, demonstrations=((DEMO_Q, "The answer is 2."),))
                for p in super().plan(texts, batch_size)
            ]

    def script(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        if n == 1:  # re-answers the demonstration in place of its look-alike
            return "".join(
                block(i, DEMO_Q if q == NEAR_DEMO else q, "2" if q == NEAR_DEMO else "Paris")
                for i, q in enumerate(questions, 1)
            )
        return "".join(
            block(i, q, "3" if q == NEAR_DEMO else "Paris") for i, q in enumerate(questions, 1)
        )

    model = ScriptedChatModel(script=script)
    runner = AutoDemoBatchRunnable(model, batch_size=2, selector=DemoSelector())
    assert runner.batch([NEAR_DEMO, OTHER]) == ["3", "Paris"]
    assert len(model.calls) == 2


# -- re-asking after the answered items (reask_with_answered) -------------------------------


def test_a_reask_can_continue_from_the_items_its_call_answered() -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    inputs = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?"]

    def script(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        answers = [block(i, q, str(2 * int(q.split()[2]))) for i, q in enumerate(questions, 1)]
        if n == 1:
            return "".join(answers[:2])  # stops after two of four: items 3 and 4 are missing
        # the re-ask first re-answers a demonstration (rejected: it copies one), then its own
        return block(1, inputs[0], "999") + "".join(answers)

    for reask_with_answered in (True, False):
        model = ScriptedChatModel(script=script)
        runner = AutoDemoBatchRunnable(model, batch_size=4, reask_with_answered=reask_with_answered)
        assert runner.batch(inputs) == ["2", "4", "6", "8"]
        reask = model.calls[1]
        assert asked_questions(reask) == inputs[2:]
        shown = [m for m in reask if isinstance(m, (HumanMessage, AIMessage))][:-1]
        if reask_with_answered:
            assert inputs[0] in str(shown[0].content) and inputs[1] in str(shown[0].content)
            assert "The answer is 2." in str(shown[1].content)
            assert "The answer is 4." in str(shown[1].content)
        else:
            assert shown == []


def test_a_rejected_restatement_is_quoted_in_the_reason_and_counted_without_it() -> None:
    from langchain_autodemo.evaluation.diagnostics import reason_kind

    inputs = ["What is 1 + 1?", "What is 2 + 2?"]
    _, failures, _ = judge(
        inputs, block(1, "Something else entirely", "2") + block(2, inputs[1], "4")
    )
    assert failures[0] == (
        "restated question matches no input of the batch: restated as 'Something else entirely'"
    )
    assert reason_kind(failures[0]) == "restated question matches no input of the batch"


# -- a restatement that copies only part of its input --------------------------------------

RTE_LIKE = [
    "Premise: Steve Jobs was attacked by Sculley and resigned a few weeks later. "
    "Hypothesis: Steve Jobs worked for Apple.",
    "Premise: The Raisani tribe is still living in Balochistan in Pakistan. "
    "Hypothesis: The Raisani tribe resides in Pakistan.",
]


def test_a_verbatim_part_of_one_input_matches_it_under_its_own_index() -> None:
    completion = block(1, "Steve Jobs worked for Apple.", "entailment") + block(
        2, "The Raisani tribe resides in Pakistan.", "entailment"
    )
    accepted, failures, _ = judge(RTE_LIKE, completion)
    assert accepted == {0: "entailment", 1: "entailment"} and not failures


def test_a_verbatim_part_under_another_index_is_re_asked() -> None:
    """Issue 20 (changed from issue 7's "whatever index it carries"): only an exact copy
    can move an answer away from the index the model wrote, and only when the move is
    corroborated; a part of an input is not evidence enough."""
    completion = block(1, "The Raisani tribe resides in Pakistan.", "entailment") + block(
        2, "Steve Jobs worked for Apple.", "entailment"
    )
    accepted, failures, _ = judge(RTE_LIKE, completion)
    assert accepted == {} and "does not clearly match its index" in failures[0]


@pytest.mark.parametrize(
    ("inputs", "restated", "reason"),
    [
        # the same hypothesis under two premises: the copy fits both
        (
            ["Premise: It rained all day. Hypothesis: The ground is wet now.",
             "Premise: The pipe burst. Hypothesis: The ground is wet now."],
            "The ground is wet now.",
            "matches several inputs",
        ),
        # too short to be evidence: three words
        (RTE_LIKE, "worked for Apple", "matches no input"),
        # not word-aligned: a part of a word is not a copy
        (RTE_LIKE, "e Raisani tribe resides in Pakist", "matches no input"),
    ],
)  # fmt: skip
def test_a_part_that_is_not_unique_evidence_is_re_asked(inputs, restated, reason) -> None:
    accepted, failures, _ = judge(inputs, block(1, restated, "yes") + block(2, inputs[1], "no"))
    assert 0 not in accepted and reason in failures[0]


def test_a_part_of_a_demonstration_is_a_copy_of_the_demonstration() -> None:
    demo = "Premise: Jobs founded Apple in 1976. Hypothesis: Steve Jobs worked for Apple."
    completion = block(1, "Steve Jobs worked for Apple.", "entailment")
    accepted, failures = judge_with_demos([RTE_LIKE[0]], completion, [(demo, "entailment")])
    assert accepted == {} and "copies a demonstration" in failures[0]


# -- the prompt's placeholder copied as the answer ---------------------------------------


@pytest.mark.parametrize(
    "answer",
    ["<final answer>", "<Final Answer>", "< final answer >", "<step-by-step reasoning>"],
)
def test_a_placeholder_answer_is_rejected_not_delivered(answer: str) -> None:
    inputs = ["Does the premise entail the hypothesis? A", "Does it entail? B", "Third C?"]
    completion = block(1, inputs[0], "entailment") + block(2, inputs[1], answer)
    completion += block(3, inputs[2], "not_entailment")
    accepted, failures, _ = judge(inputs, completion)
    assert accepted == {0: "entailment", 2: "not_entailment"}
    assert failures[1].startswith("answered with the prompt's placeholder")


def test_a_terse_placeholder_answer_is_rejected_and_re_asked() -> None:
    # reasoning=False: "A[i]: <final answer>" copied from the layout, then a proper re-ask
    def script(messages: list[BaseMessage], number: int) -> str:
        questions = asked_questions(messages)
        if number == 1:
            return "\n".join(f"Q[{i}]: {q}\nA[{i}]: <final answer>" for i, q in
                             enumerate(questions, 1))  # fmt: skip
        return "\n".join(f"Q[{i}]: {q}\nA[{i}]: positive" for i, q in enumerate(questions, 1))

    model = ScriptedChatModel(script=script)
    runner = AutoDemoBatchRunnable(model, batch_size=3, reasoning=False, include_details=True)
    results = runner.batch(["good film", "great film", "fine film"])
    assert [r.answer for r in results] == ["positive"] * 3
    assert all(r.attempts == 2 for r in results)
    assert all(r.reasons[0].startswith("answered with the prompt's placeholder") for r in results)


def test_an_answer_that_only_mentions_angle_brackets_is_kept() -> None:
    inputs = ["Which tag opens HTML?", "What is 2+2, tagged?"]
    completion = block(1, inputs[0], "<html>") + block(2, inputs[1], "<answer>4</answer>")
    accepted, failures, _ = judge(inputs, completion)
    assert accepted == {0: "<html>", 1: "<answer>4</answer>"} and not failures
