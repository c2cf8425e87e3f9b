"""Scale-out: two processes over gloo, cluster and Optuna configs, a sweep that survives a failing run,
and reference log-probs precomputed once and shared through the disk cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safealign.cli import compose
from safealign.jobs.dpo import run as train

REPO = Path(__file__).resolve().parents[1]
FEW = ["train.max_steps=3", "train.per_device_train_batch_size=4", "train.report_to=[]"]


@pytest.mark.integration
def test_two_processes_over_gloo_write_one_run(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "conf/accelerate/cpu_gloo.yaml",
           "recipes/dpo.py", *FEW, f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 3
    # Each step consumed one batch per rank: twice the examples of a single process.
    pairs = json.loads((run_dir / "pair_report.json").read_text())["train"]["kept"]
    assert metrics["train"]["epoch"] == pytest.approx(3 * 4 * 2 / pairs, rel=0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # both ranks used the one directory
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "done"}


@pytest.mark.parametrize("extra", [["+cluster=slurm"], ["+search=optuna"], ["+cluster=slurm", "+search=optuna"]])
@pytest.mark.integration
def test_cluster_and_search_configs_compose(extra):
    for what in ("job", "hydra"):
        result = subprocess.run([sys.executable, "recipes/dpo.py", *extra, "--cfg", what], cwd=REPO,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        if what == "hydra" and "+cluster=slurm" in extra:
            assert "SlurmLauncher" in result.stdout and "gpus_per_task: 1" in result.stdout
        if what == "hydra" and "+search=optuna" in extra:
            assert "OptunaSweeper" in result.stdout and "train.beta: tag(log" in result.stdout
        if what == "job" and "+search=optuna" in extra:
            assert "metric: eval.eval_rewards/accuracies" in result.stdout


@pytest.mark.integration
def test_a_failing_run_does_not_stop_the_sweep(tmp_path):
    # max_length=2 leaves no room for any prompt, so run 0 fails on its data; run 1 trains.
    cmd = [sys.executable, "recipes/dpo.py", "-m", "train.max_length=2,256", *FEW, f"hydra.sweep.dir={tmp_path}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    failed = json.loads((tmp_path / "0" / "status.json").read_text())
    assert failed["status"] == "failed" and "train.max_length=2" in failed["error"]
    assert json.loads((tmp_path / "1" / "status.json").read_text()) == {"status": "done"}
    # The sweep went on to run 1, then ends with a summary and exits non-zero, naming the run that failed.
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "1 of the sweep's runs did not finish" in output and "run 0: failed: DataError" in output
    assert f"python recipes/compare.py sweep_dir={tmp_path}" in output


@pytest.mark.integration
def test_precomputed_reference_is_cached_and_shared(tmp_path):
    live = train(compose("dpo", [*FEW, "quant=none", "train.precompute_ref=false"]), tmp_path / "live")
    args = [*FEW, "quant=none", "train.precompute_ref=true"]
    first = train(compose("dpo", args), tmp_path / "first")
    second = train(compose("dpo", args), tmp_path / "second")  # a sweep's next run
    assert live["ref_cache_hits"] == first["ref_cache_hits"] == []
    assert second["ref_cache_hits"] == ["train"]  # the test pairs are scored once, after training
    # Live, precomputed and cached reference log-probs all train the same model.
    adapters = [load_file(tmp_path / r / "adapter" / "adapter_model.safetensors") for r in ("live", "first", "second")]
    for name, weight in adapters[0].items():
        for other in adapters[1:]:
            torch.testing.assert_close(other[name], weight, rtol=1e-4, atol=1e-6)
