"""Nothing finished is lost: SIGTERM saves a checkpoint, the run resumes to the same result, and no run
directory is overwritten unless the user asks."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from safealign.cli import compose
from safealign.errors import DataError, RunDirError
from safealign.jobs.dpo import run as train

from .runs import signal_mid_training

REPO = Path(__file__).resolve().parents[1]
STEPS = 30
# quant=none keeps the LoRA weights in fp32, so resuming is bit-exact; under nf4, TRL keeps them in
# bf16, where rounding makes the two paths drift apart by a few units in the last place.
ARGS = [f"train.max_steps={STEPS}", "train.per_device_train_batch_size=4", "train.save_steps=1000",
        "train.logging_steps=1", "train.report_to=[]", "objective=harmless", "quant=none",
        "eval.after_train=false"]  # fmt: skip


def adapter(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    metrics = train(compose("dpo", ARGS), run_dir)
    return run_dir, metrics


@pytest.mark.integration
def test_sigterm_saves_a_checkpoint_and_resume_matches(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "recipes/dpo.py", *ARGS, f"hydra.run.dir={run_dir}"]
    # Signal once step 2 is logged: a fixed sleep let the 30 steps finish first on a fast, idle machine.
    returncode, err = signal_mid_training(cmd, REPO, signal.SIGTERM)

    assert returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted"
    checkpoints = sorted(run_dir.glob("checkpoints/checkpoint-*"))
    assert len(checkpoints) == 1
    step = int(checkpoints[0].name.split("-")[1])
    assert 0 < step < STEPS, "the signal must land mid-training"
    assert not (run_dir / "metrics.json").exists()

    metrics = train(compose("dpo", ARGS), run_dir)  # train.resume=auto is the default
    assert metrics["resumed_from"] == f"checkpoint-{step}"
    assert metrics["global_step"] == STEPS == uninterrupted[1]["global_step"]
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "done"}
    # The whole run's loss, not only the resumed part's (the Trainer's own train_loss, kept beside it).
    whole, since = metrics["train"]["train_loss"], metrics["train"]["train_loss_since_resume"]
    assert whole == pytest.approx(uninterrupted[1]["train"]["train_loss"], rel=1e-5) and since != whole
    assert "train_loss_steps" not in metrics["train"]
    resumed, reference = adapter(run_dir), adapter(uninterrupted[0])
    assert resumed.keys() == reference.keys()
    for name, weight in reference.items():
        torch.testing.assert_close(resumed[name].float(), weight.float(), rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.integration
def test_a_finished_run_is_never_overwritten(uninterrupted):
    run_dir, _ = uninterrupted
    before = adapter(run_dir)
    with pytest.raises(RunDirError, match=r"holds a finished run.*train.overwrite=true"):
        train(compose("dpo", ARGS), run_dir)
    assert all(torch.equal(before[k], v) for k, v in adapter(run_dir).items())


@pytest.mark.integration
def test_an_explicit_checkpoint_does_not_bypass_the_guard(uninterrupted, tmp_path):
    run_dir, _ = uninterrupted
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run"):
        train(compose("dpo", [*ARGS, f"train.resume={checkpoint}"]), run_dir)


def test_a_live_job_is_never_cleared(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    parent = os.getppid()  # a live process that is not this one
    status = {"status": "running", "pid": parent, "host": socket.gethostname()}
    (tmp_path / "status.json").write_text(json.dumps(status))
    with pytest.raises(RunDirError, match=f"in use by a running job \\(pid {parent}\\)"):
        train(compose("dpo", [*ARGS, "train.overwrite=true"]), tmp_path)
    assert (tmp_path / "checkpoints").is_dir()


@pytest.mark.integration
def test_overwrite_replaces_a_finished_run_when_asked(tmp_path):
    args = [*ARGS, "train.max_steps=1"]
    train(compose("dpo", args), tmp_path)
    (tmp_path / "eval.json").write_text("{}")  # an output the new run does not write must not survive
    metrics = train(compose("dpo", [*args, "train.overwrite=true"]), tmp_path)
    assert metrics["global_step"] == 1 and metrics["resumed_from"] is None
    assert not (tmp_path / "eval.json").exists()


def test_overwrite_keeps_the_finished_run_when_the_new_run_fails_its_checks(tmp_path):
    """train.overwrite=true clears the old outputs only once the new run's config and data have passed."""
    (tmp_path / "status.json").write_text('{"status": "done"}')
    for name in ("metrics.json", "eval.json", "pair_report.json"):
        (tmp_path / name).write_text('{"old": true}')
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    with pytest.raises(DataError, match=r"/no/such.jsonl: no such file or directory \(data.path\)"):
        train(compose("dpo", [*ARGS, "train.overwrite=true", "data.path=/no/such.jsonl"]), tmp_path)
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before


def test_resume_refuses_a_changed_config(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "status.json").write_text('{"status": "interrupted"}')
    cfg = compose("dpo", ARGS)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(RunDirError, match=r"config differs .* in train.beta, train.learning_rate"):
        train(compose("dpo", [*ARGS, "train.beta=0.3", "train.learning_rate=1e-3"]), tmp_path)
    with pytest.raises(RunDirError, match=r"unfinished run with checkpoint checkpoint-2; resume it"):
        train(compose("dpo", [*ARGS, "train.resume=null"]), tmp_path)

