"""What serving isolation costs in model calls under a mixed load.

Run: ``python -m benchmarks.bench_isolation`` (JSON in ``benchmarks/results/isolation.json``).

Requests from T tenants arrive at random over a window, each tenant sending R single
questions; the micro-batcher packs those that arrive within ``max_wait`` of each other,
up to ``batch_size``, either across all tenants (``isolate_by=None``, the opt-in) or only
within a tenant (the served default groups by client). The scripted model answers at once,
so the numbers are calls and items per call, not latency.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.coalescing import MicroBatcher
from langchain_autodemo.testing import ScriptedAutoDemoModel

RESULTS = Path(__file__).parent / "results"


async def _load(tenants: int, per_tenant: int, isolated: bool, seed: int) -> dict[str, Any]:
    model = ScriptedAutoDemoModel(answer="sum")
    runner = AutoDemoBatchRunnable(model, batch_size=8)
    batcher = MicroBatcher(
        runner,
        max_wait_seconds=0.05,
        isolate_by=(lambda config: config["metadata"]["tenant"]) if isolated else None,
    )
    rng = random.Random(seed)
    window = 0.5  # seconds over which the requests arrive

    async def one(tenant: int, i: int) -> None:
        await asyncio.sleep(rng.uniform(0, window))
        question = f"What is {tenant} + {i}?"
        await batcher.ainvoke(question, {"metadata": {"tenant": tenant}})

    await asyncio.gather(*(one(t, i) for t in range(tenants) for i in range(per_tenant)))
    items = tenants * per_tenant
    return {
        "tenants": tenants,
        "requests": items,
        "isolated": isolated,
        "calls": batcher.calls,
        "items_per_call": round(items / batcher.calls, 2),
    }


def main() -> None:
    rows = []
    for tenants, per_tenant in ((1, 64), (4, 16), (16, 4), (64, 1)):
        shared = asyncio.run(_load(tenants, per_tenant, isolated=False, seed=tenants))
        isolated = asyncio.run(_load(tenants, per_tenant, isolated=True, seed=tenants))
        rows.append(
            {
                "tenants": tenants,
                "requests": tenants * per_tenant,
                "calls_shared": shared["calls"],
                "calls_isolated": isolated["calls"],
                "extra_calls": round(isolated["calls"] / shared["calls"], 2),
            }
        )
        print(json.dumps(rows[-1]))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "isolation.json"
    out.write_text(json.dumps({"benchmark": "isolation", "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
