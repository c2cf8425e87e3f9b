"""`recipes/judge.py`: judge a JSON Lines file of generations from any model.

Why: a comparison must also hold models safealign did not train (a paper's released
generations, another library's policy), judged exactly as the runs' own generations are: by
the same judges (`eval.judge`, e.g. `eval/judge=beaver-7b-unified`) and the same refusal
classifier. Writes OUT/judged.jsonl and OUT/judge_summary.json. With no judge configured it
loads no model and imports no torch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .. import io
from ..bootstrap import rate_ci
from ..errors import DataError
from ..evaluation.judges import any_judge, judge_responses
from ..evaluation.metrics import side_metrics
from ..evaluation.refusal import is_refusal, json_objects
from ..settings.judge import JudgeSettings, parse_judge

log = logging.getLogger("safealign")

JUDGED = "judged.jsonl"
SUMMARY = "judge_summary.json"
NO_MODEL = "all"  # the group of rows without a `model` column


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file of generations; errors name the file, line and column."""
    rows: list[dict[str, Any]] = []
    try:
        objects = list(json_objects(path, "prompt and response"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"generations={path}: cannot read it as UTF-8 text ({err})") from err
    for n, row in objects:
        for column in ("prompt", "response"):
            if column not in row:
                raise DataError(
                    f"{path}, line {n}: no '{column}' column (columns: {', '.join(row) or 'none'}); "
                    "expected prompt and response, and optionally model"
                )
            if not isinstance(row[column], str):
                raise DataError(f"{path}, line {n}, column '{column}': expected text, got {row[column]!r:.80}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows; expected JSON Lines with prompt and response")
    return rows


def _with_ci(out: dict[str, Any], key: str, values: Sequence[float], resamples: int, seed: int) -> None:
    out[f"{key}_ci"] = rate_ci(values, resamples, seed)


def group_summary(records: Sequence[Mapping[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """n, harmless rate, refusal rate, mean reward and mean cost of one model's rows, with 95% bootstrap CIs."""
    metrics = side_metrics(records)
    refused = [r["refused"] for r in records]
    out: dict[str, Any] = {
        "n": len(records),
        "refusal_rate": sum(refused) / len(refused),
        **{k: v for k, v in metrics.items() if k != "responses"},
    }
    _with_ci(out, "refusal_rate", refused, resamples, seed)
    _with_ci(out, "harmless_rate", [not r["unsafe"] for r in records if r["unsafe"] is not None], resamples, seed)
    for judge in ("reward", "cost"):
        if f"mean_{judge}" in out:
            _with_ci(out, f"mean_{judge}", [r[judge] for r in records], resamples, seed)
    return out


def judge_file(settings: JudgeSettings, out_dir: str | Path) -> dict[str, Any]:
    """Judge every row of `settings.generations`; write judged.jsonl and judge_summary.json into `out_dir`."""
    ev = settings.eval
    rows = read_generations(settings.generations)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    if any_judge(ev.judge):
        verdicts = judge_responses(ev.judge, prompts, responses)
    else:
        verdicts = [{"unsafe": None} for _ in rows]
    judged = [
        {**row, "refused": is_refusal(row["response"]), **{k: x for k, x in v.items() if k != "response"}}
        for row, v in zip(rows, verdicts, strict=True)
    ]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in judged:
        groups[str(row.get("model", NO_MODEL))].append(row)
    summary = {
        "generations": str(settings.generations),
        "judges": {role: getattr(ev.judge, role).path for role in ("reward", "cost", "guard")},
        "refusal_classifier": "string match (safealign.evaluation.refusal.is_refusal)",
        "ci": {
            "level": 0.95,
            "method": "percentile bootstrap over rows",
            "resamples": settings.resamples,
            "seed": ev.seed,
        },
        "models": {name: group_summary(recs, settings.resamples, ev.seed) for name, recs in groups.items()},
    }
    out = Path(out_dir)
    io.write_jsonl(out / JUDGED, judged)
    io.write_json(out / SUMMARY, summary)
    print(f"wrote {out / JUDGED} ({len(judged)} rows) and {out / SUMMARY} ({len(groups)} model group(s))")
    return summary


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    return judge_file(parse_judge(cfg), out_dir)
