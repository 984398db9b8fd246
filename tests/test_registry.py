"""Publishing model versions atomically, and rolling back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genre_core.errors import ModelError, ModelMissingError
from genre_core.model import METADATA_FILE, MODEL_FILE
from genre_core.registry import ModelRegistry


def artifact(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    (directory / METADATA_FILE).write_text(json.dumps({"version": version}))
    (directory / MODEL_FILE).write_bytes(version.encode())
    return directory


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "state", artifact(tmp_path / "shipped", "shipped"))


def test_serves_the_shipped_model_until_one_is_published(registry: ModelRegistry) -> None:
    assert registry.current_dir() == registry.shipped_dir
    assert registry.versions() == []


def test_publish_then_rollback(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.publish(artifact(tmp_path / "a", "v1")) == "v1"
    assert registry.publish(artifact(tmp_path / "b", "v2")) == "v2"
    assert (registry.current_dir() / MODEL_FILE).read_bytes() == b"v2"
    assert registry.versions() == ["v1", "v2"]
    assert registry.rollback() == "v1"
    assert (registry.current_dir() / MODEL_FILE).read_bytes() == b"v1"
    assert registry.rollback() == "shipped"
    assert registry.current_dir() == registry.shipped_dir
    with pytest.raises(ModelError, match="no published model"):
        registry.rollback()


def test_published_copy_is_independent_of_the_candidate(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    candidate = artifact(tmp_path / "a", "v1")
    registry.publish(candidate)
    (candidate / MODEL_FILE).unlink()
    assert (registry.current_dir() / MODEL_FILE).read_bytes() == b"v1"


def test_refuses_an_incomplete_candidate(registry: ModelRegistry, tmp_path: Path) -> None:
    candidate = artifact(tmp_path / "a", "v1")
    (candidate / MODEL_FILE).unlink()
    with pytest.raises(ModelMissingError):
        registry.publish(candidate)
    assert registry.current_dir() == registry.shipped_dir


def test_a_half_written_version_is_never_served(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.publish(artifact(tmp_path / "a", "v1"))
    # What a crash mid-copy leaves behind: a staging folder that `current` never points at.
    artifact(registry.versions_dir / ".v2.123.tmp", "v2")
    assert (registry.current_dir() / MODEL_FILE).read_bytes() == b"v1"
    # And a `current` pointing at a damaged version falls back to the shipped model.
    (registry.current_dir() / METADATA_FILE).write_text("{truncated")
    assert registry.current_dir() == registry.shipped_dir
