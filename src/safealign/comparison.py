"""Compare the runs of a sweep: one table row per run, the helpful/harmless trade-off, training curves.

Why: a sweep over objectives (`recipes/dpo.py -m objective=helpful,harmless,multilevel`) is
only useful once its runs sit side by side on the same held-out dimensions (`eval.json`,
written by `safealign.evaluation`). Runs that failed or were never evaluated are listed as
such, never dropped, so a table with fewer good runs than expected says why. Tables are
pandas DataFrames (CSV, and Markdown through `tabulate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import io
from .jobs.merge import MERGE_FILE
from .rundir import RunDir, sweep_runs
from .settings import DIMENSIONS
from .settings.judge_run import judge_kind
from .settings.runs import SFT_ONLY_KEYS, is_sft_config
from .summary import (
    RunSummary,
    configurations,
    find_baseline,
    fmt_cell,
    override_key,
    summary_markdown,
    summary_table,
)

log = logging.getLogger("safealign")


def read_run(run: RunDir) -> RunSummary:
    """One run's status, objective, overrides, train metrics and eval.json, as far as they exist."""
    status = run.status() or {}
    summary = RunSummary(run.name, run.path, run.state() or "unknown (no status.json)", status.get("error"))
    try:
        cfg = run.saved_config() or {}
    except Exception:  # unreadable YAML: the table says what it can without it
        cfg = {}
    summary.objective = (cfg.get("objective") or {}).get("name") if isinstance(cfg, dict) else None
    summary.judge = judge_kind(cfg)
    if summary.judge is not None:  # a judge run: its kind stands where a policy's objective does
        summary.objective = f"judge={summary.judge}"
    merged = run.read_json(MERGE_FILE)
    if summary.judge is not None:
        summary.recipe = "reward"
    elif isinstance(merged, dict) and isinstance(merged.get("runs"), list):  # its config's objective is a default
        summary.objective = f"merge ({', '.join(dict.fromkeys(_objective_of(p) for p in merged['runs']))})"
        summary.recipe = "merge"
    try:
        summary.overrides = [o for o in _resolved_paths(run.overrides(), cfg) if override_key(o) not in HOW_STARTED]
    except Exception:
        summary.overrides = []
    train = cfg.get("train") if isinstance(cfg, dict) else None
    summary.seed = train.get("seed") if isinstance(train, dict) else None
    if summary.objective is None:  # a run that failed before it saved its config
        summary.objective = next((o.split("=", 1)[1] for o in summary.overrides if o.startswith("objective=")), None)
    metrics = run.read_json(RunDir.METRICS)
    metrics = metrics if isinstance(metrics, dict) else {}
    summary.train_loss = (metrics.get("train") or {}).get("train_loss")
    summary.train_seconds = metrics.get("train_seconds")
    summary.global_step = metrics.get("global_step")
    summary.log_history = metrics.get("log_history") or []
    evaluation = run.read_json(RunDir.EVAL)
    # A failed or unfinished run's eval.json is a previous attempt's: its numbers are not this run's.
    summary.evaluation = evaluation if isinstance(evaluation, dict) and summary.status == "done" else None
    if summary.recipe == "dpo" and _is_sft(cfg, evaluation):  # SFT on the objective's chosen responses
        summary.objective, summary.recipe = f"sft ({summary.objective})", "sft"
    return summary


def _is_sft(cfg: Any, evaluation: Any) -> bool:
    """An SFT run: its evaluation says so (`measure: likelihood`), or its config has SFTConfig's own keys.
    Not `settings.runs.is_sft_config` alone: a config with neither DPO's nor SFT's own keys (a run saved by
    hand, or by a much older safealign) is a DPO run here, as it always was."""
    if isinstance(evaluation, dict) and evaluation.get("measure") == "likelihood":
        return True
    train = cfg.get("train") if isinstance(cfg, dict) else None
    return isinstance(train, dict) and is_sft_config(cfg) and any(k in train for k in SFT_ONLY_KEYS)


def _objective_of(path: str) -> str:
    """The objective a merged run's source run trained ('?' when its config cannot be read)."""
    try:
        cfg = RunDir(path).saved_config() or {}
        return str((cfg.get("objective") or {}).get("name") or "?")
    except Exception:
        return "?"


# Overrides that decide how a run started (resumed, overwritten), not what it is: never a column or a group.
HOW_STARTED = ("train.resume", "train.overwrite", "overwrite")

