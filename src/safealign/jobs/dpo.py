"""`recipes/dpo.py`: train a (quantized, LoRA) model with DPO on PKU-SafeRLHF preference pairs.

The job, top to bottom: check every setting, claim the run directory, build the pairs,
load the tokenizer and the model, train with TRL's DPOTrainer (taught per-pair margins in
`trl_compat`), save, and evaluate on the held-out dimensions. Only the main process writes
run files; `status.json` says running, interrupted, failed (with the error) or done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import io
from ..data.loading import load_split
from ..errors import DataError, Interrupted, SafealignError
from ..objectives import Pair
from ..pairs import PairReport, build_pairs, count_shared_prompts, make_pairs
from ..rundir import RunDir, fingerprint, is_main_process, package_versions, usable_checkpoint
from ..settings import TrainSettings, parse_train

log = logging.getLogger("safealign")


@dataclass
class Pairs:
    """The pairs a run trains and is evaluated on, with what became of every row."""

    train: list[Pair]
    train_report: PairReport
    test: list[Pair]
    test_report: PairReport | None


def run(cfg: DictConfig, run_dir: str | Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train one run into `run_dir`; `callbacks` are extra `transformers.TrainerCallback`s (e.g. timers).

    Nothing of a previous run in `run_dir` is touched until everything that can be checked
    before training has been: settings, the directory's state, TRL's own DPOConfig checks,
    the data, the tokenizer and template, and the model.
    """
    settings = parse_train(cfg)  # every value checked: nothing is loaded yet, torch included
    run_dir, main = RunDir(run_dir), is_main_process()  # main: rank 0 under accelerate / torchrun
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with run_dir.lock(main):  # one process at a time in a run directory
        checkpoint, clear = run_dir.claim(resolved, settings.run.resume, settings.run.overwrite, main)
        pairs = load_pairs(settings)  # before torch is imported: a data error answers in a second or two

        from ..evaluation.trl_metrics import reproducible
        from ..trainer import StopOnSignal, dpo_config
        from .evaluate import after_training

        args = dpo_config(settings.train, run_dir / RunDir.CHECKPOINTS, settings.run.precompute_ref)
        if settings.objective == "modpo":  # each pair's margin from the margin run's model, and β/w
            from ..modpo import fill_margins

            fill_margins(settings, args, pairs)
        if checkpoint is not None:  # a checkpoint that does not load: the previous good one, or a clear error
            checkpoint = usable_checkpoint(checkpoint, explicit=settings.run.resume not in (None, "auto"))
            run_dir.check_same_data(data_fingerprint(pairs))
        # One scoring pass at the end: the held-out evaluation also gives TRL's eval metrics.
        evaluate_once = main and settings.eval.after_train and args.world_size == 1 and reproducible(args)
        stop = StopOnSignal()
        trainer = build_trainer(settings, args, pairs, [stop, *callbacks], main, evaluate_once)
        if main:
            start(run_dir, cfg, resolved, pairs, clear, checkpoint)

        with status_of(run_dir, main):
            metrics = train(trainer, stop, settings, run_dir, checkpoint, main, evaluate=not evaluate_once)

        if main:
            heldout = after_training(run_dir.path, settings.eval, args.world_size, *in_memory(trainer, pairs))
            if heldout is not None:
                metrics["heldout"] = heldout["dimensions"]  # so that metric=heldout.harmless.accuracy works
            if evaluate_once and pairs.test:
                metrics["eval"] = heldout.pop("trl_eval", None) if heldout else None
                metrics["eval"] = metrics["eval"] or trainer.evaluate(
                    tokenized(pairs, "test", settings.template, trainer.processing_class, args)
                )
                io.write_json(run_dir / RunDir.METRICS, {k: v for k, v in metrics.items() if k != "heldout"})
                log_numbers("eval", metrics["eval"])
            written = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.path.iterdir()
                             if not p.name.startswith("."))  # fmt: skip
            log.info("done: %s (%s)", run_dir, ", ".join(written))
    return metrics


def run_for_sweeper(cfg: DictConfig, run_dir: str | Path) -> float | None:
    """`run`, returning the number a sweeper such as Optuna optimises (`metric=`; None without one)."""
    return select_metric(run(cfg, run_dir), cfg.get("metric"))


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


def load_pairs(s: TrainSettings) -> Pairs:
    """The train pairs (none left is an error that says where every row went) and the held-out pairs."""
    train_pairs, train_report = make_pairs(load_split(s.data, "train"), s.objective, s.options, s.filters)
    test_rows = load_split(s.data, "test")
    if test_rows is None:
        return Pairs(train_pairs, train_report, [], None)
    test_pairs, test_report = build_pairs(test_rows.rows, s.objective, s.options, s.filters, dropped=test_rows.dropped)
    shared = count_shared_prompts(train_pairs, test_pairs, test_report)
    if shared and is_main_process():
        total = len({p.prompt for p in test_pairs})
        log.warning("%d of %d held-out prompts also occur in the train split: evaluation on them is not held out "
                    "(pair_report.json: test.prompts_in_train)", shared, total)  # fmt: skip
    return Pairs(train_pairs, train_report, test_pairs, test_report)


@contextlib.contextmanager
def status_of(run_dir: RunDir, main: bool) -> Iterator[None]:
    """Mark the run done when the block finishes, interrupted or failed (with the error) when it raises."""
    try:
        yield
    except Interrupted as err:
        if main:
            run_dir.write_status("interrupted", error=str(err))
        raise
    except BaseException as err:
        if main:
            run_dir.write_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    if main:
        run_dir.write_status("done")


