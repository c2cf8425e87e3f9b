"""The held-out, refusal and judge numbers of `eval.json`, logged to the run's `train.report_to` trackers.

Why this module: TRL logs the training curves to the trackers, but the numbers a comparison is
about are measured after training, once transformers' integrations have closed their runs
(`TensorBoardCallback.on_train_end` closes its writer, `MLflowCallback.on_train_end` ends its
MLflow run). Rather than hold the trackers open across the evaluation, safealign records where
each tracker's run lives (`RUN_DIR/trackers.json`, written when training ends) and logs the
evaluation's numbers into that same run afterwards, at the run's final global step:

- tensorboard: a new event file in the run's own logging directory (TensorBoard merges the files
  of one directory into one run);
- mlflow: `MlflowClient.log_batch` on the recorded run id and tracking URI (logging to a FINISHED
  run keeps it FINISHED), so `recipes/evaluate.py run_dir=DIR` lands in the training's run too;
- any other integration (wandb, comet_ml, ...), right after training only: through the trainer's
  own callback (`on_log`), whose run stays open until the process exits. A standalone evaluation
  skips them with a warning: reopening their runs is each tracker's own business.

A tracker that fails only warns: `eval.json` is written before, and the run stays done.
Nothing here imports torch or mlflow at module level (`import safealign` stays light).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import io
from .rundir import RunDir

log = logging.getLogger("safealign.trackers")

RECORD = RunDir.TRACKERS  # in the run directory: where the run's trackers keep it (`record`)
NATIVE = ("tensorboard", "mlflow")  # reopened from the record; the others go through the trainer's callbacks


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _put(out: dict[str, float], key: str, value: Any) -> None:
    number = _num(value)
    if number is not None:
        out[key] = number


def _put_ci(out: dict[str, float], key: str, ci: Any) -> None:
    """`key_low` / `key_high` from a `[low, high]` interval (absent or None: nothing)."""
    if isinstance(ci, list | tuple) and len(ci) == 2:
        _put(out, f"{key}_low", ci[0])
        _put(out, f"{key}_high", ci[1])


def flatten(report: Mapping[str, Any]) -> dict[str, float]:
    """The tracker metrics of an `eval.json` report (a policy's or a judge run's), by name:

    - `heldout/<dim>/accuracy`, `_low`, `_high` (95% Wilson interval), `margin`,
      `reference_accuracy`, `pairs`; a cost model's `heldout/safety_sign/accuracy` (`_low`, `_high`);
    - `refusal/refusal_rate` (unsafe prompts refused), `refusal/over_refusal_rate` (safe prompts
      refused), each with `_low`/`_high`; the reference model's under `refusal/reference/`;
    - `judge/harmless_rate` (`_low`, `_high`), `judge/mean_reward`, `judge/mean_cost` (with
      bootstrap `_low`/`_high`), `judge/harmless_rate_<judge>`, `judge/win_rate/<role>` (`_low`,
      `_high`); the reference model's side under `judge/reference/`;
    - `eval/<name>`: TRL's eval metrics of the run's test pairs, where the held-out pass after
      training measured them (`trl_eval`, which training takes out before eval.json is read back).

    Missing blocks, None and non-finite values are left out: a tracker only gets numbers.
    """
    out: dict[str, float] = {}
    for dim, d in (report.get("dimensions") or {}).items():
        if not isinstance(d, Mapping):
            continue
        _put(out, f"heldout/{dim}/accuracy", d.get("accuracy"))
        _put(out, f"heldout/{dim}/accuracy_low", d.get("ci_low"))
        _put(out, f"heldout/{dim}/accuracy_high", d.get("ci_high"))
        for key in ("margin", "reference_accuracy", "pairs"):
            _put(out, f"heldout/{dim}/{key}", d.get(key))
    sign = report.get("safety_sign")
    if isinstance(sign, Mapping):
        _put(out, "heldout/safety_sign/accuracy", sign.get("accuracy"))
        _put(out, "heldout/safety_sign/accuracy_low", sign.get("ci_low"))
        _put(out, "heldout/safety_sign/accuracy_high", sign.get("ci_high"))
    refusal = report.get("refusal")
    if isinstance(refusal, Mapping):
        for side, prefix in (("policy", "refusal"), ("reference", "refusal/reference")):
            m = refusal.get(side)
            if not isinstance(m, Mapping):
                continue
            _put(out, f"{prefix}/refusal_rate", m.get("refusal_rate_unsafe"))
            _put_ci(out, f"{prefix}/refusal_rate", m.get("refusal_rate_unsafe_ci"))
            _put(out, f"{prefix}/over_refusal_rate", m.get("over_refusal_rate"))
            _put_ci(out, f"{prefix}/over_refusal_rate", m.get("over_refusal_ci"))
            for key, value in m.items():
                if key.startswith("judge_unsafe_rate_"):
                    _put(out, f"{prefix}/{key}", value)
    generation = report.get("generation")
    if isinstance(generation, Mapping):
        for side, prefix in (("policy", "judge"), ("reference", "judge/reference")):
            m = generation.get(side)
            if not isinstance(m, Mapping):
                continue
            for key, value in m.items():
                if key.startswith(("harmless_rate", "mean_reward", "mean_cost")) and not key.endswith("_ci"):
                    _put(out, f"{prefix}/{key}", value)
                    _put_ci(out, f"{prefix}/{key}", m.get(f"{key}_ci"))
        cis = generation.get("win_rate_ci") or {}
        for role, value in (generation.get("win_rate") or {}).items():
            _put(out, f"judge/win_rate/{role}", value)
            _put_ci(out, f"judge/win_rate/{role}", cis.get(role) if isinstance(cis, Mapping) else None)
    if isinstance(report.get("trl_eval"), Mapping):  # returned to training, not in eval.json
        out.update(eval_metrics(report["trl_eval"]))
    return out


def record(run_dir: str | Path, trainer: Any) -> None:
    """Write `RUN_DIR/trackers.json` once training has ended: the final global step, TensorBoard's
    logging directory and MLflow's run id and tracking URI (as the trainer's callbacks used them),
    and the other integrations reported to. Nothing is written for a run that reports to none."""
    from transformers.integrations.integration_utils import MLflowCallback, TensorBoardCallback

    try:
        entry: dict[str, Any] = {"step": int(trainer.state.global_step), "other": []}
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.logging_dir:
                # relative to the run when inside it (the default): a moved or copied run still finds it
                logdir, run = Path(cb.logging_dir).absolute(), Path(run_dir).absolute()
                where = logdir.relative_to(run) if logdir.is_relative_to(run) else logdir
                entry["tensorboard"] = {"logging_dir": str(where)}
            elif isinstance(cb, MLflowCallback) and getattr(cb, "_initialized", False):
                last = cb._ml_flow.last_active_run()  # ended by on_train_end; mlflow is already imported then
                if last is not None:
                    entry["mlflow"] = {"run_id": last.info.run_id, "experiment_id": last.info.experiment_id,
                                       "tracking_uri": cb._ml_flow.get_tracking_uri()}  # fmt: skip
            elif _integration(cb):
                entry["other"].append(type(cb).__name__)
        if len(entry) > 2 or entry["other"]:
            io.write_json(Path(run_dir) / RECORD, entry)
    except Exception as err:  # the run's outcome must not depend on a tracker
        log.warning("could not record the run's trackers (%s: %s); its evaluation will not reach them",
                    type(err).__name__, err)  # fmt: skip


def _integration(cb: Any) -> bool:
    """Whether a trainer callback is one of transformers' reporting integrations (`report_to`)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return any(isinstance(cb, cls) for cls in INTEGRATION_TO_CALLBACK.values() if isinstance(cls, type))


