"""The LangServe playground of `autodemo serve`, driven in a real headless Chromium.

Debian's ``chromium`` (``make setup`` installs it where ``apt-get`` works) through
Playwright, pointed at that executable: Playwright's own browser download is never used.
``AUTODEMO_UPDATE_SCREENSHOT=1`` also writes the screenshot to ``docs/playground.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, autodemo_serve

CHROMIUM = os.environ.get("AUTODEMO_CHROMIUM") or next(
    filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None
)
if CHROMIUM is None:
    pytest.skip(
        "no Chromium executable: `apt-get install chromium` (make setup does it where apt-get "
        "works) or set AUTODEMO_CHROMIUM",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")


def test_a_question_typed_in_the_playground_shows_its_answer(tmp_path: Path) -> None:
    with (
        autodemo_serve("--model", "fake:answer=sum", "--instructions", "Add the numbers.") as base,
        playwright.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 560})
            page.goto(f"{base}/autodemo/playground/")
            question = page.get_by_label("question")  # the input reads as a field name
            question.fill("Tom has 12 apples and buys 30 more. How many apples does he have?")
            page.get_by_role("button", name="Start").click()
            output = page.locator("h2:text-is('Output') + div")  # the box under "Output"
            playwright.expect(output).to_have_text("42", timeout=30_000)
            shot = tmp_path / "playground.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    if os.environ.get("AUTODEMO_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, REPO_ROOT / "docs" / "playground.png")
