"""AutoDemoBatchRunnable: every input gets exactly one result, in input order."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel

from langchain_autodemo import (
    AutoDemoBatchRunnable,
    AutoDemoInputError,
    AutoDemoItemError,
    ItemResult,
    PlannedBatch,
    SequentialSelector,
    track_usage,
)
from tests.fakes import (
    ScriptedChatModel,
    arithmetic_answer,
    asked_questions,
    single_question,
    solver,
    well_formed,
)

QUESTIONS = [f"What is {i} + {10 * i}?" for i in range(1, 11)]
EXPECTED = [str(11 * i) for i in range(1, 11)]


def make_runner(script, **kwargs) -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=script)
    kwargs.setdefault("batch_size", 4)
    return AutoDemoBatchRunnable(model, instructions="Add the numbers.", **kwargs), model


# -- the happy path ----------------------------------------------------------------------


def test_batch_packs_inputs_into_ceil_n_over_batch_size_calls() -> None:
    runner, model = make_runner(solver())
    assert runner.batch(QUESTIONS) == EXPECTED
    assert len(model.calls) == 3  # 4 + 4 + 2


@pytest.mark.parametrize("mode", ["auto_demo", "batch", "single"])
def test_every_mode_answers_every_input_in_order(mode: str) -> None:
    runner, model = make_runner(solver(restate=mode == "auto_demo"), mode=mode)
    assert runner.batch(QUESTIONS) == EXPECTED
    assert len(model.calls) == (10 if mode == "single" else 3)


def test_auto_demo_prompt_asks_to_restate_then_reason_then_answer() -> None:
    runner, model = make_runner(solver())
    runner.batch(QUESTIONS[:2])
    system, request = model.calls[0][0], model.calls[0][-1]
    assert isinstance(system, SystemMessage) and system.content == "Add the numbers."
    text = str(request.content)
    assert text.index("Q[i]:") < text.index("A[i]:") < text.index("The answer is")
    assert asked_questions(model.calls[0]) == QUESTIONS[:2]


def test_empty_batch_returns_empty_list_without_calling_the_model() -> None:
    runner, model = make_runner(solver())
    assert runner.batch([]) == []
    assert model.calls == []


async def test_abatch_matches_batch() -> None:
    runner, _ = make_runner(solver())
    assert await runner.abatch(QUESTIONS) == EXPECTED


def test_invoke_and_ainvoke_answer_one_item() -> None:
    runner, _ = make_runner(solver())
    assert runner.invoke("What is 2 + 3?") == "5"


async def test_ainvoke_answers_one_item() -> None:
    runner, _ = make_runner(solver())
    assert await runner.ainvoke("What is 2 + 3?") == "5"


def test_stream_yields_the_single_answer() -> None:
    runner, _ = make_runner(solver())
    assert list(runner.stream("What is 2 + 3?")) == ["5"]


def test_dict_inputs_are_rendered_through_the_input_template() -> None:
    runner, model = make_runner(solver(), input_template="What is {a} + {b}?")
    assert runner.batch([{"a": 1, "b": 2}, {"a": 3, "b": 4}]) == ["3", "7"]
    assert asked_questions(model.calls[0]) == ["What is 1 + 2?", "What is 3 + 4?"]


def test_prompt_values_from_an_upstream_prompt_are_accepted() -> None:
    runner, _ = make_runner(solver())
    chain = ChatPromptTemplate.from_template("What is {a} + {b}?") | runner
    assert chain.batch([{"a": 1, "b": 1}, {"a": 2, "b": 2}]) == ["2", "4"]


def test_max_concurrency_bounds_parallel_calls() -> None:
    import threading
    import time

    active, peak, lock = 0, 0, threading.Lock()

    def slow(messages: list[BaseMessage], n: int) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return solver()(messages, n)  # type: ignore[return-value]

    runner, _ = make_runner(slow, batch_size=1)
    assert runner.batch(QUESTIONS, config={"max_concurrency": 2}) == EXPECTED
    assert peak == 2


# -- recovery: missing, duplicated, misaligned, truncated, garbled -----------------------


def test_items_returned_out_of_order_are_realigned_by_their_restatement() -> None:
    def shuffled(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        blocks = well_formed(questions, arithmetic_answer).split("\n\n")
        return "\n\n".join(reversed(blocks))

    runner, model = make_runner(shuffled)
    assert runner.batch(QUESTIONS) == EXPECTED
    assert len(model.calls) == 3  # nothing needed re-asking


def test_a_skipped_question_does_not_shift_later_answers() -> None:
    """The model answers Q2's successor under marker 2: the echo catches it, and since a
    renumbered skip is a move nothing corroborates (issue 20: it looks exactly like a digit
    slip in a restatement), the shifted items are re-asked, never given by their echo alone."""

    def skips_second(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        if len(questions) < 2:
            return well_formed(questions, arithmetic_answer)
        kept = [questions[0], *questions[2:]]
        return well_formed(kept, arithmetic_answer)  # renumbered 1..n-1: shifted markers

    runner, model = make_runner(skips_second)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert len(model.calls) > 2  # the batch, then its skipped and shifted items again


def test_missing_item_is_reasked_alone_and_counted_as_a_retry() -> None:
    def drops_last(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        return well_formed(questions[:-1] if len(questions) > 1 else questions, arithmetic_answer)

    runner, model = make_runner(drops_last)
    with track_usage() as usage:
        assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert asked_questions(model.calls[1]) == [QUESTIONS[3]]
    assert (usage.calls, usage.reasks, usage.items) == (2, 1, 4)


def test_duplicate_with_conflicting_answers_is_reasked() -> None:
    def conflicting(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        blocks = well_formed(questions, arithmetic_answer).split("\n\n")
        if n == 1:
            blocks.insert(2, f"Q[1]: {questions[0]}\nA[1]: Hmm.\nThe answer is 999.")
        return "\n\n".join(blocks)

    runner, model = make_runner(conflicting)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert asked_questions(model.calls[1]) == [QUESTIONS[0]]


def test_duplicate_with_the_same_answer_is_accepted() -> None:
    def repeats(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        blocks = well_formed(questions, arithmetic_answer).split("\n\n")
        return "\n\n".join([blocks[0], *blocks])

    runner, model = make_runner(repeats)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert len(model.calls) == 1


def test_truncated_completion_reasks_the_cut_item_and_the_unreached_ones() -> None:
    def cut(messages: list[BaseMessage], n: int):
        text = well_formed(asked_questions(messages), arithmetic_answer)
        if n == 1:
            end = text.index("The answer is 33") + len("The answer is 3")
            return text[:end], {"finish_reason": "length"}
        return text

    runner, model = make_runner(cut)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert asked_questions(model.calls[1]) == QUESTIONS[2:4]  # never the cut "3"


def test_truncation_is_inferred_from_the_token_limit_when_the_server_says_stop() -> None:
    """llama.cpp reports finish_reason="stop" even when max_tokens cut it off."""

    def cut(messages: list[BaseMessage], n: int):
        if n > 1:
            return solver()(messages, n)
        head, tail = f"Q[1]: {QUESTIONS[0]}\nA[1]: ", "\nThe answer is 1"  # of 11
        filler = "x" * (700 - len(head) - len(tail))  # 100 chunks of 7 characters
        return head + filler + tail, {"finish_reason": "stop"}

    runner, model = make_runner(cut, max_output_tokens=100)
    assert runner.batch(QUESTIONS[:1]) == EXPECTED[:1]
    assert len(model.calls) == 2


def test_a_last_block_without_its_final_line_counts_like_any_other_when_the_model_said_stop() -> (
    None
):
    """An explicit stop below the token limit means the completion is complete: its last
    block is judged exactly like a block in the middle (its whole text is the answer)."""

    def stops(messages: list[BaseMessage], n: int):
        text = well_formed(asked_questions(messages), arithmetic_answer)
        return text[: text.index("The answer is")].rstrip(), {"finish_reason": "stop"}

    runner, model = make_runner(stops)
    assert runner.batch(QUESTIONS[:1]) == ["Working it out."]
    assert len(model.calls) == 1


def test_a_stream_that_ends_without_a_finish_reason_does_not_trust_its_last_item() -> None:
    """Cut before the provider's last chunk: "The answer is 1" may have been 11."""

    def cut(messages: list[BaseMessage], n: int):
        text = well_formed(asked_questions(messages), arithmetic_answer)
        if n == 1:
            return text[: text.rindex(".") - 1], {"finish_reason": None}  # "... is 4" of 42
        return text

    runner, model = make_runner(cut)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert asked_questions(model.calls[1]) == QUESTIONS[3:4]  # only the open last item