# Overrides that name a file or directory: given relative to wherever the command ran, so two runs with
# the same text may read different things (and the same thing under different texts).
PATH_KEYS = ("model.adapter", "objective.margin_run", "data.path", "data.test_path")


def _resolved_paths(overrides: list[str], cfg: Any) -> list[str]:
    """`overrides` with each path-valued one (`PATH_KEYS`) given the value the run used (its config.yaml's,
    absolute), so that runs are grouped and labelled by what they read, not by how it was typed."""
    out = []
    for override in overrides:
        key = override_key(override)
        node: Any = cfg if key in PATH_KEYS and "=" in override else None
        for part in key.split(".") if node is not None else ():
            node = node.get(part) if isinstance(node, dict) else None
        out.append(f"{override.split('=', 1)[0]}={node}" if isinstance(node, str) else override)
    return out


def collect(sweep_dir: str | Path) -> list[RunSummary]:
    """Every run of the sweep, with `varied` set to the overrides whose value differs between runs."""
    summaries = [read_run(run) for run in sweep_runs(sweep_dir)]
    values: dict[str, set[str | None]] = {}
    for run in summaries:
        given = {override_key(o): o for o in run.overrides}
        for key in {k for r in summaries for k in map(override_key, r.overrides)}:
            values.setdefault(key, set()).add(given.get(key))
    varied = {k for k, v in values.items() if len(v) > 1 and k not in ("objective", "objective.name")}
    for run in summaries:
        run.varied = [o for o in run.overrides if override_key(o) in varied]
    return summaries


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def table(summaries: Sequence[RunSummary]) -> Any:
    """One row per run: a column per dimension's accuracy and margin, the training loss and wall time."""
    import pandas as pd

    rows = []
    for run in summaries:
        row: dict[str, Any] = {
            "run": run.name,
            "status": run.state,
            "objective": run.objective,
            "recipe": run.recipe,
            "overrides": " ".join(run.varied),
            # what `accuracy` compares: a policy's implicit reward, an SFT model's likelihood, a judge's score
            "measure": (run.evaluation or {}).get("measure", "judge" if run.judge else "implicit_reward")
            if run.evaluation
            else None,
            "train_loss": run.train_loss,
            "train_seconds": run.train_seconds,
        }
        for dim in DIMENSIONS:
            row[f"{dim}_accuracy"] = run.accuracy(dim)
            row[f"{dim}_margin"] = run.margin(dim)
        sign = (run.evaluation or {}).get("safety_sign") or {}  # a cost model's own columns
        row |= {"judge": run.judge, "sign_accuracy": sign.get("accuracy"), "sign_ci_low": sign.get("ci_low"),
                "sign_ci_high": sign.get("ci_high")}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _reference_row(summaries: Sequence[RunSummary]) -> dict[str, float] | None:
    """The reference model's baseline accuracies, when every evaluated run reports the same ones
    (same base model and held-out pairs), so one row can stand for all."""
    seen = []
    for run in summaries:
        if run.evaluation:
            dims = run.evaluation.get("dimensions", {})
            seen.append({d: (dims.get(d) or {}).get("reference_accuracy") for d in DIMENSIONS})
    if not seen or any(s != seen[0] for s in seen):
        return None
    return seen[0]


def to_markdown(summaries: Sequence[RunSummary], df: Any) -> str:
    """The comparison as a Markdown table (accuracy / margin per dimension), with a legend."""
    import pandas as pd

    shown = []
    for row in df.to_dict("records"):
        cells = {
            "run": row["run"],
            "objective": fmt_cell(row["objective"], 0),
            "overrides": fmt_cell(row["overrides"], 0),
        }
        for d in DIMENSIONS:
            acc, margin = row[f"{d}_accuracy"], row[f"{d}_margin"]
            cells[f"{d} acc / margin"] = "-" if fmt_cell(acc, 3) == "-" else f"{acc:.3f} / {fmt_cell(margin, 2)}"
        cells |= {"train loss": fmt_cell(row["train_loss"], 3), "time (s)": fmt_cell(row["train_seconds"], 0),
                  "status": fmt_cell(row["status"], 0)}  # fmt: skip
        shown.append(cells)
    reference = _reference_row(summaries)
    if reference:
        shown.append({"run": "ref", "objective": "(reference)", "overrides": "-",
                      **{f"{d} acc / margin": fmt_cell(reference[d], 3) for d in DIMENSIONS},
                      "train loss": "-", "time (s)": "-", "status": "baseline"})  # fmt: skip
    align = ["left"] * 3 + ["right"] * (len(DIMENSIONS) + 2) + ["left"]
    text = pd.DataFrame(shown).to_markdown(index=False, colalign=align, disable_numparse=True)
    legend = (
        "acc: held-out preference accuracy, the fraction of pairs whose implicit reward β·log(π/π_ref) is higher "
        "for the chosen response (ties count 1/2; 0.5 before training). margin: the mean reward margin "
        "(chosen − rejected)."
        + (" ref: the reference model alone, scoring responses by length-normalised log-likelihood." if reference
           else "")
        + (" sft rows: an SFT run has no reference to measure an implicit reward against; its acc is the "
           "length-normalised log-likelihood accuracy of the SFT model itself (eval.json `measure: likelihood`), "
           "and its margin the mean per-token log-likelihood difference: not the same quantity as a DPO row's."
           if any(r.recipe == "sft" for r in summaries) else "")
    )  # fmt: skip
    judges = judge_markdown(summaries)
    return f"{text}\n\n{legend}\n" + (f"\n{judges}" if judges else "")


