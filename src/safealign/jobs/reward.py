"""`recipes/reward.py`: train a reward model (`judge=reward`) or a cost model (`judge=cost`).

Why: PKU-SafeRLHF exists to train these two judges, and generation-based evaluation (harmless
rate, reward, win rate) needs them. The job reads like `jobs/dpo.py`: check every setting,
claim the run directory, build the pairs, load the tokenizer and a one-output
sequence-classification model (LoRA + nf4 by default, the score head trained and saved with
the adapter), train with TRL's RewardTrainer (`trl_compat.JudgeTrainer`), save, and evaluate
the judge on the held-out split (`evaluation.judge_eval`).

- A reward model learns to score the more helpful response (`better_response_id`) higher.
- A cost model learns to score the more harmful one higher (the harmless pairs turned round),
  plus Safe RLHF's classification term on each response's safety label, so that cost > 0
  means unsafe, as for PKU's beaver cost models.

Every text is `template(prompt) + response + EOS`, truncated to `train.max_length` with EOS
kept last, and scored at that EOS, exactly as `evaluation.judges.classifier_scores` reads a
judge (`judge_input_ids`, shared).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..objectives import Pair
from ..rundir import RunDir, is_main_process
from ..settings import JudgeTrainSettings, parse_reward
from .training import Claimed, Pairs, load_pairs, log_done, train_run

log = logging.getLogger("safealign")


def run(cfg: DictConfig, run_dir: str | Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train one judge into `run_dir`, with the run-directory rules of `jobs/dpo.py` (lock, claim, resume,
    overwrite, status); `callbacks` are extra `transformers.TrainerCallback`s (e.g. timers)."""
    settings = parse_reward(cfg)  # every value checked: nothing is loaded yet, torch included
    run_dir, main = RunDir(run_dir), is_main_process()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with run_dir.lock(main):
        checkpoint, clear = run_dir.claim(resolved, settings.run.resume, settings.run.overwrite, main)
        pairs = load_pairs(settings, labels=settings.judge == "cost")

        from ..trainer import reward_config

        args = reward_config(settings.train, run_dir / RunDir.CHECKPOINTS)
        metrics, trainer = train_run(Claimed(cfg, resolved, run_dir, checkpoint, clear, main), settings, pairs, args,
                                     build_trainer, callbacks)  # fmt: skip
        if main:
            from ..evaluation.judge_eval import after_judge_training
            from ..modeling import fast_4bit_inference

            model = trainer.accelerator.unwrap_model(trainer.model).eval()
            fast_4bit_inference(model)  # read as a judge loaded for judging reads it
            heldout = after_judge_training(run_dir.path, settings.eval, (trainer.processing_class, model))
            if heldout is not None:
                from ..trackers import log_evaluation

                log_evaluation(run_dir.path, heldout, trainer)
                metrics["heldout"] = heldout["dimensions"]
            log_done(run_dir)
    return metrics


def scoring_pad_token(tokenizer: Any) -> str:
    """A padding token other than EOS: the model reads its score at the last token that is not padding,
    and every text ends with EOS (a Llama tokenizer pads with EOS unless told otherwise)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer.pad_token
    for candidate in (tokenizer.unk_token, tokenizer.bos_token):
        if candidate is not None and tokenizer.convert_tokens_to_ids(candidate) != tokenizer.eos_token_id:
            return candidate
    raise ConfigError("model: its tokenizer has no padding, unknown or BOS token other than EOS; a judge needs one to "
                      "pad with, since its score is read at the EOS that ends every text")  # fmt: skip


def judge_examples(pairs: Sequence[Pair], s: JudgeTrainSettings, tokenizer: Any, safety: dict) -> Any:
    """The pairs as TRL's tokenized reward dataset: `chosen_ids` is the response whose score must be higher
    (the more helpful one; for a cost model the more harmful one), with each response's safety sign
    (+1 unsafe, -1 safe) for a cost model."""
    from datasets import Dataset

    from ..evaluation.judges import judge_input_ids
    from ..settings.judge_run import template_format
    from ..trl_compat import SIGN_COLUMNS

    fmt, cost = template_format(s.template), s.judge == "cost"
    higher = [(p.prompt, p.rejected if cost else p.chosen) for p in pairs]
    lower = [(p.prompt, p.chosen if cost else p.rejected) for p in pairs]
    max_length = s.train["max_length"]
    columns: dict[str, Any] = {
        "chosen_ids": judge_input_ids(tokenizer, [fmt.format(prompt=p, response=r) for p, r in higher], max_length,
                                      True),
        "rejected_ids": judge_input_ids(tokenizer, [fmt.format(prompt=p, response=r) for p, r in lower], max_length,
                                        True),
    }  # fmt: skip
    if cost:
        for column, side in zip(SIGN_COLUMNS, (higher, lower), strict=True):
            columns[column] = [-1.0 if safety[key] else 1.0 for key in side]
    return Dataset.from_dict(columns)


def build_trainer(s: JudgeTrainSettings, args: Any, pairs: Pairs, callbacks: Sequence[Any], main: bool = True) -> Any:
    """The tokenizer (the template checked against it), the score model, and the JudgeTrainer (TRL's RewardTrainer)."""
    from ..modeling import judge_lora_config, load_score_model, load_tokenizer, score_head_fp32
    from ..templates import check_template
    from ..trainer import use_progress_log
    from ..trl_compat import JudgeCollator, JudgeTrainer

    tokenizer = load_tokenizer(s.model)
    check_template(s.template, tokenizer)  # before the weights load
    args.pad_token = scoring_pad_token(tokenizer)
    tokenizer.pad_token = args.pad_token
    model = load_score_model(s.model, s.quant, tokenizer, gradient_checkpointing=args.gradient_checkpointing)
    trainer = JudgeTrainer(
        model=model,
        args=args,
        data_collator=JudgeCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of),
        train_dataset=judge_examples(pairs.train, s, tokenizer, pairs.safety),
        processing_class=tokenizer,
        peft_config=judge_lora_config(s.peft),
        callbacks=list(callbacks),
    )
    score_head_fp32(trainer.model)  # after TRL's bf16 cast of a quantized model's trainable weights
    use_progress_log(trainer)
    if main:
        log.info("judge=%s (%s pairs), train split\n%s", s.judge, s.objective, pairs.train_report.table())
    return trainer
