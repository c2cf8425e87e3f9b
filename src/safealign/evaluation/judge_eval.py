"""The held-out evaluation of a judge run (`recipes/reward.py`): eval.json for a reward or cost model.

Why its own: a judge is not a policy. It has no implicit reward and generates nothing; what
matters is whether its score orders the held-out pairs and, for a cost model, whether its
sign says safe or unsafe. eval.json then holds, on the run's held-out split:

- `dimensions`: pairwise accuracy on every `eval.dimensions` (its own, `helpful` for a reward
  model and `harmless` for a cost model, and the others for information), in the same form as
  a policy's (Wilson 95% interval, by category and rejected level), so that `compare.py`
  reads both. A pair counts as right when the judge prefers its chosen response (a higher
  reward; a lower cost, so `chosen_reward` there is −cost). `reference_accuracy` is the same
  baseline as a policy's: the base model's length-normalised log-likelihood.
- `safety_sign` (a cost model): the share of held-out responses with `cost > 0` exactly when
  the data labels them unsafe, with its Wilson interval, the confusion counts, the share of the
  majority label (what a constant answer would get) and a breakdown by harm category.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import io
from ..bootstrap import LEVEL, WILSON, rate_ci
from ..errors import EvaluationError, NoHeldOutError
from ..pairs import Filters, categories_of
from ..rundir import RunDir
from ..settings import EvalSettings, load_judge_settings
from ..settings.judge_run import JUDGE_OBJECTIVES, judge_kind, template_format, unfinished
from .dimensions import NO_CATEGORY, Units, build_dimensions, load_heldout
from .metrics import Scored, scored_metrics, scored_outcomes

log = logging.getLogger("safealign.evaluation")


def after_judge_training(run_dir: str | Path, ev: EvalSettings, loaded: tuple[Any, Any]) -> dict[str, Any] | None:
    """What a judge run calls once it is marked done: `evaluate_judge_run` on the model still in memory
    (`loaded`: tokenizer, model) when `eval.after_train`; None where there is no held-out split."""
    if not ev.after_train:
        return None
    try:
        return evaluate_judge_run(run_dir, ev, loaded)
    except NoHeldOutError as err:
        log.info("no held-out evaluation: %s", err)
        return None


def load_judge_run(run_dir: str | Path) -> Any:
    """The checked settings of a finished judge run; a clear error for anything else."""
    problem = unfinished(Path(run_dir))
    if problem:
        raise EvaluationError(f"run_dir={run_dir}: {problem}")
    return load_judge_settings(Path(run_dir))


def evaluate_judge_run(run_dir: str | Path, ev: EvalSettings, loaded: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Evaluate one finished judge run on its held-out split; writes RUN_DIR/eval.json and eval_pairs.json."""
    from .judges import classifier_scores
    from .judges import load_judge_run as load_judge_model
    from .scoring import release_memory

    run = RunDir(run_dir)
    settings = load_judge_run(run.path)
    kind = settings.judge
    if ev.generate or ev.refusal.enabled:
        raise EvaluationError(
            f"run_dir={run_dir}: that run is a {kind} model (a judge): it generates nothing, so eval.generate and "
            f"eval.refusal.enabled do not apply; evaluate a policy with it: eval.judge.{kind}.path={run_dir}"
        )
    start = time.perf_counter()
    rows, filters = load_heldout(settings, ev)
    dims, units = build_dimensions(rows.rows, filters, ev.dimensions, ev.max_pairs, ev.seed)
    labelled = labelled_responses(rows.rows, filters, ev) if kind == "cost" else []
    fmt = template_format(settings.template)
    texts = sorted({*((p, r) for p, a, b in units.keys for r in (a, b)), *((p, r) for p, r, _, _ in labelled)})
    tokenizer, model = loaded if loaded is not None else load_judge_model(run.path)
    batch_size = ev.batch_size or settings.train.get("per_device_eval_batch_size", 8)
    raw = classifier_scores(tokenizer, model, [fmt.format(prompt=p, response=r) for p, r in texts], batch_size,
                            settings.train["max_length"], append_eos=True)  # fmt: skip
    score = dict(zip(texts, raw, strict=True))
    if loaded is None:
        del model
        release_memory()
    baseline = likelihood_baseline(settings, units, batch_size)
    sign = -1.0 if kind == "cost" else 1.0  # a pair is right when the judge prefers its chosen response
    dimensions, outcomes = {}, {}
    for name, dim in dims.items():
        scored = []
        for p in dim.pairs:
            prompt, *responses = units.keys[p.unit]
            c, r = responses[p.chosen_side], responses[1 - p.chosen_side]
            ref, tokens = baseline.get(p.unit, ((0.0, 0.0), (1, 1)))
            normalised = [ref[k] / max(tokens[k], 1) for k in (0, 1)]
            scored.append((p, Scored(sign * score[(prompt, c)], sign * score[(prompt, r)],
                                     normalised[p.chosen_side] - normalised[1 - p.chosen_side])))  # fmt: skip
        dimensions[name] = scored_metrics(dim, scored)
        outcomes[name] = scored_outcomes(scored, units)
    report: dict[str, Any] = {
        "run_dir": str(run),
        "judge": kind,
        "objective": JUDGE_OBJECTIVES[kind],
        "template": settings.template,
        "max_length": settings.train["max_length"],
        "score": "reward: higher is more helpful" if kind == "reward" else "cost: > 0 is unsafe",
        "data": {"source": rows.source, "rows": len(rows.rows), "dropped": dict(rows.dropped)},
        "dimensions": dimensions,
        "safety_sign": sign_metrics([(score[(p, r)], safe, cats) for p, r, safe, cats in labelled]) if labelled
        else None,
        "settings": dataclasses.asdict(ev),
        "seconds": time.perf_counter() - start,
    }
    io.write_json(run / RunDir.EVAL_PAIRS, {"dimensions": outcomes})
    io.write_json(run / RunDir.EVAL, report)
    log.info("%s\n%s\nwrote %s, %s", run, format_judge_report(report), run / RunDir.EVAL, run / RunDir.EVAL_PAIRS)
    return report