# Each judge's own dimension: a reward model orders helpful pairs, a cost model harmless ones.
OWN_DIMENSION = {"reward": "helpful", "cost": "harmless"}


def judge_markdown(summaries: Sequence[RunSummary]) -> str:
    """The judge runs (recipes/reward.py) in a table of their own: pairwise accuracy on the judge's own dimension
    with its CI and the likelihood baseline, and for a cost model the safety-sign accuracy and confusion counts."""
    import pandas as pd

    def interval(d: dict[str, Any], key: str = "accuracy") -> str:
        if d.get(key) is None:
            return "-"
        low, high = d.get("ci_low"), d.get("ci_high")
        return f"{d[key]:.3f}" + ("" if low is None or high is None else f" [{low:.3f}, {high:.3f}]")

    rows = []
    for run in summaries:
        if run.judge is None:
            continue
        own = OWN_DIMENSION[run.judge]
        dims = (run.evaluation or {}).get("dimensions") or {}
        d, sign = dims.get(own) or {}, (run.evaluation or {}).get("safety_sign") or {}
        c = sign.get("confusion") or {}
        rows.append({"run": run.name, "judge": run.judge, "overrides": fmt_cell(" ".join(run.varied), 0),
                     "own dimension": own, "accuracy [95% CI]": interval(d),
                     "reference": fmt_cell(d.get("reference_accuracy"), 3),
                     "sign accuracy [95% CI]": interval(sign) if sign else "-",
                     "unsafe flagged / missed": f"{c['unsafe_flagged']} / {c['unsafe_missed']}" if c else "-",
                     "safe flagged / passed": f"{c['safe_flagged']} / {c['safe_passed']}" if c else "-",
                     "status": fmt_cell(run.state, 0)})  # fmt: skip
    if not rows:
        return ""
    text = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    return (f"Judges\n\n{text}\n\nA judge's accuracy: the share of held-out pairs whose chosen response it prefers "
            "(a higher reward, a lower cost). sign accuracy: the share of responses with cost > 0 exactly when "
            "labelled unsafe. reference: the base model's length-normalised log-likelihood.\n")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (higher is better), sorted by x."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


def _save_figure(fig: Any, path: Path) -> None:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


