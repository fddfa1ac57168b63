"""Fixtures shared by the test suite: tiny real VLMs, sample images, the shared Phi-3.5-vision files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    # One thread per test process: tiny models gain nothing from more, and CI has 2 cores shared with subprocesses.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
SAMPLE_IMAGES = Path(os.environ.get("INSPECTOR_SAMPLE_IMAGES", REPO / "sample_images"))


def shared_phi35v_dir() -> Path | None:
    """The real Phi-3.5-vision checkpoint files (no weights) in ../shared beside the repo, if present."""
    for candidate in (REPO.parent / "shared" / "phi35v", Path("/work/shared/phi35v")):
        if (candidate / "config.json").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def phi35v_dir() -> Path:
    found = shared_phi35v_dir()
    if found is None:
        pytest.skip("../shared/phi35v (Phi-3.5-vision checkpoint files) is not present")
    return found


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from inspector.tiny import build_tiny_model

    return build_tiny_model("llava", tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory) -> Path:
    from inspector.tiny import build_tiny_model

    return build_tiny_model("idefics3", tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session", params=["llava", "idefics3"])
def tiny_vlm(request) -> Path:
    """Each tiny VLM family in turn."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture()
def sample_dir() -> Path:
    if not (SAMPLE_IMAGES / "truth.csv").is_file():
        pytest.fail("sample_images/truth.csv is missing: regenerate with `inspector samples sample_images`")
    return SAMPLE_IMAGES


@pytest.fixture(scope="session")
def tiny_phi3v(tmp_path_factory, phi35v_dir) -> Path:
    """A 2-layer native Phi-3.5-vision with the real tokenizer and processor files (skips without ../shared)."""
    from inspector.tiny import build_tiny_model

    return build_tiny_model("phi3v", tmp_path_factory.mktemp("tiny-phi3v"), tokenizer_dir=phi35v_dir)
