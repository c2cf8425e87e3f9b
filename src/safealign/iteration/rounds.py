"""The iteration directory's record: one row per round (round 0 = the starting policy) and the plot.

Why rows read back from the round directories: the table is rebuilt from what each round wrote
(`round.json`, `pair_report.json`, `metrics.json`, `eval.json`), so a resumed or extended
iteration gets the same table as one run straight through, and a failed round shows as such.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import io
from ..rundir import RunDir

ROUND_STATE = "round.json"  # a round's phases: which finished, and their wall times
SAMPLES = "samples.jsonl"
ROUNDS_CSV, ROUNDS_MD, ROUNDS_PNG = "rounds.csv", "rounds.md", "rounds.png"
PHASES = ("sampling", "judging", "training", "evaluation")
COLUMNS = (
    "round", "status", "prompts", "pairs", "dropped", "lam", "harmless_rate", "harmless_low", "harmless_high",
    "mean_reward", "reward_low", "reward_high", "mean_cost", "cost_low", "cost_high", "win_vs_round0",
    "win_low", "win_high", "heldout_accuracy", "train_loss", *(f"{p}_s" for p in PHASES),
)  # fmt: skip


def round_dir(iter_dir: str | Path, r: int) -> Path:
    return Path(iter_dir) / f"round_{r}"


def round_dirs(iter_dir: str | Path) -> list[Path]:
    """The round directories of an iteration, in round order."""
    found = [p for p in Path(iter_dir).glob("round_*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def final_round(iter_dir: str | Path) -> Path | None:
    """The last round an iteration directory holds (what `compare.py` compares for a sweep of iterations)."""
    found = round_dirs(iter_dir)
    return found[-1] if found else None


def is_iteration(path: str | Path) -> bool:
    return (Path(path) / ROUNDS_CSV).is_file() or bool(round_dirs(path))


def _ci(value: Any) -> tuple[float | None, float | None]:
    return (value[0], value[1]) if isinstance(value, (list, tuple)) and len(value) == 2 else (None, None)


def _side_row(side: Mapping[str, Any]) -> dict[str, Any]:
    h, r, c = _ci(side.get("harmless_rate_ci")), _ci(side.get("mean_reward_ci")), _ci(side.get("mean_cost_ci"))
    return {"harmless_rate": side.get("harmless_rate"), "harmless_low": h[0], "harmless_high": h[1],
            "mean_reward": side.get("mean_reward"), "reward_low": r[0], "reward_high": r[1],
            "mean_cost": side.get("mean_cost"), "cost_low": c[0], "cost_high": c[1]}  # fmt: skip


def _mean_accuracy(dimensions: Mapping[str, Any] | None) -> float | None:
    values = [d.get("accuracy") for d in (dimensions or {}).values() if isinstance(d, Mapping)]
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def round_row(path: Path, r: int, lam: float | None) -> dict[str, Any]:
    """Round `r`'s row, from what its directory holds."""
    run = RunDir(path)
    state = io.read_json_or_none(path / ROUND_STATE) or {}
    report = io.read_json_or_none(run / RunDir.PAIR_REPORT) or {}
    train = report.get("train") or state.get("pairs") or {}
    metrics = io.read_json_or_none(run / RunDir.METRICS) or {}
    evaluation = io.read_json_or_none(run / RunDir.EVAL) or {}
    generation = evaluation.get("generation") or {}
    win = (evaluation.get("iterate") or {}).get("win_rate_vs_round0") or {}
    win_ci = _ci(((evaluation.get("iterate") or {}).get("win_rate_vs_round0_ci") or {}).get("reward"))
    row = {"round": r, "status": "done" if state.get("done") else (run.state() or "not started"),
           "prompts": state.get("prompts"), "pairs": train.get("kept"),
           "dropped": sum((train.get("dropped") or {}).values()) if train else None, "lam": lam,
           **_side_row(generation.get("policy") or {}),
           "win_vs_round0": win.get("reward", win.get("safety")), "win_low": win_ci[0], "win_high": win_ci[1],
           "heldout_accuracy": _mean_accuracy(evaluation.get("dimensions")),
           "train_loss": (metrics.get("train") or {}).get("train_loss")}  # fmt: skip
    row |= {f"{p}_s": (state.get("seconds") or {}).get(p) for p in PHASES}
    return row


