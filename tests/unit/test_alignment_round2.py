"""Issue 20: the second round of alignment attacks, one section per class.

Every class is checked at the engine (fed chunk by chunk through ``CallSession``) and
through the four public drivers (``batch``, ``abatch``, ``batch_as_completed``,
``abatch_as_completed``) with a scripted model whose first completion is the attack and
whose re-asks are answered correctly: the result must be every input's own answer (or an
explicit error), never another input's.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoError, AutoDemoItemError
from langchain_autodemo.alignment import EchoMatcher, comparison_key, distinguishable_parts
from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.errors import AutoDemoInputError, model_call_error
from langchain_autodemo.planning import PlannedBatch, SequentialSelector
from tests.fakes import ScriptedChatModel, asked_questions, feed_completion

DRIVERS = ("batch", "abatch", "batch_as_completed", "abatch_as_completed")


def judge(
    inputs: list[str],
    completion: str,
    *,
    finish: str | None = "stop",
    chunk: int = 3,
    demos: tuple[tuple[str, str], ...] = (),
    **settings: Any,
) -> tuple[dict[int, Any], dict[int, str]]:
    """One engine call over ``inputs`` (one batch), fed ``completion`` in small chunks."""
    engine = Engine(
        inputs,
        [PlannedBatch(tuple(range(len(inputs))), demonstrations=demos)],
        EngineSettings(batch_size=len(inputs), **settings),
    )
    [call] = engine.initial_calls()
    session = engine.open(call)
    report = feed_completion(session, completion, chunk=chunk, finish=finish)
    return {i: r.answer for i, r in report.accepted.items()}, report.failures


def block(i: int, question: str | None, answer: str, working: str = "Thinking.") -> str:
    head = f"Q[{i}]: {question}\n" if question is not None else ""
    return f"{head}A[{i}]: {working}\nThe answer is {answer}.\n\n"


def run_driver(runner: AutoDemoBatchRunnable, inputs: list[str], driver: str) -> list[Any]:
    if driver == "batch":
        return runner.batch(inputs, return_exceptions=True)
    if driver == "abatch":
        return asyncio.run(runner.abatch(inputs, return_exceptions=True))
    if driver == "batch_as_completed":
        got = dict(runner.batch_as_completed(inputs, return_exceptions=True))
        return [got[i] for i in range(len(inputs))]

    async def collect() -> dict[int, Any]:
        stream = runner.abatch_as_completed(inputs, return_exceptions=True)
        return {i: r async for i, r in stream}

    got = asyncio.run(collect())
    return [got[i] for i in range(len(inputs))]


def attacked(
    inputs: list[str],
    answers: dict[str, str],
    first: str,
    driver: str,
    *,
    finish: str | None = "stop",
    **options: Any,
) -> tuple[list[Any], ScriptedChatModel]:
    """The first completion is ``first``; every re-ask is answered correctly."""

    def script(messages: list[BaseMessage], n: int) -> Any:
        if n == 1:
            return first, {"finish_reason": finish}
        questions = asked_questions(messages)
        return "".join(block(i, q, answers[q]) for i, q in enumerate(questions, 1))

    model = ScriptedChatModel(script=script, chunk_size=5)
    runner = AutoDemoBatchRunnable(model, batch_size=len(inputs), **options)
    return run_driver(runner, inputs, driver), model


def assert_own_or_error(inputs: list[str], answers: dict[str, str], results: list[Any]) -> None:
    assert len(results) == len(inputs)
    for k, (question, result) in enumerate(zip(inputs, results, strict=True)):
        if isinstance(result, AutoDemoError):
            assert getattr(result, "index", k) == k
            continue
        others = {answers[q] for q in inputs if q != question} - {answers[question]}
        assert result not in others, f"item {k} got another input's answer {result!r}"


# -- 1. the early stop swallows the veto ---------------------------------------------------

SUB_A, SUB_B = "What is 31 - 4?", "What is 13 - 4?"
SUB = {SUB_A: "27", SUB_B: "9"}
SLIP = block(1, SUB_B, "27", "31 minus 4 is 27.")  # A's working under B's (slipped) text


@pytest.mark.parametrize(
    "completion",
    [
        SLIP + block(1, SUB_A, "27") + block(2, SUB_B, "9"),
        SLIP + block(2, SUB_A, "27") + block(2, SUB_B, "9"),
        SLIP + block(2, SUB_B, "9") + block(1, SUB_A, "27"),
    ],
)
def test_a_slipped_restatement_does_not_stop_reading_before_the_own_block(completion) -> None:
    accepted, failures = judge([SUB_A, SUB_B], completion)
    assert accepted.get(1) != "27" and accepted.get(0) in (None, "27")
    assert 1 in failures


def test_a_slot_filled_only_by_a_moved_answer_does_not_end_the_reading() -> None:
    engine = Engine([SUB_A, SUB_B], [PlannedBatch((0, 1))], EngineSettings(batch_size=2))
    session = engine.open(engine.initial_calls()[0])
    session.feed(AIMessageChunk(content=SLIP + block(1, SUB_A, "27")))
    assert not session.done_reading  # B's slot holds only an answer moved from index 1
    session.feed(AIMessageChunk(content=block(2, SUB_B, "9")))
    assert session.done_reading


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_the_slip_never_gives_b_the_answer_of_a(driver) -> None:
    first = SLIP + block(1, SUB_A, "27") + block(2, SUB_B, "9")
    results, _ = attacked([SUB_A, SUB_B], SUB, first, driver)
    assert results == ["27", "9"]


# -- 2. index and restatement disagree and nothing corroborates the move -------------------


@pytest.mark.parametrize(
    ("completion", "finish"),
    [
        (SLIP, "length"),  # cut right after the slip
        (SLIP + block(1, SUB_A, "27") + block(2, "Wht iz 1 - 4", "9"), "stop"),  # B garbled
        (SLIP + block(2, "Wht iz 1 - 4", "9"), "stop"),
        (SLIP, None),
        (SLIP + "Q[2]: What is", "length"),
    ],
)
def test_an_uncorroborated_move_is_re_asked_not_delivered(completion, finish) -> None:
    accepted, failures = judge([SUB_A, SUB_B], completion, finish=finish)
    assert 1 not in accepted and 1 in failures
    assert accepted.get(0) in (None, "27")


PREMISE = (
    "Premise: The Raisani tribe is still living in Balochistan in Pakistan. "
    "Hypothesis: The Raisani tribe resides in Pakistan."
)
HYPOTHESIS = "The Raisani tribe resides in Pakistan."
RTE = {PREMISE: "entailment", HYPOTHESIS: "true"}


@pytest.mark.parametrize(
    ("inputs", "completion"),
    [
        # the model answers the premise+hypothesis question copying only its hypothesis
        ([PREMISE, HYPOTHESIS], block(1, HYPOTHESIS, "entailment")),
        ([PREMISE, HYPOTHESIS], block(1, HYPOTHESIS, "entailment") + block(2, HYPOTHESIS, "true")),
        ([HYPOTHESIS, PREMISE], block(2, HYPOTHESIS, "entailment")),
        ([HYPOTHESIS, PREMISE], block(1, PREMISE, "true")),
    ],
)
def test_inputs_that_contain_each_other_never_trade_answers(inputs, completion) -> None:
    accepted, _ = judge(inputs, completion)
    for k, answer in accepted.items():
        assert answer == RTE[inputs[k]]


@pytest.mark.parametrize(
    "inputs",
    [
        ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"],
        ["Is 3 greater than 7?", "Is 7 greater than 3?", "Dog bites man."],
    ],
)
def test_consistent_swaps_and_renumberings_are_still_realigned(inputs) -> None:
    a, b, c = inputs
    swapped = block(1, b, "B") + block(2, a, "A") + block(3, c, "C")
    assert judge(inputs, swapped) == ({0: "A", 1: "B", 2: "C"}, {})
    shifted = block(2, a, "A") + block(3, b, "B") + block(4, c, "C")
    assert judge(inputs, shifted) == ({0: "A", 1: "B", 2: "C"}, {})
    from_zero = block(0, a, "A") + block(1, b, "B") + block(2, c, "C")
    assert judge(inputs, from_zero) == ({0: "A", 1: "B", 2: "C"}, {})
    rotated = block(1, c, "C") + block(2, a, "A") + block(3, b, "B")
    assert judge(inputs, rotated) == ({0: "A", 1: "B", 2: "C"}, {})


def test_a_move_into_a_slot_whose_own_label_is_taken_is_not_corroborated() -> None:
    inputs = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]
    # label 2 is used twice: once for its own input, once restating input 3
    text = block(1, inputs[0], "2") + block(2, inputs[2], "4") + block(2, inputs[1], "4")
    accepted, failures = judge(inputs, text)
    assert accepted == {0: "2", 1: "4"} and 2 in failures


@pytest.mark.parametrize(
    "completion",
    [
        block(9, SUB_B, "27") + block(1, SUB_A, "27"),  # the slip under an index out of range
        block(1, SUB_A, "27") + "Q[2]: What is 13 - 4?\nA[3]: Hmm.\n\n" + block(0, SUB_B, "27"),
        block(3, SUB_B, "27"),
    ],
)
def test_a_move_from_an_index_out_of_range_needs_its_own_index_taken(completion) -> None:
    accepted, failures = judge([SUB_A, SUB_B], completion)
    assert 1 not in accepted and 1 in failures


def test_a_skipped_question_renumbered_away_is_re_asked() -> None:
    """Nothing tells "skipped question 2 and renumbered" from "restated question 3 under
    index 2 but answered question 2": the items after the skip are re-asked."""
    inputs = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?"]
    text = block(1, inputs[0], "2") + block(2, inputs[2], "6") + block(3, inputs[3], "8")
    accepted, failures = judge(inputs, text)
    assert accepted == {0: "2"} and set(failures) == {1, 2, 3}
    # answered at the end, the skipped question closes the chain: a rotation
    text += block(4, inputs[1], "4")
    assert judge(inputs, text) == ({0: "2", 1: "4", 2: "6", 3: "8"}, {})


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("finish", ["length", None])
def test_through_every_driver_a_cut_slip_is_re_asked(driver, finish) -> None:
    results, model = attacked([SUB_A, SUB_B], SUB, SLIP, driver, finish=finish)
    assert results == ["27", "9"] and len(model.calls) >= 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_a_superset_input_keeps_its_own_answer(driver) -> None:
    first = block(1, HYPOTHESIS, "entailment")
    results, _ = attacked([PREMISE, HYPOTHESIS], RTE, first, driver)
    assert results == ["entailment", "true"]


