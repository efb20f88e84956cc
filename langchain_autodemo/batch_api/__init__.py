"""Auto-Demo packing over provider Batch APIs: half-price offline jobs, resumable.

- :class:`BatchApiJob` (or ``runner.submit_batch_job(inputs, state=...)``): the packed
  calls of ``runner.batch()``, submitted as Batch API files, polled, fed through the same
  engine, re-asks as follow-up rounds; one result per input, in input order.
- :class:`BatchProvider`: the one interface to a provider's batch protocol
  (:class:`OpenAIBatchProvider` implements OpenAI's).
- :class:`PriceTable` / :class:`CostReport`: what a job costs at batch and online prices.
- :mod:`~langchain_autodemo.batch_api.emulator`: a local Batch API in front of any
  OpenAI-compatible server (``autodemo emulate-batch-api``).
"""

from langchain_autodemo.batch_api.cost import CostReport, Price, PriceTable
from langchain_autodemo.batch_api.errors import BatchApiError, BatchJobStateError, BatchRequestError
from langchain_autodemo.batch_api.job import (
    MAX_BYTES_PER_FILE,
    MAX_REQUESTS_PER_FILE,
    BatchApiJob,
    BatchInfo,
    JobProgress,
)
from langchain_autodemo.batch_api.openai_provider import OpenAIBatchProvider
from langchain_autodemo.batch_api.protocol import BatchProvider, Outcome, RemoteBatch

__all__ = [
    "MAX_BYTES_PER_FILE",
    "MAX_REQUESTS_PER_FILE",
    "BatchApiError",
    "BatchApiJob",
    "BatchInfo",
    "BatchJobStateError",
    "BatchProvider",
    "BatchRequestError",
    "CostReport",
    "JobProgress",
    "OpenAIBatchProvider",
    "Outcome",
    "Price",
    "PriceTable",
    "RemoteBatch",
]
