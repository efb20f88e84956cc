"""Evaluation harness behind ``autodemo eval``: datasets, scoring, methods, reports."""

from langchain_autodemo.evaluation.bootstrap import BootstrapPool, BootstrapSettings, bootstrap_pool
from langchain_autodemo.evaluation.datasets import (
    BUILTIN_DATASETS,
    Dataset,
    DatasetError,
    Example,
    Task,
    load_dataset,
)
from langchain_autodemo.evaluation.diagnostics import (
    diagnostics,
    mcnemar_exact,
    paired_bootstrap_interval,
    paired_comparison,
)
from langchain_autodemo.evaluation.harness import ItemRecord, MethodResult, evaluate, run_method
from langchain_autodemo.evaluation.methods import (
    Method,
    MethodError,
    parse_batch_sizes,
    parse_methods,
)
from langchain_autodemo.evaluation.report import markdown_table, plot_results, write_report
from langchain_autodemo.evaluation.scoring import Score, extract_last_number, match_label

__all__ = [
    "BUILTIN_DATASETS",
    "BootstrapPool",
    "BootstrapSettings",
    "Dataset",
    "DatasetError",
    "Example",
    "ItemRecord",
    "Method",
    "MethodError",
    "MethodResult",
    "Score",
    "Task",
    "bootstrap_pool",
    "diagnostics",
    "evaluate",
    "extract_last_number",
    "load_dataset",
    "markdown_table",
    "match_label",
    "mcnemar_exact",
    "paired_bootstrap_interval",
    "paired_comparison",
    "parse_batch_sizes",
    "parse_methods",
    "plot_results",
    "run_method",
    "write_report",
]
