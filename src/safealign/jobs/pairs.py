"""`recipes/pairs.py`: build the preference pairs an objective makes, for inspection or other tools.

Writes OUT/pairs.jsonl (prompt, chosen, rejected as raw dataset texts, margin) and
OUT/pair_report.json (kept, dropped by reason, and breakdowns). Imports no torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from .. import io
from ..data.loading import load_split
from ..pairs import PairReport, make_pairs
from ..rundir import RunDir
from ..settings import parse_pairs

log = logging.getLogger("safealign")


def run(cfg: DictConfig, out_dir: str | Path) -> PairReport:
    settings = parse_pairs(cfg)
    rows = load_split(settings.data, "train")
    pairs, report = make_pairs(rows, settings.objective, settings.options, settings.filters)

    out = RunDir(out_dir)
    io.write_jsonl(
        out / RunDir.PAIRS,
        ({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "margin": p.margin} for p in pairs),
    )
    io.write_json(out / RunDir.PAIR_REPORT, report.to_dict())
    log.info("objective=%s\n%s", settings.objective, report.table())
    log.info("wrote %s (%d pairs) and %s", out / RunDir.PAIRS, len(pairs), out / RunDir.PAIR_REPORT)
    return report
