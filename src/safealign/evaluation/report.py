"""One run's evaluation: load the run, score every dimension, optionally generate and judge,
and write `eval.json`; plus the console table of a report."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import io
from ..bootstrap import PERCENTILE, WILSON
from ..data.loading import Rows
from ..errors import ConfigError, EvaluationError
from ..objectives import Pair
from ..pairs import Filters
from ..rundir import RunDir
from ..settings import EvalSettings, TrainSettings, fill_missing, parse_train
from ..settings.judge_run import judge_kind
from ..settings.runs import is_sft_config
from .dimensions import build_dimensions, load_heldout
from .generation import generate_responses, heldout_prompts
from .judges import judge_responses
from .metrics import dimension_metrics, pair_outcomes, side_cis, side_metrics, win_rate_cis, win_rates
from .refusal_run import REFUSALS, format_refusal, refusal_eval
from .scoring import PolicyModels, load_policy, own_reference, score_units, tokenize_units
from .trl_metrics import eval_metrics

log = logging.getLogger("safealign.evaluation")


RUN_FILES = "config.yaml, status.json and adapter/ (written by recipes/dpo.py)"


def saved_settings(run: RunDir) -> TrainSettings:
    """The checked settings a run trained with, from its `config.yaml`.

    Keys the run's safealign version did not have yet take today's defaults (`fill_missing`,
    from the config the run's recorded overrides compose to now); every key the run saved
    is kept as it was.
    """
    from omegaconf import OmegaConf

    from ..cli import compose

    saved = run.saved_config() or {}
    if isinstance(saved.get("model"), dict) and saved["model"].get("adapter"):
        saved["model"] = {**saved["model"], "adapter": reference_adapter(run, saved["model"]["adapter"])}
    try:
        overrides = [o for o in run.overrides() if not o.lstrip("+~").startswith("hydra")]
        defaults = OmegaConf.to_container(compose("dpo", overrides), resolve=True)
        saved = fill_missing(saved, defaults)
    except Exception:  # no conf/ beside the package, or overrides that no longer compose
        pass
    if isinstance(saved.get("train"), dict) and saved["train"].get("bf16") is True:
        saved["train"]["bf16"] = "auto"  # trained in bf16 elsewhere: evaluate with what this device has
    return parse_train(OmegaConf.create(saved))


# The keys of an SFT run's `train` group that its held-out scoring shares with training (the rest of the
# scoring's DPOConfig, which only tokenizes and batches, is conf/train/default.yaml's).
SFT_SCORING_KEYS = ("max_length", "per_device_eval_batch_size", "bf16", "fp16", "seed")


def sft_settings(run: RunDir) -> TrainSettings:
    """An SFT run's checked settings as its evaluation reads them (`measure: likelihood`).

    The run's config (sft.yaml's groups, today's defaults for keys it lacks) is checked as an SFT
    config; the evaluation then scores its held-out pairs the way a DPO run's are scored, with a
    DPOConfig built from conf/train/default.yaml and the run's own max_length, batch size and
    precision. Its reference is the model it started from, or the base model.
    """
    from omegaconf import OmegaConf

    from ..cli import compose
    from ..settings import parse_sft

    saved = run.saved_config() or {}
    overrides = [o for o in run.overrides() if not o.lstrip("+~").startswith("hydra")]
    with contextlib.suppress(Exception):  # no conf/ beside the package, or overrides that no longer compose
        saved = fill_missing(saved, OmegaConf.to_container(compose("sft", overrides), resolve=True))
    saved.setdefault("eval", None)
    parse_sft(OmegaConf.create({k: v for k, v in saved.items() if k != "eval"}))
    dpo = OmegaConf.to_container(compose("dpo", []), resolve=True)
    train = {**dpo["train"], **{k: saved["train"][k] for k in SFT_SCORING_KEYS if k in saved["train"]}}
    if train.get("bf16") is True:
        train["bf16"] = "auto"  # trained in bf16 elsewhere: evaluate with what this device has
    plain = {**saved, "train": train, "eval": saved["eval"] or dpo["eval"]}
    return parse_train(OmegaConf.create(plain))


def reference_adapter(run: RunDir, start: str) -> str:
    """The reference of a run that started from `model.adapter=start`: the copy of that adapter the run
    holds (`adapter/ref/`, TRL's frozen reference adapter, saved with the trained one), so that the run
    evaluates the same wherever it is evaluated from, and whatever became of the starting run since.

    A run from before that copy falls back to `start` itself, with a warning; a relative `start` (saved
    by safealign before it recorded the absolute path) is taken relative to the directory training ran
    in, where Hydra recorded it (`.hydra/hydra.yaml`), else to the current directory.
    """
    own = own_reference(run.path)
    if own is not None:
        return str(own)
    path = Path(start).expanduser()
    if not path.is_absolute():
        try:
            cwd = ((io.read_yaml(run / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}).get("runtime", {}).get("cwd")
        except Exception:  # no .hydra/ (a run of the Python API), or an unreadable one
            cwd = None
        path = Path(cwd or Path.cwd()) / path
    log.warning("%s: no copy of its starting adapter in %s/ref/ (a run saved by an older safealign); its reference "
                "is model.adapter=%s as that is now: if it changed since training, so do this run's numbers",
                run, RunDir.ADAPTER, path)  # fmt: skip
    return str(path)


def load_run(run_dir: str | Path) -> TrainSettings:
    """The checked settings a finished run trained with; a clear error for anything else.

    The run's config is checked again, so the evaluation uses exactly the template, data,
    model, quantization and DPO settings (β, max_length, truncation_mode) of training.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise EvaluationError(
            f"run_dir={run_dir}: no such directory; expected a training run directory holding {RUN_FILES}"
        )
    state = run.state()
    if state is not None and state != "done":
        error = (run.status() or {}).get("error")
        raise EvaluationError(
            f"run_dir={run_dir}: the run's status is '{state}'{f' ({error})' if error else ''}; only a finished "
            "run (status done) can be evaluated"
        )
    if not (run / RunDir.CONFIG).is_file():
        raise EvaluationError(
            f"run_dir={run_dir}: not a run directory (no config.yaml); expected {RUN_FILES}. "
            "For a sweep, pass the sweep directory or one of its numbered runs."
        )
    try:
        saved = run.saved_config()
    except Exception:  # yaml raises its own error types; saved_settings below says what is wrong
        saved = None
    if judge_kind(saved) is not None:
        raise EvaluationError(
            f"run_dir={run_dir}: that run is a {judge_kind(saved)} model (recipes/reward.py), a judge, not a policy; "
            f"recipes/evaluate.py run_dir={run_dir} evaluates it as a judge, eval.judge.{judge_kind(saved)}.path="
            f"{run_dir} judges a policy with it"
        )
    try:
        settings = sft_settings(run) if isinstance(saved, dict) and is_sft_config(saved) else saved_settings(run)
    except ConfigError as err:
        raise EvaluationError(f"run_dir={run_dir}: its config.yaml does not check: {err}") from err
    adapter = run / RunDir.ADAPTER
    expected = "config.json" if settings.peft.method == "none" else "adapter_config.json"
    if not (adapter / expected).is_file():
        raise EvaluationError(
            f"run_dir={run_dir}: no trained model ({adapter / expected} is missing); expected {RUN_FILES}"
        )
    return settings


def preference_eval(
    models: PolicyModels,
    template: str,
    dpo: Any,
    rows: Rows,
    filters: Filters,
    ev: EvalSettings,
    run_pairs: Sequence[Pair] = (),
    trl_args: Any = None,
    measure: str = "implicit_reward",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Held-out preference accuracy of the loaded policy on each of `ev.dimensions` (`dpo`: the run's
    DPOConfig), each dimension's per-pair outcomes (for `eval_pairs.json`), and TRL's eval metrics
    of `run_pairs` (the run's own test pairs) from the same scoring pass, with the DPOConfig that
    training used (`trl_args`; MODPO trains with β/w), else the run's. `measure`: metrics.MEASURES."""
    dims, units = build_dimensions(rows.rows, filters, ev.dimensions, ev.max_pairs, ev.seed)
    located = [units.add(p.prompt, p.chosen, p.rejected) for p in run_pairs]
    tokenized = tokenize_units(units, template, models.tokenizer, dpo)
    batch_size = ev.batch_size or dpo.per_device_eval_batch_size
    scores = score_units(models, tokenized, dpo, batch_size)
    metrics = {
        name: dimension_metrics(dim, scores, dpo.beta, ev.bootstrap, ev.seed, measure) for name, dim in dims.items()
    }
    outcomes = {name: pair_outcomes(dim, scores, dpo.beta, units, measure) for name, dim in dims.items()}
    return metrics, outcomes, eval_metrics(run_pairs, located, scores, trl_args or dpo) if run_pairs else {}


def generation_eval(
    models: PolicyModels, settings: TrainSettings, rows: Rows, filters: Filters, ev: EvalSettings, run_dir: Path
) -> dict[str, Any]:
    """Generate from held-out prompts with the policy and the reference, judge every response,
    write `generations.jsonl`, and return the harmless rate, mean reward and cost, and win rates."""
    prompts = heldout_prompts(rows, filters, ev.max_prompts, ev.seed)
    texts = [p for p, _ in prompts]
    responses = generate_responses(models, texts, settings.template, ev.generation, ev.seed)
    models.release()  # the judges need the memory
    # Both sides in one pass, so each judge is loaded once.
    records = judge_responses(ev.judge, texts + texts, responses["policy"] + responses["reference"])
    judged = {"policy": records[: len(texts)], "reference": records[len(texts) :]}
    io.write_jsonl(
        RunDir(run_dir) / RunDir.GENERATIONS,
        (
            {"prompt": p, "categories": list(cats), "policy": judged["policy"][i], "reference": judged["reference"][i]}
            for i, (p, cats) in enumerate(prompts)
        ),
    )
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, (_, cats) in enumerate(prompts):
        for c in cats:
            by_category[c].append(i)
    judges = {role: getattr(ev.judge, role).path for role in ("reward", "cost", "guard")}
    if not any(judges.values()):
        log.warning("eval.generate=true without a judge: generations are saved, but not scored")
    return {
        "prompts": len(prompts),
        "judges": judges,
        "generation": dataclasses.asdict(ev.generation),
        "policy": {**side_metrics(judged["policy"]), **side_cis(judged["policy"], ev.bootstrap, ev.seed)},
        "reference": {**side_metrics(judged["reference"]), **side_cis(judged["reference"], ev.bootstrap, ev.seed)},
        "win_rate": win_rates(judged["policy"], judged["reference"], ev.judge),
        "win_rate_ci": win_rate_cis(judged["policy"], judged["reference"], ev.judge),
        "ci": {"level": 0.95, "method": f"rates: {WILSON} score interval; mean reward and cost: {PERCENTILE} over "
               "prompts", "resamples": ev.bootstrap, "seed": ev.seed},
        "by_category": {
            c: {
                "prompts": len(idx),
                "policy": side_metrics([judged["policy"][i] for i in idx]),
                "reference": side_metrics([judged["reference"][i] for i in idx]),
                "win_rate": win_rates(
                    [judged["policy"][i] for i in idx], [judged["reference"][i] for i in idx], ev.judge
                ),
            }
            for c, idx in sorted(by_category.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
    }


def evaluate_run(
    run_dir: str | Path,
    ev: EvalSettings,
    models: PolicyModels | None = None,
    run_pairs: Sequence[Pair] = (),
    trl_args: Any = None,
) -> dict[str, Any]:
    """Evaluate one finished run and write `RUN_DIR/eval.json` (and `generations.jsonl`); returns the report.

    `models`: the policy already in memory at the end of training (it is used as it is, not
    reloaded from the saved adapter); `run_pairs` (and `trl_args`, training's DPOConfig): the
    run's test pairs, whose TRL eval
    metrics then come from the same scoring pass (the report's `trl_eval`).
    """
    run = RunDir(run_dir)
    settings = load_run(run.path)
    measure = "likelihood" if is_sft_config(run.saved_config() or {}) else "implicit_reward"

    from ..trainer import dpo_config

    dpo = dpo_config(settings.train, run / RunDir.CHECKPOINTS)
    rows, filters = load_heldout(settings, ev)
    start = time.perf_counter()
    owned = models is None
    models = load_policy(run.path, settings) if models is None else models
    dimensions, pairs, trl_eval = preference_eval(
        models, settings.template, dpo, rows, filters, ev, run_pairs, trl_args, measure
    )
    report: dict[str, Any] = {
        "run_dir": str(run),
        "objective": settings.objective,
        "recipe": "sft" if measure == "likelihood" else "dpo",
        "measure": measure,
        "template": settings.template,
        "beta": dpo.beta if measure == "implicit_reward" else None,
        "max_length": dpo.max_length,
        "truncation_mode": dpo.truncation_mode,
        "data": {"source": rows.source, "rows": len(rows.rows), "dropped": dict(rows.dropped)},
        "dimensions": dimensions,
        # before generation_eval, which frees the policy (and the trainer's hold on it) for its judges
        "refusal": refusal_eval(models, settings, ev, run.path, not ev.generate)
        if ev.refusal.enabled
        else None,
        "generation": generation_eval(models, settings, rows, filters, ev, run.path) if ev.generate else None,
        "settings": dataclasses.asdict(ev),
    }
    report["seconds"] = time.perf_counter() - start
    if owned:
        models.release()
    io.write_json(run / RunDir.EVAL_PAIRS, {"dimensions": pairs})
    io.write_json(run / RunDir.EVAL, report)
    written = [run / RunDir.EVAL, run / RunDir.EVAL_PAIRS] + ([run / RunDir.GENERATIONS] if ev.generate else [])
    written += [run / REFUSALS] if ev.refusal.enabled else []
    log.info("%s\n%s\nwrote %s", run, format_report(report), ", ".join(map(str, written)))
    if trl_eval:
        report["trl_eval"] = trl_eval  # returned to training for metrics.json, not part of eval.json
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(d: Mapping[str, Any]) -> str:
    """`[0.682, 0.873]`, or `-` for a report written before CIs (or a dimension without pairs)."""
    low, high = d.get("ci_low"), d.get("ci_high")
    return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def format_report(report: Mapping[str, Any]) -> str:
    """The console table of an eval.json report."""
    source = f"{report['data']['source']}, {report['data']['rows']} rows"
    if report.get("measure") == "likelihood":
        head = (f"held-out preference accuracy of an SFT run ({source}; SFT on objective {report['objective']}'s "
                "chosen responses). accuracy: length-normalised log-likelihood higher for chosen (ties 1/2; not a DPO "
                "run's implicit-reward accuracy); reference: the same for the model it started from")  # fmt: skip
    else:
        head = (f"held-out preference accuracy ({source}; objective {report['objective']}, beta {report['beta']}). "
                "accuracy: implicit reward β·log(π/π_ref) higher for chosen (ties 1/2); reference: length-normalised "
                "reference log-likelihood")  # fmt: skip
    lines = [
        head,
        f"  {'dimension':<16} {'pairs':>6} {'accuracy':>9} {'95% CI':>15} {'margin':>8} {'reference':>10}"
        + (f" {'log(π/π_start)':>15}" if report.get("measure") == "likelihood" else ""),
    ]
    for name, d in report["dimensions"].items():
        implicit = d.get("implicit_reward_vs_start")
        lines.append(
            f"  {name:<16} {d['pairs']:>6} {_fmt(d['accuracy']):>9} {_ci(d):>15} {_fmt(d['margin']):>8} "
            f"{_fmt(d['reference_accuracy']):>10}" + (f" {_fmt(implicit['accuracy']):>15}" if implicit else "")
        )
    if report.get("measure") == "likelihood":
        lines.append("  log(π/π_start): the implicit-reward accuracy against the model the SFT started from")
    gen = report.get("generation")
    if gen:
        lines.append(
            f"generation ({gen['prompts']} prompts; judges: "
            f"{', '.join(f'{k}={v}' for k, v in gen['judges'].items() if v) or 'none'})"
        )
        lines.append(f"  {'model':<10} {'harmless':>9} {'reward':>8} {'cost':>8}")
        for side in ("policy", "reference"):
            m = gen[side]
            lines.append(
                f"  {side:<10} {_fmt(m['harmless_rate']):>9} {_fmt(m.get('mean_reward')):>8} "
                f"{_fmt(m.get('mean_cost')):>8}"
            )
        wins = ", ".join(f"{k} {_fmt(v)}" for k, v in gen["win_rate"].items())
        lines.append(f"  policy win rate over reference: {wins or '-'}")
    if report.get("refusal"):
        lines += format_refusal(report["refusal"])
    return "\n".join(lines)