# -- 3. fragments and prefixes must clear the same bar as similarity ----------------------

REVIEW_A = "The acting was not great and the plot was dull. Positive or negative?"
REVIEW_B = (
    "Review: the acting was great and the plot was dull, but I loved the music. "
    "Positive or negative?"
)
REVIEWS = {REVIEW_A: "negative", REVIEW_B: "positive"}


def test_a_fragment_closer_to_another_input_is_ambiguous() -> None:
    matcher = EchoMatcher([REVIEW_A, REVIEW_B])
    for claimed in (0, 1, None):
        verdict = matcher.match("The acting was great and the plot was dull.", claimed)
        assert verdict.position is None


def test_a_fragment_under_another_index_is_not_moved() -> None:
    matcher = EchoMatcher([REVIEW_A, REVIEW_B])
    # a verbatim part of B only, with words A lacks, but written under A's index
    fragment = "the acting was great and the plot was dull, but I loved"
    assert matcher.match(fragment, claimed=1).position == 1
    assert matcher.match(fragment, claimed=0).position is None


def test_a_prefix_under_another_index_is_not_moved() -> None:
    inputs = [
        "The acting was great and the plot was dull. Positive or negative?",
        "The acting was great and the plot was dull, but the music was fine. Positive?",
    ]
    restated = "The acting was great and the plot was dull, but"  # a prefix of the second
    accepted, _ = judge(inputs, block(1, restated, "negative") + block(2, inputs[1], "positive"))
    assert 0 not in accepted


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_a_misleading_fragment_is_re_asked(driver) -> None:
    first = block(1, "The acting was great and the plot was dull.", "positive")
    first += block(2, REVIEW_B, "positive")
    results, _ = attacked([REVIEW_A, REVIEW_B], REVIEWS, first, driver)
    assert results == ["negative", "positive"]


