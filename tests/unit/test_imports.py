"""The public surface, guarded the way the LangChain partner packages guard theirs: a
name added to or dropped from ``__all__`` fails here until the list below says so."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import langchain_autodemo

EXPECTED_ALL = [
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


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_autodemo.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_imports(name: str) -> None:
    exec(f"from langchain_autodemo import {name}", {})  # the lazy ones included


def _modules() -> list[str]:
    prefix = f"{langchain_autodemo.__name__}."
    found = pkgutil.walk_packages(langchain_autodemo.__path__, prefix)
    return sorted(m.name for m in found if not m.name.endswith("__main__"))  # that one runs


@pytest.mark.parametrize("module_name", _modules())
def test_every_module_exports_what_it_has(module_name: str) -> None:
    """Each module's ``__all__`` names only what the module really defines or imports."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", [])
    assert len(set(exported)) == len(exported), "no name twice"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names {missing}, which it lacks"
