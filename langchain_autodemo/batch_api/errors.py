"""Errors of the Batch API path; all under :class:`~langchain_autodemo.errors.AutoDemoError`.

::

    AutoDemoError
    └── BatchApiError                          something the Batch API path decided
        ├── BatchRequestError                  one request of a batch got no completion
        │                                      (its line in the error file, an expiry,
        │                                      a cancellation, a failed batch)
        └── BatchJobStateError (+ValueError)   a state file that belongs to another job
"""

from __future__ import annotations

from typing import Any

from langchain_autodemo.errors import AutoDemoError, ConfigurationError

__all__ = ["BatchApiError", "BatchJobStateError", "BatchRequestError"]


class BatchApiError(AutoDemoError):
    """Base class of the errors raised by :mod:`langchain_autodemo.batch_api`."""


class BatchRequestError(BatchApiError):
    """One request of a batch that delivered no completion.

    The engine receives it as the model-call error of that request
    (``session.finish(error=...)``), so the items of the request are re-asked or end
    with an explicit per-item error, exactly as when an online call raises.

    Attributes:
        code: the provider's error code (``"batch_expired"``, ``"server_error"``, ...).
        status_code: the HTTP status of the request inside the batch, if it ran.
        batch_id: the batch the request belonged to.
        custom_id: the request's ``custom_id``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.batch_id = batch_id
        self.custom_id = custom_id

    def __str__(self) -> str:
        where = f" (request {self.custom_id} of {self.batch_id})" if self.batch_id else ""
        status = f" [{self.status_code}]" if self.status_code else ""
        code = f"{self.code}: " if self.code else ""
        return f"{code}{self.message}{status}{where}"

    def __reduce__(self) -> Any:
        state = {
            "code": self.code,
            "status_code": self.status_code,
            "batch_id": self.batch_id,
            "custom_id": self.custom_id,
        }
        return (_rebuild, (self.message, state))


def _rebuild(message: str, state: dict[str, Any]) -> BatchRequestError:
    return BatchRequestError(message, **state)


class BatchJobStateError(BatchApiError, ConfigurationError):
    """A job state file that cannot be used for this job (the message says why)."""