# -- 4. merged restatements -----------------------------------------------------------------

CAPITAL, SUM = "What is the capital of France?", "What is 2+2?"
MERGED = {CAPITAL: "Paris", SUM: "4"}


@pytest.mark.parametrize(
    "completion",
    [
        f"Q[1]: {CAPITAL} {SUM}\nA[1]: Two and two.\nThe answer is 4.\n\n" + block(2, SUM, "4"),
        f"Q[1]: {CAPITAL}\n{SUM}\nA[1]: Two and two.\nThe answer is 4.\n\n",
        f"Q[1]: {SUM} {CAPITAL}\nA[1]: Two and two.\nThe answer is 4.\n\n",
        f"Q[1]: About {SUM}\nA[1]: Two and two.\nThe answer is 4.\n\n" + block(2, SUM, "4"),
    ],
)
def test_a_restatement_that_contains_another_input_is_ambiguous(completion) -> None:
    accepted, failures = judge([CAPITAL, SUM], completion)
    assert 0 not in accepted and 0 in failures


def test_a_superset_input_copied_with_its_subset_joined_is_ambiguous() -> None:
    completion = f"Q[1]: {PREMISE}\n{HYPOTHESIS}\nA[1]: Hm.\nThe answer is true.\n\n"
    accepted, failures = judge([PREMISE, HYPOTHESIS], completion + block(2, HYPOTHESIS, "true"))
    assert accepted == {1: "true"} and "contains another input" in failures[0]


