"""Every cookbook notebook runs top to bottom, in a real Jupyter kernel, on the scripted
test double (``AUTODEMO_MODEL=fake:delay=0.2``: 0.2 s per call, so that notebook 5 can
interrupt a running job): a cell error fails the test with its traceback.

The notebooks start servers on 127.0.0.1 (the scripted chat server, ``chroma run``, the
LangServe app, the Batch API emulator), hence an integration test. The same function
that executes them here runs them on the local Qwen model for their saved outputs
(``make cookbook``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_cookbook", ROOT / "scripts/run_cookbook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_cookbook = _runner()


@pytest.mark.parametrize("notebook", run_cookbook.notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_on_the_scripted_model(notebook: Path, tmp_path: Path) -> None:
    saved = tmp_path / notebook.name
    before = notebook.read_bytes()
    executed = run_cookbook.execute_notebook(
        notebook, model="fake:delay=0.2", timeout=300, save_to=saved
    )
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    first = "".join(o.get("text", "") for o in code[0].outputs)
    assert "the scripted test double" in first  # the saved outputs say what made them
    assert saved.exists() and notebook.read_bytes() == before  # the committed file is untouched


def test_the_runner_reports_a_failing_cell_and_exits_1(tmp_path: Path) -> None:
    import nbformat

    broken = tmp_path / "09_broken.ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("print('before')"), nbformat.v4.new_code_cell("1 / 0")]
    )
    nbformat.write(notebook, broken)
    assert run_cookbook.main([str(broken), "--model", "fake:", "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / broken.name).exists()