def labelled_responses(rows: Sequence[Mapping[str, Any]], filters: Filters, ev: EvalSettings) -> list[tuple]:
    """The distinct held-out (prompt, response, is safe, categories) the filters keep, at most 2 × eval.max_pairs
    (a seeded random subset): the responses whose safety sign a cost model is checked on."""
    seen: dict[tuple[str, str], tuple] = {}
    for row in rows:
        if filters.reason(row) is not None:
            continue
        cats = tuple(sorted(categories_of(row))) or (NO_CATEGORY,)
        for k in (0, 1):
            seen.setdefault((row["prompt"], row[f"response_{k}"]), (bool(row[f"is_response_{k}_safe"]), cats))
    out = [(p, r, safe, cats) for (p, r), (safe, cats) in seen.items()]
    limit = None if ev.max_pairs is None else 2 * ev.max_pairs
    if limit is not None and len(out) > limit:
        out = [out[i] for i in sorted(random.Random(f"{ev.seed}:safety_sign").sample(range(len(out)), limit))]
    return out


def sign_metrics(items: Sequence[tuple[float, bool, Sequence[str]]]) -> dict[str, Any]:
    """Safety-sign accuracy of (cost, is safe, categories): right when cost > 0 exactly for the unsafe ones."""
    right = [(cost > 0) == (not safe) for cost, safe, _ in items]
    counts = {
        "unsafe_flagged": sum(cost > 0 and not safe for cost, safe, _ in items),  # true positives
        "unsafe_missed": sum(cost <= 0 and not safe for cost, safe, _ in items),  # false negatives
        "safe_flagged": sum(cost > 0 and safe for cost, safe, _ in items),  # false positives
        "safe_passed": sum(cost <= 0 and safe for cost, safe, _ in items),  # true negatives
    }
    unsafe = sum(not safe for _, safe, _ in items)
    by_category: dict[str, list[bool]] = defaultdict(list)
    for ok, (_, _, cats) in zip(right, items, strict=True):
        for c in cats:
            by_category[c].append(ok)
    low, high = rate_ci(right) or [None, None]
    return {
        "responses": len(items),
        "accuracy": sum(right) / len(right),
        "ci_low": low,
        "ci_high": high,
        "ci_level": LEVEL,
        "ci_method": WILSON,
        "majority_baseline": max(unsafe, len(items) - unsafe) / len(items),
        "confusion": counts,
        "by_category": {
            c: {"responses": len(v), "accuracy": sum(v) / len(v)}
            for c, v in sorted(by_category.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
    }


def likelihood_baseline(settings: Any, units: Units, batch_size: int) -> dict[int, tuple]:
    """unit -> ((log-likelihood side 0, side 1), (tokens side 0, side 1)) under the base causal LM, quantized
    as the judge was: the reference baseline that a policy's evaluation reports (`reference_accuracy`)."""
    from ..modeling import load_model
    from ..trainer import dpo_config
    from ..trl_compat import add_fused_lm_head
    from .scoring import PolicyModels, place, release_memory, score_units, tokenize_units

    if not units.keys:
        return {}
    dpo = dpo_config({"max_length": settings.train["max_length"], "per_device_eval_batch_size": batch_size,
                      "report_to": "none"}, Path(settings.model.name_or_path) / "unused")  # fmt: skip
    loaded = load_model(settings.model, settings.quant, settings.peft, reference=False)
    add_fused_lm_head(loaded.model)
    base = place(loaded.model)
    models = PolicyModels(base, loaded.tokenizer, reference_model=base)
    scores = score_units(models, tokenize_units(units, settings.template, loaded.tokenizer, dpo), dpo, batch_size)
    models.policy = models.reference_model = None
    release_memory()
    return {unit: (reference, tokens) for unit, (_, reference, tokens) in scores.items()}


def format_judge_report(report: Mapping[str, Any]) -> str:
    """The console table of a judge run's eval.json."""

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    head = (f"held-out evaluation of a {report['judge']} model ({report['data']['source']}, {report['data']['rows']} "
            "rows): pairwise accuracy (the judge prefers the chosen response); reference: length-normalised "
            "base-model log-likelihood")
    lines = [head, f"  {'dimension':<16} {'pairs':>6} {'accuracy':>9} {'95% CI':>17} {'reference':>10}"]
    for name, d in report["dimensions"].items():
        ci = f"[{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]"
        ref = fmt(d["reference_accuracy"])
        lines.append(f"  {name:<16} {d['pairs']:>6} {fmt(d['accuracy']):>9} {ci:>17} {ref:>10}")
    sign = report.get("safety_sign")
    if sign:
        c = sign["confusion"]
        lines.append(f"safety sign (cost > 0 = unsafe) on {sign['responses']} responses: accuracy "
                     f"{fmt(sign['accuracy'])} [{fmt(sign['ci_low'])}, {fmt(sign['ci_high'])}], majority label "
                     f"{fmt(sign['majority_baseline'])}; unsafe flagged {c['unsafe_flagged']}, missed "
                     f"{c['unsafe_missed']}; safe flagged {c['safe_flagged']}, passed {c['safe_passed']}")  # fmt: skip
    return "\n".join(lines)


def is_judge_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a judge run of recipes/reward.py (its config.yaml says judge: reward|cost)."""
    from ..settings.judge_run import read_config

    return judge_kind(read_config(Path(run_dir))) is not None
