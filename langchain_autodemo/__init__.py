"""Auto-Demo batch prompting for LangChain.

Pack many small requests into few model calls; the model restates each question
before answering it, so earlier answers serve as in-batch demonstrations, and the
restatement proves which input each answer belongs to.

Example:
    >>> from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoOutputParser
"""

from langchain_autodemo.audit import AgreementEstimate, AuditedRunnable, AuditPolicy
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoInputError,
    AutoDemoItemError,
    AutoDemoModelCallError,
    ConfigurationError,
    EvaluationError,
)
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import AutoDemoOutputParser, ParsedItem
from langchain_autodemo.planning import BatchSelector, PlannedBatch, SequentialSelector
from langchain_autodemo.prompts import Mode, Restate, build_batch_messages, build_single_messages
from langchain_autodemo.runnable import AutoDemoBatchRunnable
from langchain_autodemo.settings import Settings, TunedConfig
from langchain_autodemo.usage import UsageStats, track_usage

__all__ = [
    "AgreementEstimate",
    "AuditPolicy",
    "AuditedRunnable",
    "AutoDemoBatchRunnable",
    "AutoDemoError",
    "AutoDemoInputError",
    "AutoDemoItemError",
    "AutoDemoModelCallError",
    "AutoDemoOutputParser",
    "BatchSelector",
    "ConfigurationError",
    "EvaluationError",
    "ItemResult",
    "Markers",
    "Mode",
    "ParsedItem",
    "PlannedBatch",
    "Restate",
    "SequentialSelector",
    "Settings",
    "SimilarityBatchSelector",
    "TunedConfig",
    "UsageStats",
    "WordLlamaEmbeddings",
    "build_batch_messages",
    "build_single_messages",
    "track_usage",
    "tune",
]


def __getattr__(name: str):  # the Chroma/wordllama integrations and tuning load when used
    if name == "SimilarityBatchSelector":
        from langchain_autodemo.selector import SimilarityBatchSelector

        return SimilarityBatchSelector
    if name == "tune":  # the search pulls in the evaluation harness
        from langchain_autodemo.tuning import tune

        return tune
    if name == "WordLlamaEmbeddings":
        from langchain_autodemo.embeddings import WordLlamaEmbeddings

        return WordLlamaEmbeddings
    raise AttributeError(f"module 'langchain_autodemo' has no attribute {name!r}")