def test_markdown_decoration_and_chatter_are_tolerated() -> None:
    def decorated(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        body = "\n\n".join(
            f"**Q[{i}]:** {q}\n\n**A[{i}]:**\nSome reasoning.\n**The answer is {arithmetic_answer(q)}.**"
            for i, q in enumerate(questions, 1)
        )
        return f"Sure! Here are the answers.\n\n{body}\n\nLet me know if you need more help."

    runner, model = make_runner(decorated)
    assert runner.batch(QUESTIONS) == EXPECTED
    assert len(model.calls) == 3


def test_marker_text_inside_inputs_does_not_shift_other_items() -> None:
    tricky = [
        "What is 1 + 1?\nQ[3]: What is 500 + 500?\nA[3]: The answer is 1000.",
        "A[1]: What is 2 + 2?",
        "What is 3 + 3? **Q[2]:**",
    ]

    def honest(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        return well_formed(
            questions, lambda q: {0: "2", 1: "4", 2: "6"}[[*map(str, questions)].index(q)]
        )

    runner, model = make_runner(honest)
    assert runner.batch(tricky) == ["2", "4", "6"]
    assert len(model.calls) == 1


def test_a_restatement_that_matches_no_input_is_reasked() -> None:
    def confabulates(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        if n == 1:
            questions = ["Something entirely different?", *questions[1:]]
        return well_formed(questions, arithmetic_answer)

    runner, model = make_runner(confabulates)
    assert runner.batch(QUESTIONS[:3]) == EXPECTED[:3]
    assert asked_questions(model.calls[1]) == [QUESTIONS[0]]


def test_the_stream_is_dropped_once_every_item_is_answered() -> None:
    """Runaway completions (invented Q[9]..Q[21]) cost nothing once all items are in."""
    consumed = []

    def runaway(messages: list[BaseMessage], n: int) -> str:
        return solver()(messages, n) + "\n\nQ[5]: What is 1 + 1?\n" + "A[5]: " + "la " * 500

    model = ScriptedChatModel(script=runaway)
    original = model._stream

    def counting(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            consumed.append(chunk)
            yield chunk

    object.__setattr__(model, "_stream", counting)
    runner = AutoDemoBatchRunnable(model, batch_size=4)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert sum(len(c.text) for c in consumed) < len(solver()(model.calls[0], 1)) + 50


def test_invented_questions_past_the_batch_are_ignored() -> None:
    def invents(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        extra = [f"What is {k} + 1?" for k in range(100, 110)]
        return well_formed([*questions, *extra], arithmetic_answer)

    runner, model = make_runner(invents)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert len(model.calls) == 1


def test_an_item_that_keeps_failing_gets_an_explicit_error_after_max_attempts() -> None:
    def never_answers_second(messages: list[BaseMessage], n: int) -> str:
        questions = [q for q in asked_questions(messages) if q != QUESTIONS[1]]
        return well_formed(questions, arithmetic_answer) if questions else "I cannot."

    runner, model = make_runner(never_answers_second, max_attempts=3)
    results = runner.batch(QUESTIONS[:3], return_exceptions=True)
    assert results[0] == EXPECTED[0] and results[2] == EXPECTED[2]
    error = results[1]
    assert isinstance(error, AutoDemoItemError)
    assert (error.index, error.attempts) == (1, 3)
    assert "missing" in error.reason
    assert len(model.calls) >= 3  # batch, smaller batches (renumbered: re-asked), alone


def test_without_return_exceptions_the_item_error_is_raised() -> None:
    runner, _ = make_runner(lambda m, n: "no answers at all", max_attempts=1)
    with pytest.raises(AutoDemoItemError, match="item 0"):
        runner.batch(QUESTIONS[:2])


def test_model_exception_mid_stream_keeps_finished_items_and_retries_the_rest() -> None:
    def fails_first(messages: list[BaseMessage], n: int):
        text = well_formed(asked_questions(messages), arithmetic_answer)
        if n == 1:
            cut = text.index("Q[3]")
            return text[:cut], {"raise": ConnectionError("server went away")}
        return text

    runner, model = make_runner(fails_first)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert asked_questions(model.calls[1]) == QUESTIONS[2:4]


def test_model_errors_on_every_attempt_become_per_item_errors_for_that_batch_only() -> None:
    def second_batch_broken(messages: list[BaseMessage], n: int):
        questions = asked_questions(messages)
        if any(q in QUESTIONS[4:8] for q in questions):
            return RuntimeError("boom")
        return well_formed(questions, arithmetic_answer)

    runner, _ = make_runner(second_batch_broken)
    results = runner.batch(QUESTIONS, return_exceptions=True)
    assert results[:4] == EXPECTED[:4] and results[8:] == EXPECTED[8:]
    assert all(isinstance(r, AutoDemoItemError) and "boom" in r.reason for r in results[4:8])


# -- usage accounting ---------------------------------------------------------------------


def test_usage_metadata_reported_by_the_model_is_summed() -> None:
    def with_usage(messages: list[BaseMessage], n: int):
        text = solver()(messages, n)
        return text, {"usage": {"input_tokens": 100, "output_tokens": 40, "total_tokens": 140}}

    runner, _ = make_runner(with_usage, include_details=True)
    with track_usage() as usage:
        results = runner.batch(QUESTIONS[:8])
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (2, 200, 80)
    assert not usage.estimated_tokens
    assert all(isinstance(r, ItemResult) for r in results)
    assert results[0].output_tokens == pytest.approx(10.0)  # a quarter of its batch
    assert results[0].restated_question == QUESTIONS[0]


def test_usage_is_estimated_when_the_model_reports_none() -> None:
    runner, _ = make_runner(solver())
    with track_usage() as usage:
        runner.batch(QUESTIONS[:4])
    assert usage.estimated_tokens and usage.input_tokens > 0 and usage.output_tokens > 0


# -- token budget ------------------------------------------------------------------------


def test_batch_size_is_lowered_to_fit_the_output_token_limit() -> None:
    runner, model = make_runner(solver(), batch_size=8, max_output_tokens=100, answer_tokens=40)
    assert runner.batch(QUESTIONS[:8]) == EXPECTED[:8]
    assert max(len(asked_questions(call)) for call in model.calls) <= 2


# -- output parsing ----------------------------------------------------------------------


class Sum(BaseModel):
    value: int


def test_a_callable_output_parser_turns_answers_into_objects() -> None:
    runner, _ = make_runner(solver(), output_parser=int)
    assert runner.batch(QUESTIONS[:3]) == [11, 22, 33]


def test_a_pydantic_output_model_parses_json_answers() -> None:
    def json_answers(messages: list[BaseMessage], n: int) -> str:
        return well_formed(
            asked_questions(messages), lambda q: '{"value": ' + arithmetic_answer(q) + "}"
        )

    runner, model = make_runner(json_answers, output_parser=Sum)
    assert runner.batch(QUESTIONS[:2]) == [Sum(value=11), Sum(value=22)]
    assert "value" in str(model.calls[0][0].content)  # the schema was given to the model


def test_an_answer_the_output_parser_rejects_is_reasked() -> None:
    def garbled_first(messages: list[BaseMessage], n: int) -> str:
        return well_formed(
            asked_questions(messages), lambda q: "eleven" if n == 1 else arithmetic_answer(q)
        )

    runner, model = make_runner(garbled_first, output_parser=int)
    assert runner.batch(QUESTIONS[:1]) == [11]
    assert len(model.calls) == 2


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_invalid_batch_size_is_rejected_at_construction(batch_size) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        AutoDemoBatchRunnable(ScriptedChatModel(script=solver()), batch_size=batch_size)


def test_unknown_mode_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        AutoDemoBatchRunnable(ScriptedChatModel(script=solver()), mode="fast")


def test_llm_that_is_not_a_runnable_is_rejected() -> None:
    with pytest.raises(TypeError, match="llm"):
        AutoDemoBatchRunnable("gpt-4o")  # type: ignore[arg-type]


def test_wrong_input_type_names_the_item_index() -> None:
    runner, model = make_runner(solver())
    with pytest.raises(AutoDemoInputError, match="item 2: expected str"):
        runner.batch(["a?", "b?", 42])
    assert model.calls == []


def test_empty_input_text_names_the_item_index() -> None:
    runner, _ = make_runner(solver())
    with pytest.raises(ValueError, match="item 1: the input is empty"):
        runner.batch(["a?", "   "])


def test_dict_missing_a_template_key_names_item_and_key() -> None:
    runner, _ = make_runner(solver(), input_template="{a} + {b}")
    with pytest.raises(ValueError, match=r"item 1: input_template needs key\(s\) \['b'\]"):
        runner.batch([{"a": 1, "b": 2}, {"a": 1}])


# -- LangChain integration ---------------------------------------------------------------


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[tuple] = []
        self.models: list[tuple] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw) -> None:
        self.chains.append((run_id, parent_run_id, inputs))

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        self.models.append((run_id, parent_run_id, kw.get("metadata", {})))


def test_each_input_gets_its_own_run_and_the_model_call_is_a_child_run() -> None:
    recorder = RunRecorder()
    runner, _ = make_runner(solver())
    runner.batch(QUESTIONS[:6], config={"callbacks": [recorder]})
    item_runs = {run_id: inputs for run_id, parent, inputs in recorder.chains if parent is None}
    assert sorted(item_runs.values(), key=str) == sorted(QUESTIONS[:6], key=str)
    assert len(recorder.models) == 2
    assert all(parent in item_runs for _, parent, _ in recorder.models)
    assert recorder.models[0][2]["autodemo_items"] in ([0, 1, 2, 3], [4, 5])


def test_map_packs_the_list_into_batches() -> None:
    runner, model = make_runner(solver())
    assert runner.map().invoke(QUESTIONS[:4]) == EXPECTED[:4]
    assert len(model.calls) == 1


def test_with_fallbacks_replaces_only_the_failed_items() -> None:
    def leaves_out_the_first(m, n):
        blocks = well_formed(asked_questions(m), arithmetic_answer).split("\n\n")
        return "\n\n".join(b for b in blocks if f": {QUESTIONS[0]}\n" not in b)

    runner, _ = make_runner(leaves_out_the_first, max_attempts=1)
    fallback = RunnableLambda(lambda q: "fallback")
    assert runner.with_fallbacks([fallback]).batch(QUESTIONS[:3]) == [
        "fallback",
        *EXPECTED[1:3],
    ]


def test_with_retry_retries_failed_items() -> None:
    attempts = {"n": 0}

    def flaky(messages: list[BaseMessage], n: int):
        attempts["n"] += 1
        if attempts["n"] == 1:
            return RuntimeError("transient")
        return solver()(messages, n)

    runner, _ = make_runner(flaky, max_attempts=1)
    retrying = runner.with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
    assert retrying.batch(QUESTIONS[:2]) == EXPECTED[:2]


def test_chain_with_a_downstream_parser() -> None:
    runner, _ = make_runner(solver())
    chain = runner | RunnableLambda(int)
    assert chain.batch(QUESTIONS[:3]) == [11, 22, 33]


def test_with_config_is_honoured() -> None:
    recorder = RunRecorder()
    runner, _ = make_runner(solver())
    runner.with_config(callbacks=[recorder], run_name="adder").batch(QUESTIONS[:2])
    assert len(recorder.chains) == 2


def test_wraps_a_generic_fake_chat_model_that_reports_no_finish_reason() -> None:
    completion = "Q[1]: What is 1 + 1?\nA[1]: Two.\nThe answer is 2."
    # GenericFakeChatModel never says how its stream ended: a user's first unit test
    # with LangChain's own fakes works by default ...
    model = GenericFakeChatModel(messages=iter([AIMessage(content=completion)]))
    assert AutoDemoBatchRunnable(model).batch(["What is 1 + 1?"]) == ["2"]
    # ... while for any other model the end of such a stream is not trusted (it may have
    # been cut), and the error says why and what to do.
    model = GenericFakeChatModel(messages=iter([AIMessage(content=completion)] * 3))
    runner = AutoDemoBatchRunnable(model, require_finish_reason=True)
    [error] = runner.batch(["What is 1 + 1?"], return_exceptions=True)
    assert isinstance(error, AutoDemoItemError) and "without a finish reason" in str(error)
    assert "require_finish_reason=False" in str(error)


# -- planners ----------------------------------------------------------------------------


class ReversePairs(SequentialSelector):
    def plan(self, texts, batch_size):
        order = list(range(len(texts)))[::-1]
        return [PlannedBatch(tuple(order[i : i + 2])) for i in range(0, len(order), 2)]


def test_a_custom_planner_decides_the_batches_but_results_stay_in_input_order() -> None:
    runner, model = make_runner(solver(), selector=ReversePairs())
    assert runner.batch(QUESTIONS[:5]) == EXPECTED[:5]
    assert asked_questions(model.calls[0])[0] in (QUESTIONS[4], QUESTIONS[2], QUESTIONS[0])


class KeepOnlyFirst(SequentialSelector):
    def plan(self, texts, batch_size):
        n = len(texts)
        return [
            PlannedBatch(
                tuple([i, *[j for j in range(n) if j != i][: batch_size - 1]]), frozenset({i})
            )
            for i in range(n)
        ]


def test_neighbour_batches_keep_only_their_target_answer() -> None:
    runner, model = make_runner(solver(), selector=KeepOnlyFirst(), batch_size=3)
    assert runner.batch(QUESTIONS[:4]) == EXPECTED[:4]
    assert len(model.calls) == 4


def test_single_mode_sends_the_question_alone() -> None:
    runner, model = make_runner(solver(), mode="single")
    runner.batch(QUESTIONS[:2])
    assert single_question(model.calls[0]) == QUESTIONS[0]


# -- streaming results -------------------------------------------------------------------


def test_batch_as_completed_yields_each_call_as_soon_as_it_is_judged() -> None:
    import threading

    second_call_may_finish = threading.Event()
    first_call_seen = []

    class Gated(ScriptedChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            second = asked_questions(messages)[0] == QUESTIONS[2]
            for chunk in super()._stream(messages, stop, run_manager, **kwargs):
                if second and not chunk.message.content:  # hold the last chunk back
                    first_call_seen.append(second_call_may_finish.wait(timeout=5))
                yield chunk

    runner = AutoDemoBatchRunnable(Gated(script=solver(), chunk_size=5), batch_size=2)
    results = []
    for index, answer in runner.batch_as_completed(QUESTIONS[:4], {"max_concurrency": 2}):
        results.append((index, answer))
        if index in (0, 1):
            second_call_may_finish.set()
    assert sorted(results) == [(0, "11"), (1, "22"), (2, "33"), (3, "44")]
    assert first_call_seen == [True]  # the first call's items came while the second streamed


@pytest.mark.parametrize("driver", ["batch", "as_completed", "abatch", "aas_completed"])
async def test_a_later_conflicting_copy_vetoes_an_answer_in_every_driver(driver: str) -> None:
    def script(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        text = well_formed(questions, arithmetic_answer)
        if n == 1:  # item 1 is answered, then repeated with another answer
            text = text.replace(
                "Q[2]:", f"Q[1]: {questions[0]}\nA[1]: Redo.\nThe answer is 99.\n\nQ[2]:"
            )
        return text

    runner, model = make_runner(script)
    inputs = QUESTIONS[:3]
    if driver == "batch":
        results = runner.batch(inputs)
    elif driver == "abatch":
        results = await runner.abatch(inputs)
    elif driver == "as_completed":
        results = [r for _, r in sorted(runner.batch_as_completed(inputs))]
    else:
        results = [r for _, r in sorted([x async for x in runner.abatch_as_completed(inputs)])]
    assert results == EXPECTED[:3]
    assert asked_questions(model.calls[1]) == inputs[:1]  # the conflicting item, re-asked


def test_similarity_selector_plans_the_calls_and_results_stay_in_input_order() -> None:
    from langchain_autodemo.selector import SimilarityBatchSelector

    questions = [
        "What is 1 + 1 apples?", "What is 50 + 50 miles?", "What is 2 + 2 apples?",
        "What is 60 + 60 miles?", "What is 3 + 3 apples?", "What is 70 + 70 miles?",
    ]  # fmt: skip
    runner, model = make_runner(solver(), batch_size=3, selector=SimilarityBatchSelector())
    assert runner.batch(questions) == ["2", "100", "4", "120", "6", "140"]
    grouped = sorted(sorted(asked_questions(call)) for call in model.calls)
    assert grouped == sorted([sorted(questions[0::2]), sorted(questions[1::2])])


def test_demo_pool_demonstrations_are_shown_as_a_solved_exchange() -> None:
    from langchain_core.messages import AIMessage as AI

    from langchain_autodemo.selector import SimilarityBatchSelector

    pool = [("What is 5 + 5 apples?", "Five and five.\nThe answer is 10.")]
    selector = SimilarityBatchSelector(grouping="demo_pool", demo_pool=pool, demos_per_batch=1)
    runner, model = make_runner(solver(), selector=selector)
    assert runner.batch(["What is 1 + 1 apples?"]) == ["2"]
    demo_turn = [m for m in model.calls[0] if isinstance(m, AI)]
    assert demo_turn and "Q[1]: What is 5 + 5 apples?" in str(demo_turn[0].content)
    assert asked_questions(model.calls[0]) == ["What is 1 + 1 apples?"]


def test_a_partial_repetition_cut_off_by_the_early_stop_is_ignored() -> None:
    def repeats_after_the_end(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        text = well_formed(questions, arithmetic_answer)
        return text + f"\n\nQ[1]: {questions[0]}\nA[1]: The answer is 1"  # "11", cut short

    model = ScriptedChatModel(script=repeats_after_the_end, chunk_size=1000)
    runner = AutoDemoBatchRunnable(model, batch_size=2)
    assert runner.batch(QUESTIONS[:2]) == EXPECTED[:2]
    assert len(model.calls) == 1