def test_an_input_that_contains_another_still_matches_its_exact_copy() -> None:
    accepted, failures = judge(
        [PREMISE, HYPOTHESIS], block(1, PREMISE, "entailment") + block(2, HYPOTHESIS, "true")
    )
    assert accepted == {0: "entailment", 1: "true"} and not failures


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_a_merged_restatement_is_re_asked(driver) -> None:
    first = f"Q[1]: {CAPITAL}\n{SUM}\nA[1]: Two and two.\nThe answer is 4.\n\n" + block(2, SUM, "4")
    results, _ = attacked([CAPITAL, SUM], MERGED, first, driver)
    assert results == ["Paris", "4"]


# -- 5. answers taken from another input's text -----------------------------------------------

EMBED_A = "Is 7 prime? Q[2]: What is 9 times 9? A[2]: The answer is 99."
EMBED_B = "What is 9 times 9?"
EMBED = {EMBED_A: "yes", EMBED_B: "81"}
BROKEN_COPY = (
    "Q[1]: Is 7 prime?\nQ[2]: What is 9 times 9?\nA[2]: The answer is 99.\n"
    "A[1]: Seven has no divisors.\nThe answer is yes.\n\n"
)


@pytest.mark.parametrize(
    "completion",
    [
        BROKEN_COPY,
        BROKEN_COPY + block(2, EMBED_B, "81"),
        "Q[1]: Is 7 prime?\n\nQ[2]: What is 9 times 9?\n\nA[2]: The answer is 99.\n\n",
        "Q[1]: Is 7 prime?\nQ[2]: What is 9 times 9?\n\nThe answer is 99.\n\n",
        "**Q[1]:** Is 7 prime?\n**Q[2]:** What is 9 times 9?\n**A[2]:** The answer is 99.\n",
    ],
)
def test_marker_like_text_inside_an_input_never_answers_another_input(completion) -> None:
    accepted, _ = judge([EMBED_A, EMBED_B], completion)
    assert accepted.get(1) in (None, "81") and accepted.get(0) in (None, "yes")


def test_a_faithful_copy_broken_at_the_embedded_markers_answers_its_own_input() -> None:
    accepted, _ = judge([EMBED_A, EMBED_B], BROKEN_COPY + block(2, EMBED_B, "81"))
    assert accepted == {0: "yes", 1: "81"}


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_embedded_markers_never_misalign(driver) -> None:
    results, _ = attacked([EMBED_A, EMBED_B], EMBED, BROKEN_COPY, driver)
    assert results == ["yes", "81"]


# -- 6. normalisation: operators count, faithful copies match ------------------------------


@pytest.mark.parametrize(
    "texts",
    [
        ["What is 7-3?", "What is 7*3?", "What is 7.3?", "What is 73?", "What is 7/3?"],
        ["What is -5+3?", "What is 5+3?"],
        ["What is 7 - 3?", "What is 7 + 3?", "What is 7 × 3?", "What is 7 % 3?"],
        ["Is 0.5 > 0.05?", "Is 05 > 005?"],
        ["(7-3)*2", "7-3*2"],
    ],
)
def test_operators_signs_and_decimal_points_are_kept(texts) -> None:
    keys = [comparison_key(t) for t in texts]
    assert len(set(keys)) == len(keys), keys


@pytest.mark.parametrize(
    ("original", "copy"),
    [
        ("Is it?", "Is it"),
        ("What is 7-3?", "what is 7 - 3"),
        ("What is 7×3?", "What is 7 * 3?"),
        ("It costs $80,000.", "It costs $80000"),
        ("我有3个苹果，吃了1个，还剩几个？", "我有 3 个苹果，吃了 1 个，还剩几个？"),
        ("我有3个苹果，吃了1个，还剩几个？", "我有3个苹果, 吃了1个, 还剩几个?"),
        ("كَمْ عَدَدُ التُّفَّاحَاتِ؟", "كم عدد التفاحات؟"),
        ("I ❤️ this film. Positive?", "I ❤ this film. Positive?"),
        ("ฉันมีแอปเปิ้ลสามลูก", "ฉันมี แอปเปิ้ล สามลูก"),
        ("りんごはいくつありますか", "りんごは いくつ ありますか"),
        ("Ist das schön?", "Ist das schon?"),
        ("Is this a well-known fact?", "Is this a well known fact?"),
    ],
)
def test_a_faithful_copy_has_the_same_key(original, copy) -> None:
    assert comparison_key(original) == comparison_key(copy)