def _error(row: dict[str, Any], dim: str) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar ([below], [above]) from the CI columns; None without a CI.

    The intervals of summary.csv contain their accuracy by construction; each length is still
    clipped at 0 (matplotlib refuses a negative length), for a summary.csv written by an older
    version. A NaN bound (a diverged run) draws no bar on that side."""
    acc, low, high = row[f"{dim}_accuracy"], row[f"{dim}_ci_low"], row[f"{dim}_ci_high"]
    if low is None or high is None:
        return None
    return [[max(0.0, acc - low)], [max(0.0, high - acc)]]  # max(0.0, nan) is 0.0


def plot_tradeoff(rows: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> None:
    """Helpful vs harmless held-out accuracy, one labelled point per configuration (mean over its
    seeds, with 95% CI error bars when known), with the Pareto front of the means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    names: dict[tuple[float, float], list[str]] = {}  # configurations at the same point share one label
    for row, label in zip(rows, labels, strict=True):
        x, y = row["helpful_accuracy"], row["harmless_accuracy"]
        if x is None or y is None:
            continue
        names.setdefault((x, y), []).append(label)
        ax.errorbar(
            [x], [y], xerr=_error(row, "helpful"), yerr=_error(row, "harmless"), fmt="o", ms=7, capsize=3, zorder=3
        )
    points = list(names)
    for (x, y), labelled in names.items():
        ax.annotate("\n".join(labelled), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), "--", color="gray", zorder=2, label="Pareto front (means)")
    elif front:
        ax.scatter(*zip(*front, strict=True), s=160, facecolors="none", edgecolors="gray", label="Pareto front")
    ax.axhline(0.5, color="lightgray", lw=1, zorder=1)
    ax.axvline(0.5, color="lightgray", lw=1, zorder=1)
    ax.scatter([0.5], [0.5], marker="x", color="gray", label="before training (policy = reference)")
    lows = [r[f"{d}_ci_low"] if r[f"{d}_ci_low"] is not None else r[f"{d}_accuracy"]
            for r in rows for d in ("helpful", "harmless") if r[f"{d}_accuracy"] is not None]  # fmt: skip
    lo = min([0.4] + [v - 0.05 for v in lows])
    ax.set_xlim(lo, 1.02)
    ax.set_ylim(lo, 1.02)
    ax.set_xlabel("helpful accuracy (held-out)")
    ax.set_ylabel("harmless accuracy (held-out)")
    ax.set_title("Held-out preference accuracy by configuration (mean over seeds, 95% CI)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def plot_curves(summaries: Sequence[RunSummary], path: Path) -> None:
    """Training loss and reward accuracy over steps, one line per run (from metrics.json log_history)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in summaries:
        logs = [h for h in run.log_history if "loss" in h and "step" in h]
        if not logs:
            continue
        steps = [h["step"] for h in logs]
        axes[0].plot(steps, [h["loss"] for h in logs], marker="o", ms=3, label=f"{run.name}: {run.label}")
        accuracy = [(h["step"], h["rewards/accuracies"]) for h in logs if "rewards/accuracies" in h]
        if accuracy:
            axes[1].plot(*zip(*accuracy, strict=True), marker="o", ms=3, label=f"{run.name}: {run.label}")
    axes[0].set_title("training loss")
    axes[1].set_title("training reward accuracy (own objective; margins included)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    if any(ax.lines for ax in axes):
        axes[0].legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Putting it together
# ----------------------------------------------------------------------------------------------

COMPARISON_FILES = ("comparison.csv", "comparison.md", "summary.csv", "summary.md", "comparison.png", "curves.png")


def compare(
    sweep_dir: str | Path, baseline: str | None = None, resamples: int = 1000, seed: int = 0
) -> list[RunSummary]:
    """Write COMPARISON_FILES in `sweep_dir`: one row per run (comparison.*), one per configuration
    with 95% CIs, and differences from `baseline` when given (summary.*), and the plots.
    `resamples` and `seed` (compare.bootstrap, compare.seed) no longer change anything: every
    interval is a closed-form score interval (docs/evaluation.md "Confidence intervals")."""
    sweep_dir = Path(sweep_dir)
    summaries = collect(sweep_dir)
    configs, varied = configurations(summaries)
    base = find_baseline(configs, varied, baseline) if baseline is not None else None
    df = table(summaries)
    io.write_text(sweep_dir / "comparison.csv", df.to_csv(index=False))
    markdown = to_markdown(summaries, df)
    io.write_text(sweep_dir / "comparison.md", markdown)
    summary = summary_table(configs, varied, base)
    io.write_text(sweep_dir / "summary.csv", summary.to_csv(index=False))
    summary_md = summary_markdown(summary, varied, baseline)
    io.write_text(sweep_dir / "summary.md", summary_md)
    policies = [i for i, c in enumerate(configs) if not str(c.objective).startswith("judge=")]  # judges: no trade-off
    records = summary.to_dict("records")
    plot_tradeoff(
        [records[i] for i in policies],
        [f"{configs[i].describe(varied)} ({len(configs[i].seeds)} seeds)" for i in policies],
        sweep_dir / "comparison.png",
    )
    plot_curves(summaries, sweep_dir / "curves.png")
    for run in summaries:
        if run.state != "done":
            log.warning("run %s: %s", run.name, run.state)
    log.info("%s\n%s\n%s", sweep_dir, markdown, summary_md)
    log.info("wrote %s", ", ".join(str(sweep_dir / name) for name in COMPARISON_FILES))
    return summaries
