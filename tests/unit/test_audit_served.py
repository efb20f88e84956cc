"""The served endpoint audits coalesced requests and shows the estimate at /metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from langchain_autodemo import AuditPolicy, AutoDemoBatchRunnable
from langchain_autodemo.serving import create_app
from tests.fakes import ScriptedChatModel, solver


@pytest.fixture(autouse=True)
def _fresh_sse_exit_event():
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None
    yield
    AppStatus.should_exit_event = None


async def test_served_requests_are_audited_and_scraped_at_metrics() -> None:
    model = ScriptedChatModel(script=solver())
    app = create_app(
        AutoDemoBatchRunnable(model, batch_size=4),
        max_wait_seconds=0.2,
        audit=AuditPolicy(rate=1.0, seed=0),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        answers = await asyncio.gather(
            *(client.post("/autodemo/invoke", json={"input": f"{i} + {i}?"}) for i in range(4))
        )
        assert [a.json()["output"] for a in answers] == ["0", "2", "4", "6"]
        text = ""
        for _ in range(50):  # audits run in the background, after the answers
            text = (await client.get("/metrics")).text
            if "autodemo_audit_items_total" in text and " 4" in text:
                break
            await asyncio.sleep(0.05)
    samples = {
        line.split("{")[0]: line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert float(samples["autodemo_audit_items_total"]) == 4
    assert float(samples["autodemo_audit_agreed_total"]) == 4
    assert len(model.calls) == 1 + 4  # one packed call, four audit calls alone


def test_no_metrics_route_without_an_audit() -> None:
    app = create_app(AutoDemoBatchRunnable(ScriptedChatModel(script=solver())))
    assert "/metrics" not in {getattr(route, "path", "") for route in app.routes}
