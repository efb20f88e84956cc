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


NEIGHBOUR_SECRET = "patient Jane Doe born in March"


def test_the_playground_shows_none_of_a_packed_neighbours_text(tmp_path: Path) -> None:
    """A playground user's request is packed with other clients' requests (isolation
    off, the worst case): its output and intermediate steps show only its own question."""
    import json
    import threading

    import httpx

    log = tmp_path / "calls.jsonl"
    args = ("--model", "fake:answer=sum", "--instructions", "Add the numbers.",
            "--max-wait", "1.0", "--isolate-by", "none", "--call-log", str(log))  # fmt: skip
    with autodemo_serve(*args) as base, playwright.sync_playwright() as pw:
        stop = threading.Event()

        def ask(i: int) -> None:
            question = f"What is {i} + 5? ({NEIGHBOUR_SECRET})"
            httpx.post(f"{base}/autodemo/invoke", json={"input": question}, timeout=30)

        def neighbours() -> None:
            for i in range(40):
                if stop.is_set():
                    return
                threading.Thread(target=ask, args=(i,), daemon=True).start()
                stop.wait(0.25)

        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"{base}/autodemo/playground/")
            page.get_by_label("question").fill("What is 17 + 25?")
            sender = threading.Thread(target=neighbours, daemon=True)
            sender.start()
            page.wait_for_timeout(600)
            page.get_by_role("button", name="Start").click()
            output = page.locator("h2:text-is('Output') + div")
            playwright.expect(output).to_have_text("42", timeout=30_000)
            steps = page.get_by_text("Intermediate steps")
            if steps.count():
                steps.first.click()
                page.wait_for_timeout(500)
            shot = tmp_path / "playground-isolation.png"
            page.screenshot(path=str(shot), full_page=True)
            seen = page.content()
        finally:
            stop.set()
            browser.close()
    assert "17 + 25" in seen
    assert NEIGHBOUR_SECRET not in seen
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    ours = [c for c in calls if "17 + 25" in c["messages"][-1]["content"]]
    assert ours and NEIGHBOUR_SECRET in ours[0]["messages"][-1]["content"]  # really packed
    if os.environ.get("AUTODEMO_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, REPO_ROOT / "docs" / "playground-isolation.png")
