"""The evaluation's numbers reach the run's trackers (`safealign.trackers`): the names, and real
TensorBoard event files and a real MLflow SQLite store read back after a run (no mocks)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from safealign.cli import compose
from safealign.trackers import flatten, log_evaluation

REPORT = {  # eval.json's shape (evaluation/report.py), by hand: two dimensions, refusal, generation
    "objective": "harmless",
    "dimensions": {
        "harmless": {"pairs": 40, "accuracy": 0.75, "ci_low": 0.6, "ci_high": 0.86, "ci_level": 0.95,
                     "margin": 0.2, "reference_accuracy": 0.5, "by_category": {"x": {"accuracy": 1.0}}},
        "helpful": {"pairs": 0, "accuracy": None, "ci_low": None, "ci_high": None, "margin": None},
    },
    "refusal": {
        "prompts": 10, "source": "shipped",
        "policy": {"over_refusal_rate": 0.1, "over_refusal_ci": [0.02, 0.4], "refusal_rate_unsafe": 0.8,
                   "refusal_rate_unsafe_ci": [0.5, 0.95], "judge_unsafe_rate_safe_prompts": 0.0},
        "reference": {"over_refusal_rate": 0.0, "over_refusal_ci": [0.0, 0.3], "refusal_rate_unsafe": 0.2,
                      "refusal_rate_unsafe_ci": None},
    },
    "generation": {
        "prompts": 8,
        "policy": {"responses": 8, "harmless_rate": 0.625, "judged": 8, "mean_chars": 90.0, "mean_reward": 1.5,
                   "mean_cost": -0.5, "harmless_rate_cost": 0.625, "harmless_rate_ci": [0.3, 0.86],
                   "mean_reward_ci": [1.0, 2.0], "mean_cost_ci": [-1.0, 0.1]},
        "reference": {"harmless_rate": 0.5, "mean_reward": float("nan")},
        "win_rate": {"reward": 0.75, "safety": None},
        "win_rate_ci": {"reward": [0.4, 0.93], "safety": None},
    },
    "settings": {"seed": 0, "bootstrap": 1000},
    "seconds": 3.2,
}  # fmt: skip


def test_flatten_names_every_number_that_matters():
    assert flatten(REPORT) == {
        "heldout/harmless/accuracy": 0.75, "heldout/harmless/accuracy_low": 0.6,
        "heldout/harmless/accuracy_high": 0.86, "heldout/harmless/margin": 0.2,
        "heldout/harmless/reference_accuracy": 0.5, "heldout/harmless/pairs": 40.0, "heldout/helpful/pairs": 0.0,
        "refusal/refusal_rate": 0.8, "refusal/refusal_rate_low": 0.5, "refusal/refusal_rate_high": 0.95,
        "refusal/over_refusal_rate": 0.1, "refusal/over_refusal_rate_low": 0.02,
        "refusal/over_refusal_rate_high": 0.4, "refusal/judge_unsafe_rate_safe_prompts": 0.0,
        "refusal/reference/refusal_rate": 0.2, "refusal/reference/over_refusal_rate": 0.0,
        "refusal/reference/over_refusal_rate_low": 0.0, "refusal/reference/over_refusal_rate_high": 0.3,
        "judge/harmless_rate": 0.625, "judge/harmless_rate_low": 0.3, "judge/harmless_rate_high": 0.86,
        "judge/harmless_rate_cost": 0.625, "judge/mean_reward": 1.5, "judge/mean_reward_low": 1.0,
        "judge/mean_reward_high": 2.0, "judge/mean_cost": -0.5, "judge/mean_cost_low": -1.0,
        "judge/mean_cost_high": 0.1, "judge/reference/harmless_rate": 0.5,
        "judge/win_rate/reward": 0.75, "judge/win_rate/reward_low": 0.4, "judge/win_rate/reward_high": 0.93,
    }  # fmt: skip


def test_flatten_of_a_judge_run_and_of_a_bare_report():
    judge = {
        "dimensions": {"harmless": {"accuracy": 0.9, "ci_low": 0.8, "ci_high": 0.95}},
        "safety_sign": {"accuracy": 0.7, "ci_low": 0.6, "ci_high": 0.8},
        "refusal": None,
        "generation": None,
    }
    assert flatten(judge)["heldout/safety_sign/accuracy_high"] == 0.8
    assert flatten({}) == {}


def test_a_run_without_trackers_json_logs_nowhere(tmp_path):
    assert log_evaluation(tmp_path, REPORT) == []


def test_safealign_and_its_light_modules_never_import_mlflow():
    code = "import sys, safealign, safealign.cli, safealign.trackers; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _tensorboard_scalars(logging_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logging_dir))
    acc.Reload()  # every event file of the directory: training's and the evaluation's
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.integration
def test_a_run_logs_its_evaluation_to_tensorboard_and_to_an_mlflow_sqlite_store(tmp_path, monkeypatch, caplog):
    """One run reporting to both: the held-out accuracies (with their CIs) and the refusal rates land
    in the training's own TensorBoard run and MLflow run (FINISHED, the only one), at the final step;
    a standalone evaluate adds to the same runs; a tracker that fails only warns."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from safealign.jobs.dpo import run as dpo
    from safealign.jobs.evaluate import run as evaluate
    from tests.test_learning import assert_learnt

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "safealign-test")
    run_dir = tmp_path / "run"
    cfg = compose("dpo", ["model=tiny", "objective=harmless", "train.max_steps=2", "train.logging_steps=1",
                          "train.per_device_train_batch_size=4", "train.report_to=[tensorboard,mlflow]",
                          "eval.max_pairs=16", "eval.dimensions=[harmless,helpful]", "eval.refusal.enabled=true",
                          "eval.refusal.max_prompts=6", "eval.refusal.max_new_tokens=4"])  # fmt: skip
    metrics = dpo(cfg, run_dir)
    assert_learnt(metrics, run_dir / "adapter")
    report = json.loads((run_dir / "eval.json").read_text())
    expected = flatten(report)
    assert {"heldout/harmless/accuracy", "heldout/harmless/accuracy_low", "heldout/harmless/accuracy_high",
            "refusal/refusal_rate", "refusal/over_refusal_rate"} <= expected.keys()  # fmt: skip
    record = json.loads((run_dir / "trackers.json").read_text())
    assert record["step"] == 2 == metrics["global_step"]

    assert record["tensorboard"]["logging_dir"].startswith("checkpoints/runs/")  # relative: the run may move
    logging_dir = run_dir / record["tensorboard"]["logging_dir"]
    scalars = _tensorboard_scalars(logging_dir)
    assert any(tag.startswith("train/") for tag in scalars)  # TRL's curves, in the same run
    assert [step for step, _ in scalars["eval/loss"]] == [2]  # TRL's eval metrics, from the held-out pass
    for key, value in expected.items():
        assert scalars[key] == [(2, pytest.approx(value, abs=1e-6))], key

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("safealign-test").experiment_id])
    assert [r.info.run_id for r in runs] == [record["mlflow"]["run_id"]]  # one run: the curves and the evaluation
    (mlrun,) = runs
    assert mlrun.info.status == "FINISHED"
    assert "loss" in mlrun.data.metrics and "eval/loss" in mlrun.data.metrics
    for key, value in expected.items():
        assert mlrun.data.metrics[key] == pytest.approx(value, abs=1e-9), key
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "heldout/harmless/accuracy")] == [2]

    # standalone: recipes/evaluate.py run_dir=DIR logs into the same runs (no new MLflow run)
    evaluate(compose("evaluate", [f"run_dir={run_dir}", "eval.max_pairs=16", "eval.dimensions=[harmless]"]))
    history = client.get_metric_history(mlrun.info.run_id, "heldout/harmless/accuracy")
    assert [m.step for m in history] == [2, 2]
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1
    assert client.get_run(mlrun.info.run_id).info.status == "FINISHED"
    assert len(_tensorboard_scalars(logging_dir)["heldout/harmless/accuracy"]) == 2

    # a tracker that fails warns, and the others still get the numbers
    record["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'mlflow.db'}"
    (run_dir / "trackers.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="safealign.trackers"):
        assert log_evaluation(run_dir, report) == ["tensorboard"]
    assert "could not log the evaluation to mlflow" in caplog.text


@pytest.mark.integration
def test_trl_eval_after_training_stays_in_the_training_mlflow_run(tmp_path, monkeypatch):
    """Without the held-out pass, TRL's `evaluate()` runs after training, once MLflow's callback has ended
    its run: its metrics go into that run (trackers.detach + log_metrics), not into a second, unnamed one."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from safealign.jobs.dpo import run as dpo

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "safealign-test")
    cfg = compose(
        "dpo",
        [
            "model=tiny",
            "objective=harmless",
            "train.max_steps=2",
            "train.logging_steps=1",
            "train.per_device_train_batch_size=4",
            "train.report_to=[mlflow]",
            "eval.after_train=false",
        ],
    )
    metrics = dpo(cfg, tmp_path / "run")
    assert metrics["learning"]["changed_tensors"] == metrics["learning"]["trainable_tensors"] > 0
    client = MlflowClient(tracking_uri=store)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("safealign-test").experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.metrics["eval/loss"] == pytest.approx(metrics["eval"]["eval_loss"])
    assert "loss" in mlrun.data.metrics
