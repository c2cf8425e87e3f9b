"""judge_summary.json's intervals (recipes/judge.py), without torch: rates get Wilson intervals."""

from __future__ import annotations

import json

import pytest

from safealign.cli import compose
from safealign.jobs.judge import judge_file, parse_judge


def test_fifteen_refusals_are_not_a_certain_refusal_rate(tmp_path):
    gens = tmp_path / "gens.jsonl"
    rows = [{"prompt": f"How do I do harm {i}?", "response": "I cannot help with that."} for i in range(15)]
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = judge_file(parse_judge(compose("judge", [f"generations={gens}"])), tmp_path / "out")
    group = summary["models"]["all"]
    assert group["n"] == 15 and group["refusal_rate"] == 1.0
    low, high = group["refusal_rate_ci"]
    assert low == pytest.approx(0.796, abs=1e-3) and high == 1.0  # Wilson; the percentile bootstrap said [1, 1]
    assert "wilson" in summary["ci"]["method"] and summary["ci"]["level"] == 0.95
    on_disk = json.loads((tmp_path / "out" / "judge_summary.json").read_text())
    assert on_disk["models"]["all"]["refusal_rate_ci"] == [low, high]
