"""The package works from its wheel, outside a checkout.

Builds the wheel from a copy of the package's files, installs it in a fresh virtual
environment and runs ``autodemo`` from an empty folder: no ``scripts/``, no ``models/``,
no source tree to lean on. To stay fast (seconds, not minutes of dependency installs),
the fresh environment reuses this one's installed dependencies through a ``.pth`` line;
``langchain_autodemo`` itself comes only from the wheel (checked below). The network is
PyPI only: pip's build isolation (setuptools) and ``autodemo models fetch``, both served
from pip's cache when it has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from langchain_autodemo.local_models import MODELS

ROOT = Path(__file__).resolve().parents[2]


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.cwd = root / "empty"
        self.cache = root / "user-cache"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PYTHONPATH",
                "PYTHONHOME",
                "VIRTUAL_ENV",
                "AUTODEMO_MODELS_DIR",
                "AUTODEMO_CACHE_DIR",
            )
        }
        pip_cache = subprocess.run(
            [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True
        ).stdout.strip()
        if pip_cache:  # XDG_CACHE_HOME below would otherwise move pip's cache too
            self.env["PIP_CACHE_DIR"] = pip_cache
        self.env["XDG_CACHE_HOME"] = str(self.cache)  # where platformdirs puts the models
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, cwd=self.cwd, env=self.env
        )
        if check:
            assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: the build's egg-info and build/ stay out of the checkout
    shutil.copytree(
        ROOT / "langchain_autodemo",
        source / "langchain_autodemo",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist", source]
    )
    (wheel,) = (root / "dist").glob("langchain_autodemo-*.whl")
    venv.create(root / "venv", with_pip=False, symlinks=True)
    python = root / "venv" / "bin" / "python"
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    # The dependencies: this environment's, appended after the fresh one's own site-packages.
    Path(purelib, "_reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel])
    installed = Installed(root)
    installed.cwd.mkdir()
    return installed


def test_the_package_comes_from_the_wheel(installed: Installed) -> None:
    where = installed(
        "python", "-c", "import langchain_autodemo; print(langchain_autodemo.__file__)"
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.root / "venv")


def test_help(installed: Installed) -> None:
    done = installed("autodemo", "--help")
    for command in ("run", "eval", "serve", "models"):
        assert command in done.stdout


def test_eval_on_the_packaged_dataset(installed: Installed) -> None:
    installed(
        "autodemo", "eval", "--model", "fake:", "--dataset", "gsm8k", "--limit", "8",
        "--methods", "auto_demo", "--batch-sizes", "8", "--no-progress",
    )  # fmt: skip
    summary = json.loads((installed.cwd / "autodemo-results" / "results.json").read_text())
    (row,) = summary["results"]
    assert (row["method"], row["batch_size"], row["n"]) == ("auto_demo", 8, 8)
    assert summary["meta"]["dataset"] == "gsm8k"


def test_models_fetch_into_the_user_cache(installed: Installed) -> None:
    done = installed("autodemo", "models", "fetch", "smollm2")
    expected = installed.cache / "langchain-autodemo" / "models" / MODELS["smollm2"].filename
    assert "checksum ok" in done.stderr + done.stdout
    assert expected.is_file()
    assert str(expected) in installed("autodemo", "models", "list").stdout
    again = installed("autodemo", "models", "fetch", "smollm2")  # verified, not fetched again
    assert "already present, checksum ok" in again.stderr + again.stdout
