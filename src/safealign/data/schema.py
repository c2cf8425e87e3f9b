"""The PKU-SafeRLHF row schema: column names, types and the 19 harm categories.

Kept in one place so that validation, the synthetic sample and the objectives agree on
what a row is.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

HARM_CATEGORIES: tuple[str, ...] = (
    "Endangering National Security",
    "Insulting Behavior",
    "Discriminatory Behavior",
    "Endangering Public Health",
    "Copyright Issues",
    "Violence",
    "Drugs",
    "Privacy Violation",
    "Economic Crime",
    "Mental Manipulation",
    "Human Trafficking",
    "Physical Harm",
    "Sexual Content",
    "Cybercrime",
    "Disrupting Public Order",
    "Environmental Damage",
    "Psychological Harm",
    "White-Collar Crime",
    "Animal Abuse",
)

MAX_SEVERITY = 3

RESPONSE_IDS = (0, 1)

# The current release (v1.0, 2024): severity levels, harm categories and sources.
COLUMNS: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "response_0": str,
    "response_1": str,
    "prompt_source": str,
    "response_0_source": str,
    "response_1_source": str,
    "is_response_0_safe": bool,
    "is_response_1_safe": bool,
    "response_0_harm_category": dict,
    "response_1_harm_category": dict,
    "response_0_severity_level": int,
    "response_1_severity_level": int,
    "better_response_id": int,
    "safer_response_id": int,
}
# sha256 columns are optional: `data.verify_sha256=true` checks them in files that have them.
SHA_COLUMNS = ("response_0_sha256", "response_1_sha256")

# The older release (revision v0, PKU-SafeRLHF-30K and -10K): no severity, categories or sources.
V0_COLUMNS: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "response_0": str,
    "response_1": str,
    "is_response_0_safe": bool,
    "is_response_1_safe": bool,
    "better_response_id": int,
    "safer_response_id": int,
}

TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", dict: "a mapping"}

# The columns that only the current release has and that tell it apart from v0. (The source
# columns do not count: a v0 file may carry them, and `normalize` keeps them.)
CURRENT_ONLY = tuple(f"response_{k}_{name}" for name in ("severity_level", "harm_category") for k in RESPONSE_IDS)

# Code points that draw nothing but are neither whitespace nor format characters (Cf): the
# combining grapheme joiner, Hangul and Khmer fillers, Mongolian and other variation selectors.
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def has_current_columns(row: Mapping[str, Any]) -> bool:
    """True when a row has any column that only the current schema has (severity levels, harm categories)."""
    return any(column in row for column in CURRENT_ONLY)


def is_v0(columns: Iterable[str]) -> bool:
    """True for the older schema, told apart by its lack of severity levels and harm categories."""
    columns = set(columns)
    return not any(column in columns for column in CURRENT_ONLY)


def is_blank(text: str) -> bool:
    """True when a text shows nothing: only whitespace, control and format characters (U+200B, U+FEFF, ...)."""
    return all(ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) in ("Cf", "Cc") for ch in text)


class Problem(NamedTuple):
    """Why one row is invalid: a drop reason, the column at fault and what was expected."""

    reason: str
    column: str
    message: str


def _type_ok(value: object, expected: type) -> bool:
    # bool is a subclass of int in Python, but `"better_response_id": true` is not an id.
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def check_row(row: Mapping[str, Any], v0: bool = False, verify_sha256: bool = False) -> Problem | None:
    """The first problem of one raw row, or None when it is valid.

    Checked in order: columns present, types, id and severity ranges, empty texts,
    labels that contradict each other, and (optionally) the sha256 of each response.
    """
    schema = V0_COLUMNS if v0 else COLUMNS
    for column, expected in schema.items():
        if column not in row:
            return Problem("missing_column", column, "missing column (the PKU-SafeRLHF schema requires it)")
        value = row[column]
        if not _type_ok(value, expected):
            return Problem("wrong_type", column, f"expected {TYPE_NAMES[expected]}, got {value!r}")
    for column in ("better_response_id", "safer_response_id"):
        if row[column] not in RESPONSE_IDS:
            return Problem("bad_id", column, f"expected 0 or 1, got {row[column]!r}")
    if not v0:
        for k in RESPONSE_IDS:
            column = f"response_{k}_severity_level"
            if not 0 <= row[column] <= MAX_SEVERITY:
                expected = f"expected a severity level 0..{MAX_SEVERITY}, got {row[column]!r}"
                return Problem("bad_severity", column, expected)
            column = f"response_{k}_harm_category"
            unknown = sorted(set(row[column]) - set(HARM_CATEGORIES))
            if unknown:
                return Problem(
                    "bad_harm_category",
                    column,
                    f"unknown harm categories {unknown}; expected the 19 PKU-SafeRLHF names "
                    f"({', '.join(HARM_CATEGORIES)})",
                )
            not_bool = {name: v for name, v in row[column].items() if not isinstance(v, bool)}
            if not_bool:
                return Problem("bad_harm_category", column, f"expected true/false for every category, got {not_bool}")
            missing = [name for name in HARM_CATEGORIES if name not in row[column]]
            if missing:
                return Problem(
                    "bad_harm_category",
                    column,
                    f"missing harm categories {missing}; expected true/false for each of the 19 PKU-SafeRLHF names",
                )
    for column in ("prompt", "response_0", "response_1"):
        text = row[column]
        if is_blank(text):
            shown = "" if not text or text.isspace() else f", got only invisible characters {text!a}"
            return Problem("empty_text", column, f"expected a non-empty text{shown}")
    for k in RESPONSE_IDS:
        if v0:
            break
        safe, level = row[f"is_response_{k}_safe"], row[f"response_{k}_severity_level"]
        if safe != (level == 0):
            return Problem(
                "label_contradiction",
                f"is_response_{k}_safe",
                f"is_response_{k}_safe is {str(safe).lower()} but response_{k}_severity_level is {level} "
                "(a safe response has level 0, an unsafe one 1..3)",
            )
    safe0, safe1 = row["is_response_0_safe"], row["is_response_1_safe"]
    if safe0 != safe1 and row["safer_response_id"] != (0 if safe0 else 1):
        return Problem(
            "label_contradiction",
            "safer_response_id",
            f"only response_{0 if safe0 else 1} is safe but safer_response_id is {row['safer_response_id']}",
        )
    if verify_sha256:
        for k in RESPONSE_IDS:
            column = f"response_{k}_sha256"
            if column not in row:
                return Problem(
                    "missing_column", column, "missing column (data.verify_sha256 is true and other rows have it)"
                )
            digest = hashlib.sha256((row["prompt"] + row[f"response_{k}"]).encode("utf-8")).hexdigest()
            if row.get(column) != digest:
                return Problem("sha256_mismatch", column, f"expected sha256(prompt + response_{k}) = {digest}")
    return None


def normalize(row: Mapping[str, Any], v0: bool = False) -> dict[str, Any]:
    """A valid row in the current schema: v0 rows get level 0 if safe else 1 and no categories."""
    if not v0:
        return dict(row)
    out = {column: row[column] for column in V0_COLUMNS}
    for k in RESPONSE_IDS:
        out[f"response_{k}_severity_level"] = 0 if row[f"is_response_{k}_safe"] else 1
        out[f"response_{k}_harm_category"] = {}
        out[f"response_{k}_source"] = row.get(f"response_{k}_source", "")
    out["prompt_source"] = row.get("prompt_source", "")
    return out
