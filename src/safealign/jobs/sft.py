"""`recipes/sft.py`: supervised fine-tuning on the chosen responses of the configured objective.

Why it exists: the published DPO-family safety methods on PKU-SafeRLHF (SafeDPO, SACPO, MODPO)
start DPO from an SFT'd reference. This job builds pairs exactly as `recipes/dpo.py` does
(`objective=harmless` keeps the safer response, `helpful` the better one, ...) and trains
TRL's SFTTrainer on prompt + chosen, as prompt-completion data, so the loss is on the
completion only (SFTConfig's `completion_only_loss`, on by default for that format). The
run directory is a training run like any other: `recipes/dpo.py model.adapter=THIS_DIR`
continues from its adapter, and uses it as the DPO reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import io
from ..objectives import Pair
from ..pairs import PairReport
from ..rundir import RunDir, is_main_process
from ..settings import SFTSettings, parse_eval, parse_sft
from .training import Claimed, Pairs, count_too_long, load_pairs, log_done, train_run

log = logging.getLogger("safealign")


def run(cfg: DictConfig, run_dir: str | Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train one SFT run into `run_dir`, with the run-directory rules of `jobs/dpo.py` (lock, claim,
    resume, overwrite, status); `callbacks` are extra `transformers.TrainerCallback`s."""
    settings = parse_sft(cfg)  # every value checked: nothing is loaded yet, torch included
    ev = parse_eval(cfg.get("eval")) if cfg.get("eval") is not None else None
    run_dir, main = RunDir(run_dir), is_main_process()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with run_dir.lock(main):
        checkpoint, clear = run_dir.claim(resolved, settings.run.resume, settings.run.overwrite, main)
        pairs = load_pairs(settings)

        from ..devices import Launch, check_launch, cuda_capabilities
        from ..trainer import sft_config

        check_launch(Launch.from_env(), cuda_capabilities()[2], settings.quant)  # before anything loads
        args = sft_config(settings.train, run_dir / RunDir.CHECKPOINTS)
        metrics, trainer = train_run(Claimed(cfg, resolved, run_dir, checkpoint, clear, main), settings, pairs, args,
                                     build_trainer, callbacks)  # fmt: skip
        if ev is not None and main:  # scored from the saved adapter: the trainer's model is let go first
            from .dpo import drop_models
            from .evaluate import after_training

            drop_models(trainer)
            heldout = after_training(run_dir.path, ev, args.world_size, trainer=trainer)
            if heldout is not None:
                metrics["heldout"] = heldout["dimensions"]
                io.write_json(run_dir / RunDir.METRICS, metrics)
        if main:
            log_done(run_dir)
    return metrics


def completions(pairs: Sequence[Pair], report: PairReport | None) -> list[Pair]:
    """The pairs with distinct (prompt, chosen): two rows with the same prompt and chosen response
    (and different rejected ones) are one SFT example, not two. The rest are counted in `report`
    as dropped `duplicate_completion`."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for p in pairs:
        if (p.prompt, p.chosen) not in seen:
            seen.add((p.prompt, p.chosen))
            kept.append(p)
    if report is not None and len(kept) < len(pairs):
        report.kept -= len(pairs) - len(kept)
        report.dropped["duplicate_completion"] += len(pairs) - len(kept)
    return kept


def to_sft_dataset(pairs: Sequence[Pair], template: str) -> Any:
    """Prompt-completion rows (TRL's format): the prompt rendered with the template, the chosen response as
    the completion. With `template=chat` both are conversations, rendered by the tokenizer's chat template."""
    from datasets import Dataset

    from ..templates import render_prompt, render_response

    return Dataset.from_dict({
        "prompt": [render_prompt(template, p.prompt) for p in pairs],
        "completion": [render_response(template, p.chosen) for p in pairs],
    })  # fmt: skip


def build_trainer(s: SFTSettings, args: Any, pairs: Pairs, callbacks: Sequence[Any], main: bool = True) -> Any:
    """The tokenizer (the template checked against it), the model (LoRA, or `model.adapter`'s) and TRL's SFTTrainer."""
    from trl import SFTTrainer

    from ..modeling import load_model, load_tokenizer
    from ..templates import check_template
    from ..trainer import use_progress_log

    tokenizer = load_tokenizer(s.model)
    check_template(s.template, tokenizer)  # before the weights load
    loaded = load_model(s.model, s.quant, s.peft, tokenizer, gradient_checkpointing=args.gradient_checkpointing,
                        reference=False)  # fmt: skip
    train_examples = completions(pairs.train, pairs.train_report)
    test_examples = completions(pairs.test, pairs.test_report)
    trainer = SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=to_sft_dataset(train_examples, s.template),
        eval_dataset=to_sft_dataset(test_examples, s.template) if test_examples else None,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=list(callbacks),
    )
    use_progress_log(trainer)
    # TRL drops examples that truncation leaves without a completion token; count them like every other drop.
    count_too_long(pairs.train_report, len(train_examples), trainer.train_dataset, s, args, "train")
    if pairs.test_report is not None and trainer.eval_dataset is not None:
        count_too_long(pairs.test_report, len(test_examples), trainer.eval_dataset, s, args, "test")
    if main:
        log.info("objective=%s, train split (SFT on the chosen responses)\n%s", s.objective, pairs.train_report.table())
    return trainer
