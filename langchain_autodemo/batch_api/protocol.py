"""The one interface between a batch job and a provider's batch protocol.

:class:`~langchain_autodemo.batch_api.job.BatchApiJob` plans, persists and feeds the
engine; a :class:`BatchProvider` only turns messages into request lines and moves
those lines to and from the provider. OpenAI's Batch API is
:class:`~langchain_autodemo.batch_api.openai_provider.OpenAIBatchProvider`; Anthropic's
Message Batches would be another class with the same seven members (a request is
``{"custom_id", "params"}``, ``submit`` is ``messages.batches.create(requests=...)``,
``outcomes`` reads ``messages.batches.results``), and neither the job nor the engine
would change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.messages import AIMessage, BaseMessage

from langchain_autodemo.batch_api.errors import BatchRequestError

__all__ = ["BatchProvider", "BatchState", "Outcome", "RemoteBatch", "TERMINAL_STATES"]

BatchState = Literal["pending", "running", "completed", "expired", "cancelled", "failed"]
"""A provider's batch status, normalised (OpenAI's ``validating`` is ``pending``,
``in_progress``/``finalizing``/``cancelling`` are ``running``)."""

TERMINAL_STATES: frozenset[str] = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass(frozen=True)
class RemoteBatch:
    """What the provider says about one submitted batch."""

    batch_id: str
    state: BatchState
    provider_status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str = ""
    """Batch-level errors (why a batch failed validation), as one line."""
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Outcome:
    """What one request delivered: a completion, or an error.

    The job stores outcomes in its state file (``as_dict``/``from_dict``) so that a
    re-attached process replays finished rounds without asking the provider again.
    """

    content: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    batch_id: str | None = None
    logprobs: Any = None
    """The choice's token log-probabilities as the provider sent them (OpenAI's
    ``{"content": [{"token", "logprob"}, ...]}``), for the answers' confidence."""

    @property
    def ok(self) -> bool:
        return self.error_message is None

    def message(self) -> AIMessage:
        """The completion as the chat model would have returned it (non-streamed)."""
        usage = None
        if self.input_tokens is not None or self.output_tokens is not None:
            inputs, outputs = self.input_tokens or 0, self.output_tokens or 0
            usage = {
                "input_tokens": inputs,
                "output_tokens": outputs,
                "total_tokens": inputs + outputs,
            }
        metadata: dict[str, Any] = (
            {"finish_reason": self.finish_reason} if self.finish_reason else {}
        )
        if self.logprobs:
            metadata["logprobs"] = self.logprobs
        return AIMessage(
            content=self.content or "", response_metadata=metadata, usage_metadata=usage
        )

    def error(self, custom_id: str) -> BatchRequestError:
        return BatchRequestError(
            self.error_message or "the request failed",
            code=self.error_code,
            status_code=self.status_code,
            batch_id=self.batch_id,
            custom_id=custom_id,
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def failure(
        cls,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        batch_id: str | None = None,
    ) -> Outcome:
        return cls(
            error_code=code, error_message=message, status_code=status_code, batch_id=batch_id
        )


@runtime_checkable
class BatchProvider(Protocol):
    """A provider's batch protocol, seen from a job."""

    name: str
    """Short name recorded in the job state (``"openai"``)."""

    def request(self, custom_id: str, messages: Sequence[BaseMessage]) -> dict[str, Any]:
        """One request line (a JSON object) asking the wrapped chat model ``messages``."""
        ...

    def submit(self, lines: Sequence[bytes], *, tag: str) -> str:
        """Send the encoded request lines as one batch labelled ``tag``; its batch id."""
        ...

    def find(self, tag: str, *, since: float) -> str | None:
        """The id of a batch labelled ``tag`` created after ``since`` (Unix time), if any.

        Lets a job killed between "create the batch" and "remember its id" re-attach to
        it instead of submitting the same requests twice.
        """
        ...

    def retrieve(self, batch_id: str) -> RemoteBatch: ...

    def outcomes(self, batch: RemoteBatch) -> Iterator[tuple[str, Outcome]]:
        """``(custom_id, outcome)`` for every request the finished batch has a result for."""
        ...

    def cancel(self, batch_id: str) -> None: ...
