"""``BatchApiJob``: an Auto-Demo ``batch()`` whose packed calls go through a provider Batch API.

The engine is the online path's (:mod:`langchain_autodemo.engine`): same plans (the
runner's selector and token budget), same prompts, and every completion is fed through
a ``CallSession``, so alignment, verification and recovery are exactly those of
``runner.batch()``. Only the transport differs::

    round 1: engine.initial_calls() -> request lines -> batch file(s) -> batch(es)
             poll ... -> output + error files -> session.feed(completion) / finish(error)
             -> engine.complete() -> follow-up calls
    round 2: the follow-ups, as another batch (default) or online (follow_ups="online")
    ...      until every input has an answer or an explicit error

Everything the job learns is committed to its state file first
(:class:`~langchain_autodemo.batch_api.state.JobState`), so a killed process that is
started again with the same inputs re-attaches: finished rounds are replayed from the
file, pending batches are polled again, and no round is ever submitted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import messages_from_dict, messages_to_dict

from langchain_autodemo._validation import require_positive_int
from langchain_autodemo.batch_api.errors import BatchApiError, BatchJobStateError
from langchain_autodemo.batch_api.protocol import BatchProvider, Outcome, RemoteBatch
from langchain_autodemo.batch_api.state import JobState, PartRecord
from langchain_autodemo.engine import Engine, ItemResult, ModelCall
from langchain_autodemo.errors import (
    AutoDemoError,
    ConfigurationError,
    model_call_error,
)
from langchain_autodemo.messages import text_of
from langchain_autodemo.planning import PlannedBatch, estimate_message_tokens
from langchain_autodemo.usage import UsageStats, active_trackers, reported_usage

if TYPE_CHECKING:
    from langchain_autodemo.batch_api.cost import CostReport, PriceTable
    from langchain_autodemo.runnable import AutoDemoBatchRunnable

__all__ = [
    "BatchApiJob",
    "BatchInfo",
    "JobProgress",
    "MAX_BYTES_PER_FILE",
    "MAX_REQUESTS_PER_FILE",
]

#: OpenAI's limits for one batch input file (Batch API guide): 50,000 requests, 200 MB.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024

FollowUps = Literal["batch", "online"]

# A cancelled batch is the user's decision: its unanswered items are not asked again.
_FINAL_CODES = frozenset({"batch_cancelled"})

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchInfo:
    """One submitted batch, as last polled."""

    batch_id: str
    tag: str
    round: int
    status: str
    total: int
    completed: int
    failed: int


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands (what ``on_progress`` receives after every poll)."""

    job_id: str
    round: int
    """1 for the initial calls, 2 for the first re-asks, ..."""
    via: str
    """How the current round is asked: ``"batch"`` or ``"online"``."""
    batches: tuple[BatchInfo, ...]
    """The batches of the current round."""
    requests_total: int
    """Requests written so far, over every round."""
    requests_done: int
    """Of those, requests with a result (or counted as completed/failed by the provider)."""
    items_total: int
    items_done: int
    done: bool