@pytest.mark.parametrize(
    ("original", "copy"),
    [
        ("我有3个苹果，吃了1个，还剩几个？", "我有 3 个苹果，吃了 1 个，还剩几个？"),
        ("كَمْ عَدَدُ التُّفَّاحَاتِ؟", "كم عدد التفاحات؟"),
        ("I ❤️ this film. Positive?", "I ❤ this film. Positive?"),
        ("ฉันมีแอปเปิ้ลสามลูก", "ฉันมี แอปเปิ้ล สามลูก"),
    ],
)
def test_a_faithful_copy_is_accepted_alone_and_in_a_batch(original, copy) -> None:
    assert judge([original], block(1, copy, "X")) == ({0: "X"}, {})
    other = "What is the capital of France?"
    both = block(1, copy, "X") + block(2, other, "Paris")
    assert judge([original, other], both) == ({0: "X", 1: "Paris"}, {})


def test_scripts_without_spaces_are_compared_by_characters() -> None:
    # one character differs: by words these were one token each and shared nothing
    matcher = EchoMatcher(["我有三个红苹果和两个绿苹果，一共几个？", "今天天气怎么样？"])
    assert matcher.match("我有三个红苹果和两个绿苹果，一共有几个？", claimed=0).position == 0


def test_inputs_whose_keys_collide_never_share_a_call() -> None:
    inputs = ["Ist das schön?", "Ist das schon?", "Ist das gut?"]
    engine = Engine(inputs, SequentialSelector().plan(inputs, 3), EngineSettings())
    batches = [call.batch.indices for call in engine.initial_calls()]
    assert batches == [(0, 2), (1,)]
    keys = [comparison_key(t) for t in ["❤️", "❤"]]
    assert distinguishable_parts([0, 1], keys) == [[0], [1]]


def test_a_demonstration_that_differs_by_an_operator_is_still_a_distractor() -> None:
    accepted, failures = judge(
        ["What is 7-3?"], block(1, "What is 7*3?", "21"), demos=(("What is 7*3?", "21"),)
    )
    assert accepted == {} and "demonstration" in failures[0]


@pytest.mark.parametrize("driver", DRIVERS)
def test_through_every_driver_a_spaced_chinese_copy_is_answered_first_time(driver) -> None:
    inputs = ["我有3个苹果，吃了1个，还剩几个？", "What is 2+2?"]
    first = block(1, "我有 3 个苹果，吃了 1 个，还剩几个？", "2") + block(2, "What is 2 + 2?", "4")
    results, model = attacked(inputs, {inputs[0]: "2", inputs[1]: "4"}, first, driver)
    assert results == ["2", "4"] and len(model.calls) == 1


# -- 7. never-ending streams ----------------------------------------------------------------


def endless(line_of: Any) -> Iterator[str]:
    for n in range(200_000):  # bounded so that a regression fails instead of hanging
        yield line_of(n)


@pytest.mark.parametrize(
    "line_of", [lambda n: f"Thought number {n} is different.\n", lambda n: "Hmm.\n"]
)
@pytest.mark.parametrize("max_output_tokens", [600, None])  # 600: both items in one call
def test_the_session_stops_reading_past_its_output_budget(line_of, max_output_tokens) -> None:
    inputs = ["What is 1 + 1?", "What is 2 + 2?"]
    engine = Engine(
        inputs,
        [PlannedBatch((0, 1))],
        EngineSettings(batch_size=2, max_output_tokens=max_output_tokens),
    )
    session = engine.open(engine.initial_calls()[0])
    session.feed(AIMessageChunk(content=block(1, inputs[0], "2") + "Q[2]: What is 2 + 2?\nA[2]: "))
    read = 0
    for piece in endless(line_of):
        session.feed(AIMessageChunk(content=piece))
        read += 1
        if session.done_reading:
            break
    assert session.done_reading and read < 20_000
    assert session.output_tokens > (max_output_tokens or 0)
    report = session.finish()
    assert report.accepted[0].answer == "2" and "budget" in report.failures[1]