def round0_row(first: Path) -> dict[str, Any]:
    """Round 0, the starting policy: the reference side of round 1's held-out generations (the same
    prompts, greedy decoding, judged by the same judges)."""
    evaluation = io.read_json_or_none(first / RunDir.EVAL) or {}
    side = (evaluation.get("generation") or {}).get("reference") or {}
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row |= {"round": 0, "status": "start" if side else "-", **_side_row(side), "win_vs_round0": 0.5 if side else None}
    row["heldout_accuracy"] = _reference_accuracy(evaluation.get("dimensions"))
    return row


def _reference_accuracy(dimensions: Mapping[str, Any] | None) -> float | None:
    """Before training the policy is its reference: every implicit reward is 0, every pair a tie (1/2)."""
    return 0.5 if dimensions else None


def rounds_table(iter_dir: str | Path, lams: Sequence[float | None]) -> list[dict[str, Any]]:
    """One row per round, round 0 first; rounds not started yet are left out."""
    dirs = round_dirs(iter_dir)
    rows = [round0_row(dirs[0])] if dirs else []
    for path in dirs:
        r = int(path.name[6:])
        rows.append(round_row(path, r, lams[r - 1] if 0 < r <= len(lams) else None))
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rounds as a Markdown table: rates and means with their 95% intervals, and the phase times."""
    head = ["round", "status", "pairs (dropped)", "harmless rate [95% CI]", "mean reward [95% CI]",
            "mean cost [95% CI]", "win vs round 0 [95% CI]", "held-out acc", "train loss",
            "sample / judge / train / eval (s)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        def ci(value: str, low: str, high: str, row: Mapping[str, Any] = r) -> str:
            if row.get(value) is None:
                return "-"
            bounds = f" [{_cell(row.get(low))}, {_cell(row.get(high))}]" if row.get(low) is not None else ""
            return _cell(row[value]) + bounds

        pairs = "-" if r.get("pairs") is None else f"{r['pairs']} ({_cell(r.get('dropped'))})"
        times = " / ".join(_cell(r.get(f"{p}_s")) if r.get(f"{p}_s") is None else f"{r[f'{p}_s']:.1f}" for p in PHASES)
        lines.append("| " + " | ".join([
            str(r["round"]), _cell(r.get("status")), pairs, ci("harmless_rate", "harmless_low", "harmless_high"),
            ci("mean_reward", "reward_low", "reward_high"), ci("mean_cost", "cost_low", "cost_high"),
            ci("win_vs_round0", "win_low", "win_high"), _cell(r.get("heldout_accuracy")), _cell(r.get("train_loss")),
            times]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_rounds(iter_dir: str | Path, lams: Sequence[float | None]) -> list[dict[str, Any]]:
    """rounds.csv, rounds.md and rounds.png in the iteration directory; returns the rows."""
    import csv
    import io as text_io

    rows = rounds_table(iter_dir, lams)
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows)
    io.write_text(Path(iter_dir) / ROUNDS_CSV, buffer.getvalue())
    io.write_text(Path(iter_dir) / ROUNDS_MD, to_markdown(rows))
    if rows:
        plot_rounds(rows, Path(iter_dir) / ROUNDS_PNG)
    return rows


def plot_rounds(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Harmless rate and mean reward per round, with their 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [("harmless_rate", "harmless_low", "harmless_high", "harmless rate"),
              ("mean_reward", "reward_low", "reward_high", "mean reward")]  # fmt: skip
    for ax, (key, low, high, label) in zip(axes, panels, strict=True):
        points = [r for r in rows if r.get(key) is not None]
        if points:
            x = [r["round"] for r in points]
            y = [r[key] for r in points]
            err = [[max(0.0, r[key] - r[low]) if r.get(low) is not None else 0.0 for r in points],
                   [max(0.0, r[high] - r[key]) if r.get(high) is not None else 0.0 for r in points]]  # fmt: skip
            ax.errorbar(x, y, yerr=err, fmt="o-", capsize=4)
        ax.set_xlabel("round (0: starting policy)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} on held-out prompts (95% CI)")
        ax.set_xticks([r["round"] for r in rows])
        ax.grid(alpha=0.3)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
