"""What the training jobs (`jobs/dpo.py`, `jobs/sft.py`) share: the pairs, the run record, the status, training.

Both train on pairs built by the configured objective (SFT on their chosen responses), and
both leave the same run directory: config.yaml, versions.json, data_fingerprint.json,
pair_report.json, status.json, metrics.json and adapter/. Keeping these steps in one place
is what makes `model.adapter=RUN_DIR`, resume, and `compare.py` work the same for both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import io
from ..checkpoints import usable_checkpoint
from ..data.loading import load_split
from ..errors import DataError, Interrupted, SafealignError
from ..objectives import Pair
from ..pairs import PairReport, build_pairs, count_shared_prompts, make_pairs
from ..rundir import RunDir, fingerprint, is_main_process, package_versions
from ..settings import PairsSettings, SFTSettings

log = logging.getLogger("safealign")


@dataclass
class Pairs:
    """The pairs a run trains and is evaluated on, with what became of every row."""

    train: list[Pair]
    train_report: PairReport
    test: list[Pair]
    test_report: PairReport | None
    # (prompt, response) -> is the response safe, from the rows (`load_pairs(labels=True)`: a cost model's signs)
    safety: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)


@dataclass
class Claimed:
    """A run directory its job has claimed (`RunDir.claim`): what to resume from, whether to clear it."""

    cfg: DictConfig
    resolved: Any  # the config as plain data, as config.yaml records it
    run_dir: RunDir
    checkpoint: Path | None
    clear: bool
    main: bool  # rank 0 (or a single process): the one that writes run files


def train_run(
    claimed: Claimed, s: SFTSettings, pairs: Pairs, args: Any, build_trainer: Callable[..., Any],
    callbacks: Sequence[Any] = (), evaluate: bool = True,
) -> tuple[dict[str, Any], Any]:
    """From checked settings and pairs to the saved adapter: check the checkpoint and the data of a resumed
    run, build the trainer (`build_trainer(s, args, pairs, callbacks, main)`), record the run, train.

    Nothing of a previous run is touched before the trainer is built, i.e. before everything that
    can be checked ahead of training has been. Returns the metrics and the trainer (its model
    still in memory, for the evaluation after training); `evaluate`: as in `train`.
    """
    from ..learning import LearningCheck
    from ..trainer import StopOnSignal

    c, checkpoint = claimed, claimed.checkpoint
    if checkpoint is not None:  # a checkpoint that does not load: the previous good one, or a clear error
        checkpoint = usable_checkpoint(checkpoint, explicit=s.run.resume not in (None, "auto"))
        c.run_dir.check_same_data(data_fingerprint(pairs))
    stop, check = StopOnSignal(), LearningCheck()
    trainer = build_trainer(s, args, pairs, [stop, check, *callbacks], c.main)
    if c.main:
        start(c.run_dir, c.cfg, c.resolved, pairs, c.clear, checkpoint)
    with status_of(c.run_dir, c.main):
        return train(trainer, stop, check, s, c.run_dir, checkpoint, c.main, evaluate), trainer


def data_fingerprint(pairs: Pairs) -> dict[str, Any]:
    return {"train_pairs": len(pairs.train), "train_sha256": fingerprint(pairs.train),
            "test_pairs": len(pairs.test), "test_sha256": fingerprint(pairs.test)}  # fmt: skip


def start(run_dir: RunDir, cfg: DictConfig, resolved: Any, pairs: Pairs, clear: bool, checkpoint: Path | None) -> None:
    """Everything checked: replace a previous run's outputs (`train.overwrite`) and record this run."""
    if clear:
        run_dir.clear()
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    run_dir.mark_running()
    run_dir.write_hydra_files(cfg)
    io.write_text(run_dir / RunDir.CONFIG, OmegaConf.to_yaml(resolved))
    io.write_json(run_dir / RunDir.VERSIONS, package_versions())
    io.write_json(run_dir / RunDir.FINGERPRINT, data_fingerprint(pairs))
    io.write_json(run_dir / RunDir.PAIR_REPORT, {
        "train": pairs.train_report.to_dict(),
        "test": pairs.test_report.to_dict() if pairs.test_report else None,
    })  # fmt: skip