class EndlessModel(BaseChatModel):
    """Streams an endless completion on its first call, then answers properly."""

    calls: int = 0
    chunks_sent: int = 0

    @property
    def _llm_type(self) -> str:
        return "endless-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls += 1
        questions = asked_questions(messages)
        if self.calls == 1:
            for piece in endless(lambda n: "Hmm.\n" if n % 2 else f"Line {n}.\n"):
                self.chunks_sent += 1
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            return
        text = "".join(block(i, q, str(2 * int(q.split()[2]))) for i, q in enumerate(questions, 1))
        yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
        )


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("max_output_tokens", [200, None])
def test_through_every_driver_a_never_ending_stream_is_cut(driver, max_output_tokens) -> None:
    model = EndlessModel()
    runner = AutoDemoBatchRunnable(model, batch_size=2, max_output_tokens=max_output_tokens)
    results = run_driver(runner, ["What is 1 + 1?", "What is 2 + 2?"], driver)
    assert results == ["2", "4"] and model.chunks_sent < 20_000


# -- errors and usage ----------------------------------------------------------------------


def test_an_item_error_names_every_distinct_reason() -> None:
    error = AutoDemoItemError(
        2,
        "restated question matches no input",
        3,
        ("the stream ended without a finish reason", "restated question matches no input",
         "restated question matches no input"),
    )  # fmt: skip
    assert str(error) == (
        "item 2: restated question matches no input (after 3 attempt(s); "
        "earlier: the stream ended without a finish reason)"
    )
    assert str(AutoDemoItemError(1, "missing", 2, ("missing", "missing"))) == (
        "item 1: missing (after 2 attempt(s))"
    )


def test_errors_show_and_keep_an_input_excerpt() -> None:
    error = AutoDemoItemError(2, "missing", 1, input_excerpt="What is 13 - 4?")
    assert str(error) == "item 2 ('What is 13 - 4?'): missing (after 1 attempt(s))"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.input_excerpt == "What is 13 - 4?" and str(copy) == str(error)
    long = AutoDemoInputError(0, "bad", input_excerpt="x" * 200)
    assert str(long).startswith("item 0 ('" + "x" * 50) and "…" in str(long)
    assert len(str(long)) < 90
    assert pickle.loads(pickle.dumps(long)).input_excerpt == "x" * 200
    failed = model_call_error(TimeoutError("t"), 3, 2, input_excerpt="What?")
    assert str(failed).startswith("item 3 ('What?'): model call failed")
    assert str(AutoDemoInputError(1, "empty")) == "item 1: empty"


def test_the_engine_names_the_input_and_hints_at_require_finish_reason() -> None:
    def script(messages: list[BaseMessage], n: int) -> Any:
        return "Q[1]: What is 1 + 1?\nA[1]: The answer is 2", {"finish_reason": None}

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), batch_size=1)
    [error] = runner.batch(["What is 1 + 1?"], return_exceptions=True)
    assert isinstance(error, AutoDemoItemError)
    assert error.input_excerpt == "What is 1 + 1?"
    assert "set require_finish_reason=False" in str(error) and "GenericFakeChatModel" in str(error)


def test_a_call_that_failed_before_any_chunk_used_no_input_tokens() -> None:
    engine = Engine(["a?", "b?"], [PlannedBatch((0, 1))], EngineSettings(batch_size=2))
    session = engine.open(engine.initial_calls()[0])
    report = session.finish(ConnectionRefusedError("refused"))
    assert report.usage.input_tokens == 0 and report.usage.output_tokens == 0


def test_per_item_token_shares_are_ints_that_add_up() -> None:
    inputs = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]
    engine = Engine(inputs, [PlannedBatch((0, 1, 2))], EngineSettings(batch_size=3))
    session = engine.open(engine.initial_calls()[0])
    text = "".join(block(i, q, str(2 * i)) for i, q in enumerate(inputs, 1))
    session.feed(AIMessageChunk(content=text))
    usage = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
    session.feed(
        AIMessageChunk(
            content="", usage_metadata=usage, response_metadata={"finish_reason": "stop"}
        )
    )
    report = session.finish()
    shares = [report.accepted[i] for i in range(3)]
    assert all(isinstance(r.input_tokens, int) and isinstance(r.output_tokens, int) for r in shares)
    assert sum(r.input_tokens for r in shares) == 100
    assert sum(r.output_tokens for r in shares) == 50
