"""What a researcher reads on the console: numbers as numbers, and where the results are."""

from __future__ import annotations

import types

from safealign.trainer import ProgressLog


class Bar:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)


def test_training_logs_are_written_as_numbers_not_quoted_strings():
    progress = ProgressLog()
    progress.training_bar = Bar()
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=25, max_steps=96)
    progress.on_log(None, state, None, logs={"loss": 1.08612, "rewards/accuracies": 0.175, "epoch": 0.78125,
                                             "total_flos": 1e12, "note": "x"})  # fmt: skip
    assert progress.training_bar.lines == ["step 25/96  loss=1.086  rewards/accuracies=0.175  epoch=0.7812"]


def test_only_rank_zero_writes():
    progress = ProgressLog()
    progress.training_bar = Bar()
    state = types.SimpleNamespace(is_world_process_zero=False, global_step=1, max_steps=2)
    progress.on_log(None, state, None, logs={"loss": 1.0})
    assert progress.training_bar.lines == []
