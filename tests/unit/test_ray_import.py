"""Ray is an optional edge: importing the package (or its CLI) never imports it."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_import_ray() -> None:
    code = (
        "import sys, langchain_autodemo, langchain_autodemo.cli.commands; "
        "from langchain_autodemo import AutoDemoBatchRunnable; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
