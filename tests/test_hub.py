"""Without a network, a hub dataset or model fails in seconds with the local-path message.

The hub endpoint is pointed at a closed port on this machine (HF_ENDPOINT), so no test
reaches for the internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    return {**env, "HF_ENDPOINT": "http://127.0.0.1:9", **extra}


@pytest.mark.parametrize("extra", [{}, {"HF_HUB_OFFLINE": "1"}])
@pytest.mark.integration
def test_an_unreachable_hub_dataset_fails_within_seconds(tmp_path, extra):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "recipes/pairs.py", "data=pku_saferlhf", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, cwd=REPO, env=offline_env(**extra), timeout=120)  # fmt: skip
    seconds = time.perf_counter() - start
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "could not load the hub dataset PKU-Alignment/PKU-SafeRLHF" in out.stderr and "data.path=" in out.stderr
    assert seconds < 10, seconds


def test_reachable_is_false_for_a_closed_endpoint_and_under_offline_mode():
    code = (
        "import time; from safealign import hub; t = time.perf_counter(); r = hub.reachable(); "
        "print(r, time.perf_counter() - t < hub.TIMEOUT + 1)"
    )
    for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=offline_env(**extra))
        assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]


@pytest.mark.integration
def test_an_unreachable_hub_model_fails_within_seconds(tmp_path):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "recipes/dpo.py", "model=alpaca-7b", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, cwd=REPO, env=offline_env(), timeout=300)  # fmt: skip
    seconds = time.perf_counter() - start
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "could not load model 'PKU-Alignment/alpaca-7b-reproduced' (model.name_or_path)" in out.stderr
    assert seconds < 30, seconds  # about 8 s on an idle 2-core machine, most of it importing torch
    assert not (tmp_path / "run" / "status.json").exists()
