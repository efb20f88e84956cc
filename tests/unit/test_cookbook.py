"""The cookbook notebooks run top to bottom (here on the scripted fake model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.embeddings import WordLlamaEmbeddings

NOTEBOOKS = sorted((Path(__file__).parents[2] / "cookbook").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(notebook: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTODEMO_MODEL", "fake:answer=sum")
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert namespace["answers"] and len(namespace["answers"]) == len(namespace["questions"])


def test_there_is_a_cookbook() -> None:
    assert NOTEBOOKS
    assert WordLlamaEmbeddings  # the selector cell's default embeddings import offline