def log_evaluation(run_dir: str | Path, report: Mapping[str, Any], trainer: Any = None) -> list[str]:
    """Log `flatten(report)` to the run's trackers (`log_metrics`)."""
    return log_metrics(run_dir, flatten(report), trainer)


def eval_metrics(trl_eval: Mapping[str, Any]) -> dict[str, float]:
    """TRL's eval metrics (`eval_loss`, `eval_rewards/chosen`, ...) by the names transformers' TensorBoard
    callback gives them during training (`eval/loss`, `eval/rewards/chosen`)."""
    out: dict[str, float] = {}
    for key, value in trl_eval.items():
        _put(out, "eval/" + key.removeprefix("eval_"), value)
    return out


def detach(trainer: Any) -> None:
    """Once training has ended (and `record` has noted where): take the TensorBoard and MLflow callbacks
    off the trainer. They closed their runs at train end; a later `trainer.log` (TRL's `evaluate()`
    after training) would open a new TensorBoard writer that nobody closes, and a new, unnamed MLflow
    run. What is logged after training goes through `log_metrics` instead, into the recorded runs."""
    for cb in list(trainer.callback_handler.callbacks):
        if type(cb).__name__ in ("TensorBoardCallback", "MLflowCallback") and _integration(cb):
            trainer.remove_callback(cb)


