"""The examples in the pure core's docstrings run as written."""

import doctest
import importlib

import pytest

PURE_MODULES = [
    "langchain_autodemo.markers",
    "langchain_autodemo.prompts",
    "langchain_autodemo.parser",
    "langchain_autodemo.alignment",
    "langchain_autodemo.planning",
    "langchain_autodemo._validation",
]


@pytest.mark.parametrize("name", PURE_MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
