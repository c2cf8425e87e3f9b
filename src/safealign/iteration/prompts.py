"""Each round's prompts: a seeded subset of the train split's prompts, or of a prompt file.

Why seeded slices of one shuffle: `iterate.prompts.fresh` then means exactly "no prompt twice
while there are unused ones", a resumed round picks the same prompts it picked before it was
killed, and two sweep runs with the same seed train on the same prompts.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError


def read_prompt_file(path: str | Path) -> list[str]:
    """The distinct non-empty `prompt` values of a JSON Lines (or JSON list) or CSV file, in file order."""
    path = Path(path).expanduser()
    key = "iterate.prompts.source"
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "prompt" not in (reader.fieldnames or []):
                raise DataError(f"{key}={path}: no `prompt` column (columns: {', '.join(reader.fieldnames or [])})")
            values = [row["prompt"] for row in reader]
    else:
        text = path.read_text(encoding="utf-8")
        try:
            rows = json.loads(text) if path.suffix.lower() == ".json" else [
                json.loads(line) for line in text.splitlines() if line.strip()
            ]  # fmt: skip
        except json.JSONDecodeError as err:
            raise DataError(f"{key}={path}: not valid JSON ({err})") from err
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "prompt" in r for r in rows):
            raise DataError(f"{key}={path}: expected one object with a `prompt` key per line")
        values = [r["prompt"] for r in rows]
    prompts = list(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v.strip()))
    if not prompts:
        raise DataError(f"{key}={path}: no prompts in the file")
    return prompts


def round_prompts(prompts: Sequence[str], round_index: int, per_round: int, fresh: bool, seed: int) -> list[str]:
    """Round `round_index`'s prompts (1-based): with `fresh`, the next `per_round` of one seeded shuffle,
    so no prompt comes twice while unused ones remain (then the shuffle starts over); else the first ones."""
    order = list(prompts)
    random.Random(f"{seed}:iterate-prompts").shuffle(order)
    n = min(per_round, len(order))
    if not fresh:
        return order[:n]
    start = ((round_index - 1) * n) % len(order)
    return [order[(start + i) % len(order)] for i in range(n)]
