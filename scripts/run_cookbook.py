"""Execute the cookbook notebooks top to bottom and save their outputs.

    python scripts/run_cookbook.py                      # every notebook, in place, on the
                                                        # local Qwen model (AUTODEMO_MODEL unset)
    python scripts/run_cookbook.py --model llamacpp:smollm2 --out /tmp/cookbook-smollm2
    python scripts/run_cookbook.py cookbook/01_quickstart.ipynb --model fake:

One notebook at a time (each starts and stops its own model server), each in a fresh
kernel whose working directory is ``cookbook/`` and whose import path starts with this
checkout. A cell error stops that notebook, prints the failing cell's traceback, and
the command exits with status 1 after trying the others (with ``--out`` or in place,
the partly executed notebook is not written). ``make cookbook`` runs the first form.
The test suite calls :func:`execute_notebook` with ``--model fake:``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "cookbook"


def notebooks() -> list[Path]:
    """The cookbook's notebooks, in reading order (their names start with a number)."""
    return sorted(COOKBOOK.glob("[0-9]*.ipynb"))


def kernel_environment(model: str | None) -> dict[str, str]:
    """The kernel's environment: this checkout first, offline, ``AUTODEMO_MODEL`` set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("ANONYMIZED_TELEMETRY", "False")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend saves the plots in the file
    env.pop("AUTODEMO_MODEL", None)
    if model:
        env["AUTODEMO_MODEL"] = model
    return env


def execute_notebook(
    path: Path, *, model: str | None = None, timeout: int = 900, save_to: Path | None = None
) -> Any:
    """Run ``path`` in a fresh kernel; return the executed notebook (``nbformat``).

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell's traceback) on
    the first failing cell. ``save_to`` writes the executed notebook there on success.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    client.execute(env=kernel_environment(model))
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, save_to)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all)")
    parser.add_argument(
        "--model",
        default=None,
        help="AUTODEMO_MODEL for the notebooks (default: unset, i.e. the local Qwen model)",
    )
    parser.add_argument("--out", type=Path, help="write the executed notebooks here instead")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may take")
    args = parser.parse_args(argv)

    from nbclient.exceptions import CellExecutionError

    failed = []
    for path in [p.resolve() for p in args.paths] or notebooks():
        target = (args.out / path.name) if args.out else path
        print(f"{path.name}: running on {args.model or 'the local Qwen model'} ...", flush=True)
        started = time.perf_counter()
        try:
            execute_notebook(path, model=args.model, timeout=args.timeout, save_to=target)
        except CellExecutionError as error:
            failed.append(path.name)
            print(f"{path.name}: FAILED after {time.perf_counter() - started:.0f} s\n{error}")
            continue
        print(f"{path.name}: {time.perf_counter() - started:.0f} s, saved to {target}", flush=True)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
