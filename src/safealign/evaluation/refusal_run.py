"""The refusal evaluation of a trained run: the `refusal` block of eval.json and RUN_DIR/refusals.jsonl.

The classifier, the prompt sets and the rates are in `refusal` (light: no model, no torch);
this module generates the responses they classify.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .refusal import SHIPPED_PROMPTS, is_refusal, load_refusal_prompts, refusal_rates

if TYPE_CHECKING:
    from ..settings import EvalSettings, TrainSettings
    from .scoring import PolicyModels

REFUSALS = "refusals.jsonl"  # in the run directory: every prompt with both sides' responses


def refusal_eval(
    models: PolicyModels, settings: TrainSettings, ev: EvalSettings, run_dir: str | Path, release: bool
) -> dict[str, Any]:
    """The `refusal` block of eval.json: the policy and the reference (adapter disabled) answer every
    prompt of `eval.refusal.path` with the run's template and `eval.generation` settings (but
    `eval.refusal.max_new_tokens`: a refusal shows in the opening words), and each
    response is classified by `is_refusal` (and judged, when `eval.judge` names a judge).

    With `release`, the policy is freed before the judges load (nothing generates after this).
    Writes RUN_DIR/refusals.jsonl.
    """
    import dataclasses

    from .. import io
    from .generation import generate_responses
    from .judges import any_judge, judge_responses
    from .scoring import release_memory

    cfg = ev.refusal
    prompts = load_refusal_prompts(cfg.path, cfg.max_prompts, ev.seed)
    gen = ev.generation
    if cfg.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=cfg.max_new_tokens)
    texts = [p.prompt for p in prompts]
    responses = generate_responses(models, texts, settings.template, gen, ev.seed)
    refused = {side: [is_refusal(r) for r in responses[side]] for side in ("policy", "reference")}
    unsafe: dict[str, list[bool | None] | None] = {"policy": None, "reference": None}
    if any_judge(ev.judge):
        if release:
            models.policy = models.reference_model = None
            release_memory()
        records = judge_responses(ev.judge, texts + texts, responses["policy"] + responses["reference"])
        unsafe = {"policy": [r["unsafe"] for r in records[: len(texts)]],
                  "reference": [r["unsafe"] for r in records[len(texts) :]]}  # fmt: skip
    io.write_jsonl(
        Path(run_dir) / REFUSALS,
        (
            {"prompt": p.prompt, "label": p.label, "type": p.type}
            | {side: {"response": responses[side][i], "refused": refused[side][i]}
               | ({} if unsafe[side] is None else {"unsafe": unsafe[side][i]})  # type: ignore[index]
               for side in ("policy", "reference")}
            for i, p in enumerate(prompts)
        ),
    )  # fmt: skip
    return {
        "source": str(cfg.path or SHIPPED_PROMPTS.name),
        "prompts": len(prompts),
        "max_new_tokens": gen.max_new_tokens,
        "classifier": "string match (safealign.evaluation.refusal.is_refusal)",
        **{
            side: refusal_rates(prompts, refused[side], unsafe[side], ev.seed, resamples=ev.bootstrap)
            for side in ("policy", "reference")
        },
    }


def _pct(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def format_refusal(block: dict[str, Any]) -> list[str]:
    """The console lines of eval.json's `refusal` block."""
    policy = block["policy"]
    lines = [
        f"refusal ({block['prompts']} prompts of {block['source']}: {policy['safe_prompts']} safe, "
        f"{policy['unsafe_prompts']} unsafe; string-match classifier, 95% bootstrap CIs)",
        f"  {'model':<10} {'over-refusal (safe)':>24} {'refusal (unsafe)':>24}",
    ]
    for side in ("policy", "reference"):
        m = block[side]
        lines.append(
            f"  {side:<10} {_pct(m['over_refusal_rate'], m['over_refusal_ci']):>24} "
            f"{_pct(m['refusal_rate_unsafe'], m['refusal_rate_unsafe_ci']):>24}"
        )
    return lines
