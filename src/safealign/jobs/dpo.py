"""`recipes/dpo.py`: train a (quantized, LoRA) model with DPO on PKU-SafeRLHF preference pairs.

The job, top to bottom: check every setting, claim the run directory, build the pairs,
load the tokenizer and the model, train with TRL's DPOTrainer (taught per-pair margins in
`trl_compat`), save, and evaluate on the held-out dimensions. Only the main process writes
run files; `status.json` says running, interrupted, failed (with the error) or done.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import io
from ..errors import SafealignError
from ..rundir import RunDir, is_main_process
from ..settings import TrainSettings, parse_train
from .training import Claimed, Pairs, count_too_long, load_pairs, log_done, log_numbers, train_run

log = logging.getLogger("safealign")


def run(
    cfg: DictConfig, run_dir: str | Path, callbacks: Sequence[Any] = (), pairs: Pairs | None = None,
    start_from: Path | None = None,
) -> dict[str, Any]:
    """Train one run into `run_dir`; `callbacks` are extra `transformers.TrainerCallback`s (e.g. timers).

    `pairs`: the train pairs to use instead of the objective's (recipes/iterate.py's judged pairs; the
    held-out pairs still come from the data). `start_from`: an adapter directory whose weights the
    trained adapter starts from, while the reference stays `model.adapter` (or the base model):
    `iterate.reference=initial`.

    Nothing of a previous run in `run_dir` is touched until everything that can be checked
    before training has been: settings, the directory's state, TRL's own DPOConfig checks,
    the data, the tokenizer and template, and the model.
    """
    settings = parse_train(cfg)  # every value checked: nothing is loaded yet, torch included
    run_dir, main = RunDir(run_dir), is_main_process()  # main: rank 0 under accelerate / torchrun
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with run_dir.lock(main):  # one process at a time in a run directory
        checkpoint, clear = run_dir.claim(resolved, settings.run.resume, settings.run.overwrite, main)
        pairs = load_pairs(settings) if pairs is None else pairs  # before torch: a data error answers at once

        from ..evaluation.trl_metrics import reproducible
        from ..trackers import eval_metrics, log_metrics
        from ..trainer import dpo_config
        from .evaluate import after_training

        args = dpo_config(settings.train, run_dir / RunDir.CHECKPOINTS, launch_checked(settings))
        if settings.objective == "modpo":  # each pair's margin from the margin run's model, and β/w
            from ..modpo import fill_margins

            fill_margins(settings, args, pairs)
        # One scoring pass at the end: the held-out evaluation also gives TRL's eval metrics.
        # Not for full fine-tuning with precomputed reference log-probs: no reference stays in memory then, so
        # the test pairs' reference log-probs must be precomputed with the initial policy, before training.
        no_reference = settings.peft.method == "none" and args.precompute_ref_log_probs
        once = main and settings.eval.after_train and args.world_size == 1 and reproducible(args) and not no_reference
        metrics, trainer = train_run(Claimed(cfg, resolved, run_dir, checkpoint, clear, main), settings, pairs, args,
                                     functools.partial(build_trainer, evaluate_once=once, start_from=start_from),
                                     callbacks,
                                     evaluate=not once)  # fmt: skip

        if main:
            models, run_pairs = in_memory(trainer, pairs)
            if models is None:  # the evaluation loads the saved model: the trained one need not stay meanwhile
                drop_models(trainer)
            heldout = after_training(run_dir.path, settings.eval, args.world_size, models, run_pairs, args, trainer)
            if heldout is not None:
                metrics["heldout"] = heldout["dimensions"]  # so that metric=heldout.harmless.accuracy works
            if once and pairs.test:
                # from the held-out pass, which brought them to the trackers too (trackers.flatten)
                metrics["eval"] = heldout.pop("trl_eval", None) if heldout else None
                if not metrics["eval"]:
                    metrics["eval"] = trainer.evaluate(
                        tokenized(pairs, "test", settings.template, trainer.processing_class, args)
                    )
                    log_metrics(run_dir.path, eval_metrics(metrics["eval"]), trainer)
                io.write_json(run_dir / RunDir.METRICS, {k: v for k, v in metrics.items() if k != "heldout"})
                log_numbers("eval", metrics["eval"])
            log_done(run_dir)
    return metrics


def run_for_sweeper(cfg: DictConfig, run_dir: str | Path) -> float | None:
    """`run`, returning the number a sweeper such as Optuna optimises (`metric=`; None without one)."""
    return select_metric(run(cfg, run_dir), cfg.get("metric"))


def build_trainer(
    s: TrainSettings, args: Any, pairs: Pairs, callbacks: Sequence[Any], main: bool = True, evaluate_once: bool = False,
    start_from: Path | None = None,
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
    # Full fine-tuning loads an explicit reference only where its log-probs are not precomputed: TRL
    # keeps none in memory then, and a 7B reference would hold about 13.5 GB of GPU memory for nothing.
    reference = s.peft.method == "none" and not args.precompute_ref_log_probs
    loaded = load_model(s.model, s.quant, s.peft, tokenizer, gradient_checkpointing=args.gradient_checkpointing,
                        reference=reference)  # fmt: skip
    train = tokenized(pairs, "train", s.template, loaded.tokenizer, args)
    test = tokenized(pairs, "test", s.template, loaded.tokenizer, args) if pairs.test else None
    # Pairs whose prompt alone fills max_length are dropped (as TRL drops them); count them like
    # every other drop, and stop here if none is left.
    count_too_long(pairs.train_report, len(pairs.train), train, s, args, "train")
    if pairs.test_report is not None and test is not None:
        count_too_long(pairs.test_report, len(pairs.test), test, s, args, "test")
    trainer = MarginDPOTrainer(
        model=loaded.model,
        ref_model=loaded.ref_model,
        args=args,
        train_dataset=train,
        eval_dataset=test if test is not None and (args.eval_strategy != "no" or not evaluate_once) else None,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=list(callbacks),
        ref_cache_dir=cache_dir() / "ref_logps",
        ref_identity=reference_identity(s.model),
    )
    if start_from is not None:  # after TRL made (and precomputed) the reference: it stays `model.adapter`'s
        from ..modeling import load_adapter_weights

        load_adapter_weights(trainer.accelerator.unwrap_model(trainer.model), start_from)
    use_progress_log(trainer)
    if main:  # once, not once per rank
        log.info("objective=%s, train split\n%s", s.objective, pairs.train_report.table())
    return trainer


def reference_identity(model_cfg: Any) -> str:
    """The reference beyond its base model, for the reference cache's key: the revision, and the starting
    adapter (`model.adapter`) by the hash of its weights file."""
    import hashlib

    from ..settings import adapter_dir

    adapter = getattr(model_cfg, "adapter", None)
    weights = sorted(adapter_dir(adapter).glob("*.safetensors")) if adapter is not None else []
    digest = hashlib.sha256(b"".join(w.read_bytes() for w in weights)).hexdigest() if weights else None
    return f"revision={model_cfg.revision} adapter={adapter} sha256={digest}"


def launch_checked(s: TrainSettings) -> bool:
    """Refuse a device / launcher combination that cannot work (`devices.check_launch`); returns whether
    the reference log-probs are precomputed (not under FSDP, where TRL's precompute crashes)."""
    from ..devices import Launch, check_launch, cuda_capabilities, precompute_under

    launch = Launch.from_env()
    check_launch(launch, cuda_capabilities()[2], s.quant)
    precompute = precompute_under(launch, s.run.precompute_ref)
    if precompute != s.run.precompute_ref and is_main_process():
        log.warning("train.precompute_ref=true is turned off under FSDP (TRL's precompute runs before FSDP places "
                    "the model, TRL issue #6470): reference log-probs are computed batch by batch")  # fmt: skip
    return precompute


def tokenized(pairs: Pairs, split: str, template: str, tokenizer: Any, args: Any) -> Any:
    """One split's pairs as TRL's tokenized dataset: tokenized once per sweep, then read from the on-disk cache."""
    from ..templates import to_dataset
    from ..tiny import cache_dir
    from ..tokenization import tokenize_pairs

    with_margin = any(p.margin for p in pairs.train + pairs.test)
    dataset = to_dataset(pairs.train if split == "train" else pairs.test, template, with_margin)
    return tokenize_pairs(dataset, tokenizer, args, split, cache_dir() / "tokenized")


def in_memory(trainer: Any, pairs: Pairs) -> tuple[Any, list[Any]]:
    """The trained policy (and reference) as training left them, and the test pairs to score with them.

    The reference is the policy with its adapter disabled, or TRL's frozen "ref" adapter for a
    run started from `model.adapter`. (None, []) where the reference is no longer in memory
    (full fine-tuning with precomputed reference log-probs): the evaluation loads the saved model.
    """
    from peft import PeftModel

    from ..evaluation.scoring import PolicyModels

    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.ref_model is None and not isinstance(model, PeftModel):
        return None, []
    reference_adapter = "ref" if isinstance(model, PeftModel) and "ref" in model.peft_config else None
    models = PolicyModels(model.eval(), trainer.processing_class, trainer.ref_model, reference_adapter,
                          on_release=functools.partial(drop_models, trainer))  # fmt: skip
    return models, pairs.test


def drop_models(trainer: Any) -> None:
    """Let go of the trainer's policy, reference and optimizer state (and accelerate's references to them),
    so that releasing the evaluation's models before the judges load frees their memory."""
    trainer.model = trainer.model_wrapped = trainer.ref_model = None
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.accelerator.free_memory()


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
