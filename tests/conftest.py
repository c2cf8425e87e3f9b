"""Shared test set-up: the real sample when present, and a private model cache."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

# Before any test module imports huggingface_hub, which reads these once: the suite never
# reaches for the hub, and a test that asks for it fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tests run recipes in their own process (runpy): a recipe must exit the usual way there,
# not end the process (safealign.cli.exit_when_done). test_cli checks the fast exit itself.
os.environ["SAFEALIGN_FAST_EXIT"] = "0"

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "pku_saferlhf_alpaca7b_test_sample.jsonl"


@pytest.fixture
def real_sample() -> Path:
    if not REAL_SAMPLE.exists():
        pytest.skip("the real PKU-SafeRLHF sample (../shared/data) is not present")
    return REAL_SAMPLE


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build tiny models into a per-session cache unless the user points SAFEALIGN_CACHE elsewhere."""
    os.environ.setdefault("SAFEALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_cfg():
    """The shipped `model=tiny` config, so tests build exactly the embedded default model."""
    from omegaconf import OmegaConf

    return OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_path(tiny_cfg, _cache) -> str:
    from safealign.tiny import resolve_path

    return resolve_path(tiny_cfg)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything reaches for the hub or opens a network connection."""
    import datasets

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