def load_pairs(s: PairsSettings, labels: bool = False) -> Pairs:
    """The train pairs (none left is an error that says where every row went) and the held-out pairs;
    with `labels`, each response's safety label too (`Pairs.safety`)."""
    train_rows = load_split(s.data, "train")
    train_pairs, train_report = make_pairs(train_rows, s.objective, s.options, s.filters)
    test_rows = load_split(s.data, "test")
    safety = safety_labels([*train_rows.rows, *(test_rows.rows if test_rows else [])]) if labels else {}
    if test_rows is None:
        return Pairs(train_pairs, train_report, [], None, safety)
    test_pairs, test_report = build_pairs(test_rows.rows, s.objective, s.options, s.filters, dropped=test_rows.dropped)
    shared = count_shared_prompts(train_pairs, test_pairs, test_report)
    if shared and is_main_process():
        total = len({p.prompt for p in test_pairs})
        log.warning("%d of %d held-out prompts also occur in the train split: evaluation on them is not held out "
                    "(pair_report.json: test.prompts_in_train)", shared, total)  # fmt: skip
    return Pairs(train_pairs, train_report, test_pairs, test_report, safety)


def safety_labels(rows: Sequence[Any]) -> dict[tuple[str, str], bool]:
    """(prompt, response) -> `is_response_K_safe` for both responses of every row (the first row's label
    where the same response to the same prompt occurs again)."""
    out: dict[tuple[str, str], bool] = {}
    for row in rows:
        for k in (0, 1):
            out.setdefault((row["prompt"], row[f"response_{k}"]), bool(row[f"is_response_{k}_safe"]))
    return out


@contextlib.contextmanager
def status_of(run_dir: RunDir, main: bool) -> Iterator[None]:
    """Mark the run done when the block finishes, interrupted or failed (with the error) when it raises."""
    try:
        yield
    except Interrupted as err:
        if main:
            run_dir.write_status("interrupted", error=str(err))
        if err.requeue is not None:  # submitit's handler: requeue the job (it resumes from the checkpoint), exit
            log.warning("%s; the cluster launcher requeues the job", err)
            err.requeue()
        raise
    except BaseException as err:
        if main:
            run_dir.write_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    if main:
        run_dir.write_status("done")


