"""The documentation's generated pages: one Results page per saved report, each with its
command and its table, and a CLI reference that lists every command of the typer app.
(``make test`` also builds the whole site with ``mkdocs build --strict``.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_report_gets_a_page_with_its_command_and_table(tmp_path: Path) -> None:
    build = _script("build_results_pages")
    build.build(tmp_path)
    reports = sorted(RESULTS.glob("*/results.json")) + sorted(RESULTS.glob("*/*/results.json"))
    assert reports
    for path in reports:
        rel = path.parent.relative_to(RESULTS).as_posix()
        page = (tmp_path / f"{rel}.md").read_text(encoding="utf-8")
        meta = json.loads(path.read_text(encoding="utf-8"))["meta"]
        flat = page.replace(" \\\n    ", " ")
        assert meta["command"] in flat, rel
        assert "| method | N | accuracy |" in page, rel
    for path in sorted(RESULTS.glob("tune-*/tune.json")):
        rel = path.parent.name
        page = (tmp_path / f"{rel}.md").read_text(encoding="utf-8")
        assert f"--out docs/results/{rel}" in page.replace(" \\\n    ", " "), rel
        assert json.loads(path.read_text(encoding="utf-8"))["chosen"] in page
    assert (tmp_path / "index.md").is_file()


def test_cli_reference_lists_every_command() -> None:
    pytest.importorskip("typer")
    text = _script("gen_cli_docs").render()
    for command in (
        "run",
        "eval",
        "serve",
        "emulate-batch-api",
        "tune",
        "models list",
        "models fetch",
    ):
        assert f"## `autodemo {command}`" in text