class BatchApiJob:
    """Answer ``inputs`` with ``runner``'s packed calls, submitted through a Batch API.

    Args:
        runner: the :class:`~langchain_autodemo.AutoDemoBatchRunnable` whose settings,
            selector and chat model are used. Its model must be a ``ChatOpenAI`` for the
            default provider; request bodies are built from it.
        inputs: the inputs, as for ``runner.batch()``.
        state: path of the job's SQLite state file. Give one to make the job resumable:
            a job created again with the same inputs and the same file re-attaches to
            its batches. ``None`` keeps the state in memory.
        provider: the batch protocol; default
            :class:`~langchain_autodemo.batch_api.openai_provider.OpenAIBatchProvider`
            on the runner's model.
        follow_ups: ``"batch"`` (default) submits the re-asks of each round as another
            batch; ``"online"`` asks them at once with ordinary calls of the model.
        max_requests_per_file, max_bytes_per_file: split a round over several batch
            files beyond these (defaults: OpenAI's 50,000 requests, 200 MB).
        max_resubmits: how many times the unanswered requests of an expired batch are
            submitted again before their items are failed (and re-asked by the engine).
        online_concurrency: calls in flight for ``follow_ups="online"``.
        metadata: JSON-serialisable data stored with a new job (see :meth:`stored`).
        on_event: receives one line per submission, re-attachment, expiry, ...;
            default: the ``langchain_autodemo.batch_api`` logger.

    Example:
        .. code-block:: python

            job = runner.submit_batch_job(questions, state="answers.batch-api.sqlite")
            answers = job.wait(poll_interval=60, return_exceptions=True)
            print(job.usage.input_tokens, job.cost().table())
    """

    def __init__(
        self,
        runner: AutoDemoBatchRunnable,
        inputs: Sequence[Any],
        *,
        state: str | Path | None = None,
        provider: BatchProvider | None = None,
        follow_ups: FollowUps = "batch",
        max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        max_resubmits: int = 3,
        online_concurrency: int = 4,
        metadata: dict[str, Any] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if follow_ups not in ("batch", "online"):
            raise ConfigurationError(f"follow_ups must be 'batch' or 'online', got {follow_ups!r}")
        for name, value in (
            ("max_requests_per_file", max_requests_per_file),
            ("max_bytes_per_file", max_bytes_per_file),
            ("online_concurrency", online_concurrency),
        ):
            require_positive_int(name, value)
        if provider is None:
            from langchain_autodemo.batch_api.openai_provider import OpenAIBatchProvider

            provider = OpenAIBatchProvider(runner.model)
        self.runner = runner
        self.provider = provider
        self.follow_ups: FollowUps = follow_ups
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.max_resubmits = max_resubmits
        self.online_concurrency = online_concurrency
        self._on_event = on_event
        # Every input is checked before anything is planned or sent (names a bad item).
        # The runner's own planning step: the same validation, chat-context groups and
        # packed calls as batch(), so a job asks exactly what batch() would ask.
        self._planned = runner.plan(list(inputs))
        self.texts = list(self._planned.texts)
        self.usage = UsageStats()
        self._trackers = active_trackers()
        self.state = JobState(state if state is not None else ":memory:")
        self._open(metadata or {})
        self._emitted: dict[int, Any] = {}
        self._abandoned: dict[int, AutoDemoError] = {}
        self._remote: dict[str, RemoteBatch] = {}
        self._attached: set[str] = set()
        self._live_errors: dict[str, BaseException] = {}
        self._moved = False
        self.prompt_estimate = 0
        """Character estimate of the prompts asked so far (calibrates the cost estimate)."""
        self._round = 0
        self._lines: dict[str, bytes] = {}
        self._calls: list[ModelCall] = []
        if self.texts:
            self.engine = Engine(self.texts, self._plans, runner.settings)
            self._calls = self.engine.initial_calls()
        self._finished = not self._calls
        self._backlog: list[tuple[int, Any]] = []
        if self._finished:
            self._finish()
        elif self.reattached:
            self._replay()

    # -- identity and state ----------------------------------------------------------

    def _open(self, metadata: dict[str, Any]) -> None:
        settings = self.runner.settings
        fingerprint = _digest(
            json.dumps(
                {
                    "texts": self.texts,
                    "contexts": [messages_to_dict(list(p.context)) for p in self._planned.batches],
                    "mode": settings.mode.value,
                    "batch_size": settings.batch_size,
                    "instructions": settings.asked_instructions,
                    "markers": repr(settings.markers),
                    "reasoning": settings.reasoning,
                    "max_attempts": settings.max_attempts,
                    "max_output_tokens": settings.max_output_tokens,
                    "answer_tokens": settings.answer_tokens,
                    "provider": self.provider.name,
                    "follow_ups": self.follow_ups,
                },
                sort_keys=True,
            ).encode()
        )
        stored = self.state.get("fingerprint")
        if stored is None:
            self.job_id = uuid.uuid4().hex[:12]
            self.created_at = time.time()
            self._plans = list(self._planned.batches)
            self.state.put(
                {
                    "job_id": self.job_id,
                    "created_at": self.created_at,
                    "items": len(self.texts),
                    "plans": [_plan_to_json(p) for p in self._plans],
                    "metadata": metadata,
                    "fingerprint": fingerprint,  # written last: a job is known once complete
                }
            )
            self.reattached = False
            return
        if stored != fingerprint:
            raise BatchJobStateError(
                f"{self.state.path} belongs to another batch job (other inputs or settings); "
                "use another state file, or delete this one to start afresh"
            )
        self.job_id = str(self.state.get("job_id"))
        self.created_at = float(self.state.get("created_at"))
        self._plans = [_plan_from_json(p) for p in self.state.get("plans")]
        self.reattached = True
        self._event(f"Re-attaching to batch job {self.job_id} ({self.state.path})")

    @staticmethod
    def stored(path: str | Path) -> dict[str, Any] | None:
        """The ``metadata`` and status of the job recorded in ``path`` (None: no job).

        Returns ``{"job_id", "items", "done", "metadata"}`` without planning or
        contacting anything, e.g. to learn which inputs a pending job was started with.
        """
        if not Path(path).exists():
            return None
        state = JobState(path)
        try:
            if state.get("fingerprint") is None:
                return None
            return {
                "job_id": state.get("job_id"),
                "items": state.get("items"),
                "done": bool(state.get("done")),
                "metadata": state.get("metadata") or {},
            }
        finally:
            state.close()

    # -- driving ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._finished

    @property
    def engine_texts(self) -> list[str]:
        """The inputs as the engine asks them (each on one line)."""
        return self.engine.texts if self.texts else []

    @property
    def round(self) -> int:
        return self._round + 1

    @property
    def via(self) -> str:
        return "batch" if self._round == 0 or self.follow_ups == "batch" else "online"

    def step(self) -> list[tuple[int, Any]]:
        """Submit, poll and collect once; return the results that became final.

        Never sleeps: :meth:`wait` calls it in a loop. A round whose outcomes are all in
        the state file (a re-attached job) is replayed at once, without the provider.
        """
        self._moved = False
        new, self._backlog = self._backlog, []
        if self._finished:
            return new
        if self.via == "online":
            self._ask_online()
            new += self._ingest()
        else:
            parts = self._ensure_parts()
            for part in parts:
                if part.state != "done":
                    self._advance(part)
            if all(p.state == "done" for p in self.state.parts(self._round)):
                new += self._ingest()
        return new

    def wait(
        self,
        *,
        poll_interval: float = 30.0,
        return_exceptions: bool = False,
        on_result: Callable[[int, Any], None] | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> list[Any]:
        """Step until every input has its result; the results in input order.

        ``on_result(index, result)`` is called as each input's result becomes final
        (a re-attached job calls it again for the results of replayed rounds);
        ``on_progress`` after every poll. Batches can take up to their completion window
        (24 hours at OpenAI): kill the process at any time and re-create the job with
        the same state file to continue.
        """
        while True:
            for index, result in self.step():
                if on_result is not None:
                    on_result(index, result)
            if on_progress is not None:
                on_progress(self.progress())
            if self._finished:
                return self.results(return_exceptions=return_exceptions)
            if not self._moved:
                time.sleep(poll_interval)

    def results(self, *, return_exceptions: bool = False) -> list[Any]:
        """One result per input, in input order: its answer (or ``ItemResult`` with
        ``include_details``) or its :class:`~langchain_autodemo.AutoDemoItemError`."""
        if not self._finished:
            raise BatchApiError(f"batch job {self.job_id} is not finished: call wait() or step()")
        ordered = [self._emitted[i] for i in range(len(self.texts))]
        if not return_exceptions:
            for result in ordered:
                if isinstance(result, AutoDemoError):
                    raise result
        return ordered

    def cancel(self) -> None:
        """Ask the provider to cancel the current round's batches.

        The job keeps what they delivered; the items left unanswered end with an error
        (they are not asked again). Call :meth:`wait` to collect the outcome.
        """
        for part in self.state.parts(self._round):
            if part.state == "submitted" and part.batch_id:
                self.provider.cancel(part.batch_id)
                self._event(f"Cancelling batch {part.batch_id}")

    def progress(self) -> JobProgress:
        batches = []
        in_flight = 0
        if not self._finished and self.via == "batch":
            for part in self.state.parts(self._round):
                remote = self._remote.get(part.tag)
                if part.batch_id is None:
                    continue
                total = remote.total if remote else len(part.custom_ids)
                completed = remote.completed if remote else 0
                failed = remote.failed if remote else 0
                status = remote.provider_status if remote else (part.provider_status or "")
                batches.append(
                    BatchInfo(part.batch_id, part.tag, part.round + 1, status, total,
                              completed, failed)
                )  # fmt: skip
                if part.state != "done":
                    in_flight += completed + failed
        return JobProgress(
            job_id=self.job_id,
            round=self.round,
            via=self.via,
            batches=tuple(batches),
            requests_total=self.state.count("requests"),
            requests_done=self.state.count("outcomes") + in_flight,
            items_total=len(self.texts),
            items_done=len(self._emitted),
            done=self._finished,
        )

    def cost(self, prices: PriceTable | None = None, model: str | None = None) -> CostReport:
        """The job's token cost at batch prices, next to the same tokens online and an
        estimate of one call per item online (see :mod:`~langchain_autodemo.batch_api.cost`)."""
        from langchain_autodemo.batch_api.cost import CostReport, PriceTable

        table = prices or PriceTable.default()
        name = model or str(getattr(self.provider, "model", "") or "")
        return CostReport.for_job(self, table.price(name), name)

    def _replay(self) -> None:
        """Feed the rounds the state file holds every outcome of through the engine again."""
        replayed = 0
        while not self._finished:
            if not self._lines:
                self._lines = self._encode()  # also checks them against the recorded ones
            if self.via == "batch":
                parts = self.state.parts(self._round)
                if not parts or any(p.state != "done" for p in parts):
                    break
            elif len(self.state.outcomes(self._lines)) < len(self._lines):
                break
            self._backlog += self._ingest()
            replayed += 1
        if replayed:
            self._event(
                f"Replayed {replayed} finished round(s) of job {self.job_id} from its state"
            )

    # -- one batch round ---------------------------------------------------------------

    def _custom_id(self, call: ModelCall) -> str:
        return f"c{call.call_id}-a{call.attempt}"

    def _encode(self) -> dict[str, bytes]:
        """The request lines of the current round; checked against the state file."""
        lines: dict[str, bytes] = {}
        for call in self._calls:
            custom_id = self._custom_id(call)
            line = self.provider.request(custom_id, call.messages)
            lines[custom_id] = (
                json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            )
        known = self.state.digests()
        digests = {cid: _digest(line) for cid, line in lines.items()}
        changed = [cid for cid, d in digests.items() if cid in known and known[cid] != d]
        if changed:
            raise BatchJobStateError(
                f"the requests of batch job {self.job_id} differ from those it submitted "
                f"(e.g. {changed[0]}): the model or its settings changed. Use another state "
                f"file, or delete {self.state.path} to start afresh"
            )
        self.state.add_requests(self._round, digests)
        return lines

    def _ensure_parts(self) -> list[PartRecord]:
        if not self._lines:
            self._lines = self._encode()
        parts = self.state.parts(self._round)
        if parts:
            return parts
        groups: list[list[str]] = []
        current: list[str] = []
        size = 0
        for custom_id, line in self._lines.items():
            if len(line) > self.max_bytes_per_file:
                call = next(c for c in self._calls if self._custom_id(c) == custom_id)
                raise ConfigurationError(
                    f"the request for item(s) {list(call.batch.kept)} is {len(line)} bytes, "
                    f"over the {self.max_bytes_per_file}-byte limit of one batch file"
                )
            if current and (
                len(current) >= self.max_requests_per_file
                or size + len(line) > self.max_bytes_per_file
            ):
                groups.append(current)
                current, size = [], 0
            current.append(custom_id)
            size += len(line)
        if current:
            groups.append(current)
        records = [
            PartRecord(f"{self.job_id}-r{self._round + 1}-p{seq + 1}", self._round, seq, ids,
                       "planned", None, None, 0)
            for seq, ids in enumerate(groups)
        ]  # fmt: skip
        self.state.add_parts(records)
        return records

    def _advance(self, part: PartRecord) -> None:
        if part.state in ("planned", "submitting"):
            batch_id = None
            if part.state == "submitting":  # killed while submitting: did it get through?
                batch_id = self.provider.find(part.tag, since=self.created_at)
                if batch_id is not None:
                    self._event(f"Re-attached to batch {batch_id} ({part.tag}, found by its tag)")
            if batch_id is None:
                part.state = "submitting"
                self.state.update_part(part)
                batch_id = self.provider.submit(
                    [self._lines[cid] for cid in part.custom_ids], tag=part.tag
                )
                self._event(
                    f"Submitted batch {batch_id} (round {part.round + 1}, "
                    f"{len(part.custom_ids)} requests, {part.tag})"
                )
            part.batch_id, part.state = batch_id, "submitted"
            self.state.update_part(part)
            self._attached.add(part.tag)
            self._moved = True
        assert part.batch_id is not None
        remote = self.provider.retrieve(part.batch_id)
        if part.tag not in self._attached:
            self._attached.add(part.tag)
            self._event(
                f"Re-attached to batch {part.batch_id} ({part.tag}): {remote.provider_status}"
            )
        self._remote[part.tag] = remote
        if remote.provider_status != part.provider_status:
            part.provider_status = remote.provider_status
            self.state.update_part(part)
        if remote.terminal:
            self._collect(part, remote)
            self._moved = True

    def _collect(self, part: PartRecord, remote: RemoteBatch) -> None:
        wanted = set(part.custom_ids)
        found: dict[str, Outcome] = {}
        for custom_id, outcome in self.provider.outcomes(remote):
            if custom_id in wanted and (custom_id not in found or outcome.ok):
                found[custom_id] = outcome
        unanswered = [
            cid
            for cid in part.custom_ids
            if cid not in found or found[cid].error_code in ("batch_expired", "batch_cancelled")
        ]
        follow: PartRecord | None = None
        batch_id = remote.batch_id
        if remote.state == "expired" and unanswered and part.resubmits < self.max_resubmits:
            for cid in unanswered:
                found.pop(cid, None)
            seq = max(p.seq for p in self.state.parts(part.round)) + 1
            follow = PartRecord(f"{self.job_id}-r{part.round + 1}-p{seq + 1}", part.round, seq,
                                unanswered, "planned", None, None, part.resubmits + 1)  # fmt: skip
            self._event(
                f"Batch {batch_id} expired with {len(unanswered)} of {len(part.custom_ids)} "
                f"requests unanswered: submitting those again ({follow.tag})"
            )
        else:
            reason = {
                "completed": ("missing_result", "the batch output has no result for this request"),
                "expired": ("batch_expired", "the batch expired before this request ran"),
                "cancelled": ("batch_cancelled", "the batch was cancelled before this request ran"),
                "failed": (
                    "batch_failed",
                    f"the batch failed: {remote.errors or 'no reason given'}",
                ),
            }[remote.state]
            for cid in unanswered:
                if cid not in found or found[cid].ok:
                    found[cid] = Outcome.failure(reason[1], code=reason[0], batch_id=batch_id)
            if remote.state != "completed":
                self._event(
                    f"Batch {batch_id} {remote.state}: {len(unanswered)} requests unanswered"
                )
        self.state.finish_part(part, found, follow)
        part.state = "done"

    # -- online follow-ups -------------------------------------------------------------

    def _ask_online(self) -> None:
        if not self._lines:
            self._lines = self._encode()
        stored = self.state.outcomes(self._lines)
        todo = [c for c in self._calls if self._custom_id(c) not in stored]
        if not todo:
            return
        self._event(f"Round {self.round}: asking {len(todo)} calls online")

        def ask(call: ModelCall) -> None:
            custom_id = self._custom_id(call)
            if call.delay:  # the engine's backoff after a failed call
                time.sleep(call.delay)
            try:
                message = self.runner.model.invoke(call.messages)
            except Exception as exc:  # the provider's own error: kept for the engine
                self._live_errors[custom_id] = exc
                outcome = Outcome.failure(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)
            else:
                usage = reported_usage(message)
                metadata = getattr(message, "response_metadata", None) or {}
                outcome = Outcome(
                    content=text_of(message) if not isinstance(message, str) else message,
                    finish_reason=metadata.get("finish_reason"),
                    input_tokens=usage.input_tokens if usage is not None else None,
                    output_tokens=usage.output_tokens if usage is not None else None,
                )
            self.state.add_outcome(custom_id, outcome)

        with ThreadPoolExecutor(max_workers=self.online_concurrency) as pool:
            list(pool.map(ask, todo))
        self._moved = True

    # -- feeding the engine -------------------------------------------------------------

    def _ingest(self) -> list[tuple[int, Any]]:
        """Feed the current round's outcomes through the engine; start the next round."""
        outcomes = self.state.outcomes(self._custom_id(c) for c in self._calls)
        new: list[tuple[int, Any]] = []
        next_calls: list[ModelCall] = []
        for call in sorted(self._calls, key=lambda c: c.call_id):
            custom_id = self._custom_id(call)
            outcome = outcomes.get(custom_id) or Outcome.failure(
                "no outcome recorded", code="missing_result"
            )
            session = self.engine.open(call)
            if outcome.ok:
                session.feed(outcome.message())
                report = session.finish()
            else:
                report = session.finish(
                    error=self._live_errors.pop(custom_id, None) or outcome.error(custom_id)
                )
            self.usage.record_call(report.usage, reask=call.is_reask, escalation=call.escalation)
            self.prompt_estimate += estimate_message_tokens(call.messages)
            final, follow_ups = self.engine.complete(call, report)
            for index, result in final:
                new.append(self._emit(index, result))
            if not outcome.ok and outcome.error_code in _FINAL_CODES:
                for follow_up in follow_ups:
                    for index in follow_up.batch.kept:
                        error = model_call_error(outcome.error(custom_id), index, call.attempt)
                        self._abandoned[index] = error
                        new.append(self._emit(index, error))
            else:
                next_calls += follow_ups
        self._round += 1
        self._calls = next_calls
        self._lines = {}
        self._moved = True
        if not next_calls:
            self._finish()
        return new

    def _emit(self, index: int, result: ItemResult | AutoDemoError) -> tuple[int, Any]:
        output = self.runner.output(result)
        self._emitted[index] = output
        return index, output

    def _finish(self) -> None:
        self._finished = True
        failed = sum(isinstance(o, AutoDemoError) for o in self._emitted.values())
        self.usage.record_items(len(self._emitted) - failed, failed)
        for tracker in self._trackers:
            tracker.merge(self.usage)
        if self.state.get("done") is not True:
            self.state.put({"done": True})

    def _event(self, message: str) -> None:
        if self._on_event is not None:
            self._on_event(message)
        else:
            _log.info(message)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plan_to_json(plan: PlannedBatch) -> dict[str, Any]:
    return {
        "indices": list(plan.indices),
        "keep": None if plan.keep is None else sorted(plan.keep),
        "demonstrations": [list(d) for d in plan.demonstrations],
        "context": messages_to_dict(list(plan.context)),
    }


def _plan_from_json(data: dict[str, Any]) -> PlannedBatch:
    keep = data.get("keep")
    return PlannedBatch(
        tuple(data["indices"]),
        None if keep is None else frozenset(keep),
        tuple((str(q), str(a)) for q, a in data.get("demonstrations", [])),
        tuple(messages_from_dict(data.get("context", []))),
    )