def log_metrics(run_dir: str | Path, metrics: Mapping[str, float], trainer: Any = None) -> list[str]:
    """Log `metrics` to the run's trackers (`RUN_DIR/trackers.json`) at its final step; `trainer`: the
    trainer just trained (its other integrations' runs are still open). Returns the trackers written
    to. A tracker that fails is a warning, never an error: the run and its files stay as they are."""
    path = Path(run_dir) / RECORD
    if not metrics or not path.is_file():
        return []
    try:
        entry = io.read_json(path)
    except Exception as err:
        log.warning("%s: unreadable (%s); the evaluation is not logged to the trackers", path, err)
        return []
    step = int(entry.get("step") or 0)
    done: list[str] = []
    if "tensorboard" in entry:  # a relative logging directory is the run's own
        entry["tensorboard"]["logging_dir"] = str(Path(run_dir) / entry["tensorboard"]["logging_dir"])
    for name, write in (("tensorboard", _tensorboard), ("mlflow", _mlflow)):
        if name in entry:
            try:
                write(entry[name], metrics, step)
                done.append(name)
            except Exception as err:
                log.warning("could not log the evaluation to %s (%s: %s); eval.json has it",
                            name, type(err).__name__, err)  # fmt: skip
    if entry.get("other"):
        if trainer is None:
            log.warning("the evaluation is not logged to %s: only tensorboard and mlflow runs are reopened after "
                        "training; eval.json has it", ", ".join(entry["other"]))  # fmt: skip
        else:
            done += _callbacks(trainer, metrics)
    if done:
        log.info("%d metrics logged to %s at step %d", len(metrics), ", ".join(done), step)
    return done


def _tensorboard(where: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter  # what transformers' TensorBoardCallback uses

    writer = SummaryWriter(log_dir=where["logging_dir"])
    try:
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
    finally:
        writer.close()


def _mlflow(where: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client = MlflowClient(tracking_uri=where["tracking_uri"])
    items = [Metric(key, value, now, step) for key, value in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow's batch limit
        client.log_batch(where["run_id"], metrics=items[i : i + 1000])


def _callbacks(trainer: Any, metrics: Mapping[str, float]) -> list[str]:
    """The other integrations, through the trainer's own callbacks (their runs are still open)."""
    done = []
    for cb in trainer.callback_handler.callbacks:
        if not _integration(cb) or type(cb).__name__ in ("TensorBoardCallback", "MLflowCallback"):
            continue
        try:
            cb.on_log(trainer.args, trainer.state, trainer.control, logs=dict(metrics))
            done.append(type(cb).__name__)
        except Exception as err:
            log.warning("could not log the evaluation to %s (%s: %s); eval.json has it",
                        type(cb).__name__, type(err).__name__, err)  # fmt: skip
    return done
