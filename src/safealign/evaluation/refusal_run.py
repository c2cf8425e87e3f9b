"""The refusal evaluation of a trained run: the `refusal` block of eval.json and RUN_DIR/refusals.jsonl.

The classifier, the prompt sets and the rates are in `refusal` (light: no model, no torch);
this module generates the responses they classify, and runs the refusal judge of
`eval.refusal.classifier=guard|classifier` (loaded by `judges`, as the safety judges are).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .refusal import SHIPPED_PROMPTS, is_refusal, load_refusal_prompts, refusal_rates

if TYPE_CHECKING:
    from ..settings import EvalSettings, JudgeConfig, TrainSettings
    from ..settings.eval import RefusalConfig
    from .scoring import PolicyModels

REFUSALS = "refusals.jsonl"  # in the run directory: every prompt with both sides' responses
STRMATCH = "string match (safealign.evaluation.refusal.is_refusal)"


def classifier_name(cfg: RefusalConfig) -> str:
    """What decided refusal, for eval.json and the console."""
    if cfg.classifier == "guard":
        return f"guard {cfg.judge.path} (its 'Refusal: Yes/No' line; the string match where it writes none)"
    if cfg.classifier == "classifier":
        return f"classifier {cfg.judge.path} (refusal logit > {cfg.judge.threshold:g})"
    return STRMATCH


def classify_refusals(
    cfg: RefusalConfig, judge: JudgeConfig, prompts: Sequence[str], responses: Sequence[str]
) -> tuple[list[bool], list[dict[str, Any]]]:
    """Whether each response refuses, by `eval.refusal.classifier`, and per response what the judge
    wrote (`refusal_output`, and `refusal_fallback` where the guard wrote no verdict) or scored
    (`refusal_score`); empty records for the string match. A judge loads once, with `eval.judge`'s
    quant, dtype, batch size and max length, and is released before this returns."""
    if cfg.classifier == "strmatch":
        return [is_refusal(r) for r in responses], [{} for _ in responses]
    from .judges import _load_judge, classifier_scores, guard_verdicts, parse_refusal
    from .scoring import release_memory

    j = cfg.judge
    tokenizer, model = _load_judge(cfg.classifier, "refusal", j, judge, key="eval.refusal.judge.path")
    try:
        if cfg.classifier == "guard":
            raw = [t for _, t in guard_verdicts(tokenizer, model, j, prompts, responses, judge.batch_size)]  # type: ignore[arg-type]
            parsed = [parse_refusal(t) for t in raw]
            flags = [is_refusal(r) if v is None else v for v, r in zip(parsed, responses, strict=True)]
            return flags, [{"refusal_output": t} | ({"refusal_fallback": True} if v is None else {})
                           for t, v in zip(raw, parsed, strict=True)]  # fmt: skip
        texts = [j.template.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)]
        scores = classifier_scores(tokenizer, model, texts, judge.batch_size, judge.max_length, j.append_eos)
        return [s > j.threshold for s in scores], [{"refusal_score": s} for s in scores]
    finally:
        del model
        release_memory()


def refusal_eval(
    models: PolicyModels, settings: TrainSettings, ev: EvalSettings, run_dir: str | Path, release: bool
) -> dict[str, Any]:
    """The `refusal` block of eval.json: the policy and the reference (adapter disabled) answer every
    prompt of `eval.refusal.path` with the run's template and `eval.generation` settings (but
    `eval.refusal.max_new_tokens`: a refusal shows in the opening words), and each
    response is classified by `eval.refusal.classifier` (`classify_refusals`; and judged, when
    `eval.judge` names a judge).

    With `release`, the policy is freed before the judges load (nothing generates after this).
    Writes RUN_DIR/refusals.jsonl.
    """
    import dataclasses

    from .. import io
    from .generation import generate_responses
    from .judges import any_judge, judge_responses

    cfg = ev.refusal
    prompts = load_refusal_prompts(cfg.path, cfg.max_prompts, ev.seed)
    gen = ev.generation
    if cfg.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=cfg.max_new_tokens)
    texts = [p.prompt for p in prompts]
    responses = generate_responses(models, texts, settings.template, gen, ev.seed)
    n = len(texts)
    if release and (cfg.classifier != "strmatch" or any_judge(ev.judge)):
        models.release()
    flags, details = classify_refusals(cfg, ev.judge, texts + texts, responses["policy"] + responses["reference"])
    refused = {"policy": flags[:n], "reference": flags[n:]}
    detail = {"policy": details[:n], "reference": details[n:]}
    unsafe: dict[str, list[bool | None] | None] = {"policy": None, "reference": None}
    if any_judge(ev.judge):
        records = judge_responses(ev.judge, texts + texts, responses["policy"] + responses["reference"])
        unsafe = {"policy": [r["unsafe"] for r in records[: len(texts)]],
                  "reference": [r["unsafe"] for r in records[len(texts) :]]}  # fmt: skip
    fallbacks = {"classifier_fallbacks": {side: sum("refusal_fallback" in d for d in detail[side]) for side in detail}}
    io.write_jsonl(
        Path(run_dir) / REFUSALS,
        (
            {"prompt": p.prompt, "label": p.label, "type": p.type}
            | {side: {"response": responses[side][i], "refused": refused[side][i]} | detail[side][i]
               | ({} if unsafe[side] is None else {"unsafe": unsafe[side][i]})  # type: ignore[index]
               for side in ("policy", "reference")}
            for i, p in enumerate(prompts)
        ),
    )  # fmt: skip
    return {
        "source": str(Path(cfg.path).expanduser().absolute()) if cfg.path else SHIPPED_PROMPTS.name,
        "prompts": len(prompts),
        "max_new_tokens": gen.max_new_tokens,
        "classifier": classifier_name(cfg),
        "classifier_kind": cfg.classifier,
        **(fallbacks if cfg.classifier == "guard" else {}),
        **{
            side: refusal_rates(prompts, refused[side], unsafe[side], ev.seed, resamples=ev.bootstrap)
            for side in ("policy", "reference")
        },
    }


_KIND = {"strmatch": "string-match", "guard": "guard", "classifier": "sequence"}


def _pct(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def format_refusal(block: dict[str, Any]) -> list[str]:
    """The console lines of eval.json's `refusal` block."""
    policy = block["policy"]
    lines = [
        f"refusal ({block['prompts']} prompts of {block['source']}: {policy['safe_prompts']} safe, "
        f"{policy['unsafe_prompts']} unsafe; {_KIND.get(block.get('classifier_kind', 'strmatch'), 'string-match')} "
        "classifier, 95% Wilson CIs)",
        f"  {'model':<10} {'over-refusal (safe)':>24} {'refusal (unsafe)':>24}",
    ]
    for side in ("policy", "reference"):
        m = block[side]
        lines.append(
            f"  {side:<10} {_pct(m['over_refusal_rate'], m['over_refusal_ci']):>24} "
            f"{_pct(m['refusal_rate_unsafe'], m['refusal_rate_unsafe_ci']):>24}"
        )
    return lines