def build_trainer(
    s: TrainSettings, args: Any, pairs: Pairs, callbacks: Sequence[Any], main: bool = True, evaluate_once: bool = False
) -> Any:
    """The tokenizer (the template checked against it), the model, and TRL's DPOTrainer with margins.

    The trainer gets the test pairs only where it evaluates them itself (`eval_strategy`
    during training, or at the end unless `evaluate_once`): otherwise TRL would prepare them,
    and precompute their reference log-probs, for nothing.
    """
    from ..modeling import load_model, load_tokenizer
    from ..templates import check_template
    from ..tiny import cache_dir
    from ..trainer import use_progress_log
    from ..trl_compat import MarginDPOTrainer

    tokenizer = load_tokenizer(s.model)
    check_template(s.template, tokenizer)  # before the weights load
    loaded = load_model(s.model, s.quant, s.peft, tokenizer, gradient_checkpointing=args.gradient_checkpointing)
    test = tokenized(pairs, "test", s.template, loaded.tokenizer, args) if pairs.test else None
    trainer = MarginDPOTrainer(
        model=loaded.model,
        ref_model=loaded.ref_model,
        args=args,
        train_dataset=tokenized(pairs, "train", s.template, loaded.tokenizer, args),
        eval_dataset=test if test is not None and (args.eval_strategy != "no" or not evaluate_once) else None,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=list(callbacks),
        ref_cache_dir=cache_dir() / "ref_logps",
    )
    use_progress_log(trainer)
    # TRL drops pairs whose prompt alone fills max_length; count them like every other drop.
    count_too_long(pairs.train_report, len(pairs.train), trainer.train_dataset, s, args, "train")
    if pairs.test_report is not None and test is not None:
        count_too_long(pairs.test_report, len(pairs.test), test, s, args, "test")
    if main:  # once, not once per rank
        log.info("objective=%s, train split\n%s", s.objective, pairs.train_report.table())
    return trainer


def tokenized(pairs: Pairs, split: str, template: str, tokenizer: Any, args: Any) -> Any:
    """One split's pairs as TRL's tokenized dataset: tokenized once per sweep, then read from the on-disk cache."""
    from ..templates import to_dataset
    from ..tiny import cache_dir
    from ..tokenization import tokenize_pairs

    with_margin = any(p.margin for p in pairs.train + pairs.test)
    dataset = to_dataset(pairs.train if split == "train" else pairs.test, template, with_margin)
    return tokenize_pairs(dataset, tokenizer, args, split, cache_dir() / "tokenized")


def train(
    trainer: Any, stop: Any, s: TrainSettings, run_dir: RunDir, checkpoint: Path | None, main: bool, evaluate: bool
) -> dict[str, Any]:
    """Train, save the adapter and metrics.json; returns the metrics. A run whose loss is not finite fails.

    `evaluate`: run TRL's `evaluate()` on the test pairs here (False where the held-out
    evaluation after training gives the same metrics from its own scoring pass).
    """
    from ..trainer import model_summary

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.stopped_by is not None:
        raise Interrupted(run_dir.path, stop.stopped_by, trainer.state.global_step)
    metrics: dict[str, Any] = {
        "train": result.metrics,
        "global_step": trainer.state.global_step,
        "train_seconds": time.perf_counter() - start,
        "resumed_from": checkpoint.name if checkpoint else None,
        "world_size": trainer.args.world_size,
        "ref_cache_hits": trainer.ref_cache_hits,
        "model": model_summary(trainer.model, s.model.name_or_path, s.quant, s.peft.method),
    }
    bad = {k: v for k, v in result.metrics.items() if isinstance(v, float) and not math.isfinite(v)
           and (k == "train_loss" or k.startswith(("rewards/", "logps/")))}  # fmt: skip
    if bad:
        raise SafealignError(
            f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} (check train.beta, "
            "train.learning_rate and the objective's margins); the adapter was not saved"
        )
    if evaluate and trainer.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate()
    metrics["log_history"] = trainer.state.log_history
    trainer.save_model(str(run_dir / RunDir.ADAPTER))
    if main:
        io.write_json(run_dir / RunDir.METRICS, metrics)
    if main:
        log_numbers("train", result.metrics)
        if "eval" in metrics:
            log_numbers("eval", metrics["eval"])
    return metrics


def log_numbers(name: str, values: dict[str, Any]) -> None:
    """One console line of a metrics dict, its numbers rounded."""
    log.info("%s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float)))


def in_memory(trainer: Any, pairs: Pairs) -> tuple[Any, list[Pair]]:
    """The trained policy (and reference) as training left them, and the test pairs to score with them.

    (None, []) where the reference is no longer in memory (full fine-tuning with precomputed
    reference log-probs): the evaluation then loads the saved model.
    """
    from peft import PeftModel

    from ..evaluation.scoring import PolicyModels

    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.ref_model is None and not isinstance(model, PeftModel):
        return None, []
    return PolicyModels(model.eval(), trainer.processing_class, trainer.ref_model), pairs.test


def count_too_long(report: PairReport, before: int, dataset: Any, s: TrainSettings, args: Any, split: str) -> None:
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


def select_metric(metrics: dict[str, Any] | None, key: str | None) -> float | None:
    """The value of dotted `key` (the `metric` config key) in a run's metrics, for sweepers like Optuna."""
    if metrics is None or not key:
        return None
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            valid = sorted(k for k, v in metrics.items() if not isinstance(v, list))
            raise SafealignError(f"metric={key}: no '{part}' in the run's metrics. Top-level keys: {', '.join(valid)}")
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise SafealignError(f"metric={key}: the run's value is {node!r}, not a number (a dimension with no pairs?)")
    return float(node)
