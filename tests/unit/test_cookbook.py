"""The cookbook's shape: six numbered notebooks with saved outputs, linked from the README.

Executing them (on the scripted test double) needs sockets, so it lives in
``tests/integration/test_cookbook.py``; this file checks what can be read without running.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "cookbook"
NOTEBOOKS = sorted(COOKBOOK.glob("[0-9]*.ipynb"))


def cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


def text(value: str | list[str]) -> str:
    """A notebook's multi-line string: stored as one string or as a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def source(cell: dict) -> str:
    return text(cell["source"])


def outputs(notebook: Path) -> list[dict]:
    return [o for c in cells(notebook) if c["cell_type"] == "code" for o in c["outputs"]]


def test_there_are_six_numbered_notebooks_and_no_other() -> None:
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]
    assert sorted(COOKBOOK.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_opens_with_a_title_and_one_paragraph_for_its_reader(notebook: Path) -> None:
    first = cells(notebook)[0]
    assert first["cell_type"] == "markdown"
    title, _, rest = source(first).partition("\n")
    assert title.startswith("# ")
    paragraphs = [p for p in rest.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) == 1 and len(paragraphs[0].split()) >= 40
    assert "for" in paragraphs[0]  # who it is for


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_builds_its_model_the_langchain_way_and_says_which_ran(notebook: Path) -> None:
    code = [c for c in cells(notebook) if c["cell_type"] == "code"]
    setup = source(code[0])
    assert "start_model_server()" in setup
    assert "ChatOpenAI(" in setup and 'api_key="none"' in setup
    assert 'ChatOpenAI(model="gpt-4o-mini"' in setup  # the same line for an API model
    said = "".join(text(o.get("text", "")) for o in code[0]["outputs"])
    assert said.startswith("Outputs below were produced by: ")
    # the committed outputs come from a real local model (``make cookbook``), never from the
    # scripted double the test suite runs them on
    assert "scripted test double" not in said and "llama.cpp server" in said
    assert "server.stop()" in source(code[-1])  # and it stops what it started


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_is_saved_with_the_outputs_of_one_clean_run(notebook: Path) -> None:
    code = [c for c in cells(notebook) if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "run top to bottom in one kernel"
    assert not [o for o in outputs(notebook) if o["output_type"] == "error"]
    streams = "".join(text(o["text"]) for o in outputs(notebook) if o["output_type"] == "stream")
    assert "Traceback" not in streams
    assert "INFO:" not in streams  # no library logging leaked into the saved outputs


def test_at_least_two_notebooks_keep_their_plots() -> None:
    with_plots = [n for n in NOTEBOOKS if any("image/png" in o.get("data", {}) for o in outputs(n))]
    assert len(with_plots) >= 2


def test_the_docs_cookbook_page_links_every_notebook_with_a_description() -> None:
    section = (ROOT / "docs" / "cookbook" / "index.md").read_text()
    for notebook in NOTEBOOKS:
        line = next((row for row in section.splitlines() if f"({notebook.name})" in row), None)
        assert line is not None, f"docs/cookbook/index.md does not link {notebook.name}"
        assert len(re.sub(r"\[.*?\]\(.*?\)", "", line).split()) >= 6  # and says what it shows


def test_the_model_helper_refuses_an_unknown_spec_and_starts_nothing_for_a_running_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(COOKBOOK))
    import cookbook_helpers

    with pytest.raises(ValueError, match="AUTODEMO_MODEL='openai:gpt-4o-mini'"):
        cookbook_helpers.start_model_server("openai:gpt-4o-mini")
    monkeypatch.setenv("AUTODEMO_MODEL", "openai-compatible:http://127.0.0.1:9/v1#qwen")
    server = cookbook_helpers.start_model_server()
    assert (server.base_url, server.model) == ("http://127.0.0.1:9/v1", "qwen")
    assert server.cli_spec == "openai-compatible:http://127.0.0.1:9/v1#qwen"
    server.stop()  # nothing was started: nothing to stop
    sys.modules.pop("cookbook_helpers", None)