def train(
    trainer: Any, stop: Any, check: Any, s: SFTSettings, run_dir: RunDir, checkpoint: Path | None, main: bool,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train, save the adapter and metrics.json; returns the metrics.

    A run fails, before its adapter is saved, when its loss is not finite or when it did not
    learn (`check`, a `learning.LearningCheck`: no trainable weight changed, or every gradient
    norm was 0). `evaluate`: run TRL's `evaluate()` on the test pairs here (False where the
    held-out evaluation after training gives the same metrics from its own scoring pass).
    """
    from ..trainer import model_summary

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.stopped_by is not None:
        raise Interrupted(run_dir.path, stop.stopped_by, trainer.state.global_step, requeue=stop.requeue)
    from ..trackers import detach, eval_metrics, log_metrics, record

    if main:  # where the trackers keep this run, for the evaluation's numbers (now or later)
        record(run_dir.path, trainer)
        detach(trainer)
    metrics: dict[str, Any] = {
        "train": whole_run_loss(result.metrics, trainer.state, checkpoint),
        "global_step": trainer.state.global_step,
        "train_seconds": time.perf_counter() - start,
        "resumed_from": checkpoint.name if checkpoint else None,
        "world_size": trainer.args.world_size,
        "model": model_summary(trainer.model, s.model.name_or_path, s.quant, s.peft.method),
    }
    if hasattr(trainer, "ref_cache_hits"):  # DPO's reference log-prob cache (trl_compat.MarginDPOTrainer)
        metrics["ref_cache_hits"] = trainer.ref_cache_hits
    bad = {k: v for k, v in result.metrics.items() if isinstance(v, float) and not math.isfinite(v)
           and (k == "train_loss" or k.startswith(("rewards/", "logps/")))}  # fmt: skip
    metrics["learning"] = check.report(trainer.state)
    problem = check.problem(trainer.state, s.train, s.peft)
    if bad:
        check_hint = (
            "train.beta, train.learning_rate and the objective's margins"
            if hasattr(trainer, "beta")
            else "train.learning_rate"
        )
        problem = (f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} (check {check_hint}); the "
                   "adapter was not saved")  # fmt: skip
    if problem:  # what went wrong stays readable: metrics.json with the log history, no adapter
        if main:
            io.write_json(run_dir / RunDir.METRICS, {**metrics, "log_history": trainer.state.log_history})
        raise SafealignError(problem)
    if evaluate and trainer.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate()
        if main:
            log_metrics(run_dir.path, eval_metrics(metrics["eval"]), trainer)
    metrics["log_history"] = trainer.state.log_history
    trainer.save_model(str(run_dir / RunDir.ADAPTER))
    if main:
        check_saved(run_dir / RunDir.ADAPTER)
        io.write_json(run_dir / RunDir.METRICS, metrics)
    if main:
        log_numbers("train", result.metrics)
        if "eval" in metrics:
            log_numbers("eval", metrics["eval"])
    return metrics


def check_saved(adapter_dir: Path) -> None:
    """Fail the run when saving wrote no weights: a run marked done must leave a model a later step can load.

    Why: the Trainer's `save_model` under FSDP with `SHARDED_STATE_DICT` (or any future launcher
    path that saves elsewhere) returns normally having written no adapter or model file.
    """
    if not any(adapter_dir.glob("*.safetensors")) and not any(adapter_dir.glob("*.bin")):
        raise SafealignError(
            f"training finished but no weights were saved to {adapter_dir}: under FSDP set fsdp_state_dict_type: "
            "FULL_STATE_DICT (conf/accelerate/fsdp.yaml does); the checkpoints in checkpoints/ are kept"
        )


def whole_run_loss(train: dict[str, Any], state: Any, checkpoint: Path | None) -> dict[str, Any]:
    """The Trainer's train metrics, with `train_loss` over the whole run where it was resumed.

    The Trainer's `train_loss` averages the steps trained by this process only. A resumed run
    adds the steps before its checkpoint from the logged losses (each the mean of the steps
    since the previous log); `train_loss_since_resume` keeps the Trainer's value. Where the
    logs before the checkpoint do not reach it (a checkpoint saved between two logs),
    `train_loss_steps` says how many steps the average covers.
    """
    train = dict(train)
    saved = io.read_json_or_none(checkpoint / "trainer_state.json") if checkpoint is not None else None
    start = saved.get("global_step") if isinstance(saved, dict) else None
    if not isinstance(start, int) or start <= 0 or "train_loss" not in train:
        return train
    total, covered, previous = 0.0, 0, 0
    for entry in state.log_history:
        step = entry.get("step", 0)
        if "loss" in entry and previous < step <= start:
            total += entry["loss"] * (step - previous)
            covered, previous = covered + step - previous, step
    resumed = state.global_step - start
    train["train_loss_since_resume"] = train["train_loss"]
    train["train_loss"] = (total + train["train_loss"] * resumed) / max(covered + resumed, 1)
    if covered < start:
        train["train_loss_steps"] = covered + resumed
    return train


def log_numbers(name: str, values: dict[str, Any]) -> None:
    """One console line of a metrics dict, its numbers rounded."""
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float)))


def count_too_long(report: PairReport, before: int, dataset: Any, s: SFTSettings, args: Any, split: str) -> None:
    """Count the pairs TRL dropped because the prompt alone fills `max_length`; none left is an error."""
    dropped = before - len(dataset)
    if dropped:
        report.kept -= dropped
        report.dropped["prompt_too_long"] += dropped
    if len(dataset) == 0:
        raise DataError(
            f"every {split} pair was dropped: all {dropped} prompts (with template={s.template}) fill "
            f"train.max_length={args.max_length} tokens. Raise train.max_length, or shorten the prompts"
        )


def log_done(run_dir: RunDir) -> None:
    """The last line of a training run: its directory and the files in it."""
    written = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.path.iterdir() if not p.name.startswith("."))
    log.info("done: %s (%s)", run_dir, ", ".join(written))
