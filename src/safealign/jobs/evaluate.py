"""`recipes/evaluate.py`: evaluate a finished run, or every finished run of a sweep, on the held-out dimensions.

    python recipes/evaluate.py run_dir=DIR [eval.KEY=VALUE ...]

Writes DIR/eval.json (and DIR/generations.jsonl with eval.generate=true) for each run, and logs its
numbers to the trackers the run trained with (`trackers`: TensorBoard and MLflow runs are reopened).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, EvaluationError, NoHeldOutError, SafealignError
from ..evaluation.report import evaluate_run
from ..rundir import RunDir, sweep_runs
from ..settings import EvalSettings, parse_eval
from ..trackers import log_evaluation

log = logging.getLogger("safealign.evaluation")


def after_training(
    run_dir: str | Path,
    ev: EvalSettings,
    world_size: int = 1,
    models: Any = None,
    run_pairs: Sequence[Any] = (),
    trl_args: Any = None,
    trainer: Any = None,
) -> dict[str, Any] | None:
    """What training calls once the run is marked done: `evaluate_run` when `eval.after_train`,
    on the model still in memory (`models`), scoring the run's test pairs (`run_pairs`) in the same pass.

    Returns None, with a log line, where there is nothing to evaluate on (no held-out split)
    and after a distributed launch, whose ranks could not follow rank 0 through model loading
    (`recipes/evaluate.py` evaluates such a run afterwards, in one process). The report's numbers
    then go to the run's trackers (`trackers.log_evaluation`; `trainer`: the one just trained).
    """
    if not ev.after_train:
        return None
    if world_size > 1:
        log.info("distributed run: evaluate it with python recipes/evaluate.py run_dir=%s", run_dir)
        return None
    try:
        report = evaluate_run(run_dir, ev, models, run_pairs, trl_args)
    except NoHeldOutError as err:
        log.info("no held-out evaluation: %s", err)
        return None
    log_evaluation(run_dir, report, trainer)
    return report


def evaluate_path(path: str | Path, ev: EvalSettings) -> dict[str, Any]:
    """Evaluate a run directory, or every finished run of a sweep directory (failures are logged, not fatal)."""
    path = Path(path)
    if (path / RunDir.CONFIG).is_file() or (path / RunDir.STATUS).is_file() or not path.is_dir():
        if path.is_dir():
            check_writable(RunDir(path), ev)
        return {str(path): evaluate_one(path, ev)}
    reports: dict[str, Any] = {}
    failed: list[str] = []
    runs = []
    for run in sweep_runs(path):
        state = run.state()
        if state != "done":
            log.warning("%s: skipped (status %s)", run, state)
            continue
        runs.append(run)
    for run in runs:  # every run before the first evaluation
        check_writable(run, ev)
    for run in runs:
        try:
            reports[str(run)] = evaluate_one(run.path, ev)
        except SafealignError as err:
            log.error("%s: evaluation failed: %s", run, err)
            failed.append(f"{run.name}: {err}")
    if failed or not reports:
        if failed:
            raise EvaluationError(f"run_dir={path}: {len(failed)} run(s) could not be evaluated ({'; '.join(failed)})")
        raise EvaluationError(f"run_dir={path}: no finished run (status done) to evaluate")
    return reports


def evaluate_one(path: str | Path, ev: EvalSettings) -> dict[str, Any]:
    """A policy run's evaluation (`evaluate_run`), or a judge run's (`evaluate_judge_run`: recipes/reward.py)."""
    from ..evaluation.judge_eval import evaluate_judge_run, is_judge_run

    report = evaluate_judge_run(path, ev) if is_judge_run(path) else evaluate_run(path, ev)
    log_evaluation(path, report)  # the trackers the run trained with, if it recorded any (trackers.json)
    return report


def check_writable(run: RunDir, ev: EvalSettings) -> None:
    """Refuse, before any model loads, a run directory the evaluation could not write its report into."""
    names = [RunDir.EVAL] + ([RunDir.GENERATIONS] if ev.generate else [])
    run.check_writable(" and ".join(names), "make the directory writable, or evaluate a writable copy of the run")


def run(cfg: DictConfig, _out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate `run_dir` (a run, or a sweep of runs) with the `eval` group."""
    if OmegaConf.is_missing(cfg, "run_dir") or not cfg.get("run_dir"):
        raise ConfigError("run_dir: missing; pass run_dir=DIR (a run directory, or a sweep directory of runs)")
    return evaluate_path(str(cfg.run_dir), parse_eval(cfg.get("eval")))
