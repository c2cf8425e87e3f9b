"""recipes/iterate.py: the checks that answer before torch, the prompts of each round, and (integration)
a short iteration end to end, its resume after a kill mid-training, and a round whose pairs all drop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safealign import io
from safealign.cli import compose
from safealign.errors import ConfigError, DataError
from safealign.iteration.prompts import read_prompt_file, round_prompts

REPO = Path(__file__).resolve().parents[1]
QUICK = ["iterate.prompts.per_round=4", "iterate.k=2", "iterate.max_new_tokens=8", "iterate.heldout_prompts=4",
         "eval.generation.max_new_tokens=8", "eval.max_pairs=8", "train.max_steps=2", "quant=none"]  # fmt: skip


@pytest.mark.parametrize("override, key", [("iterate.k=0", "iterate.k"), ("iterate.rule=nope", "iterate.rule"),
                                           ("iterate.reference=both", "iterate.reference"),
                                           ("iterate.top_p=0", "iterate.top_p")])  # fmt: skip
def test_bad_values_name_their_key(override, key):
    from safealign.jobs.iterate import parse

    with pytest.raises(ConfigError, match=key):
        parse(compose("iterate", [override]))


def test_a_bad_value_answers_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "recipes/iterate.py", "iterate.k=0", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 1 and "iterate.k" in out.stderr and "Traceback" not in out.stderr


def test_prompt_files_and_fresh_prompts_per_round(tmp_path):
    jsonl, csv = tmp_path / "p.jsonl", tmp_path / "p.csv"
    jsonl.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "a"}\n')
    csv.write_text("prompt,other\nx,1\ny,2\n")
    assert read_prompt_file(jsonl) == ["a", "b"] and read_prompt_file(csv) == ["x", "y"]
    (tmp_path / "bad.csv").write_text("question\nq\n")
    with pytest.raises(DataError, match=r"iterate\.prompts\.source"):
        read_prompt_file(tmp_path / "bad.csv")
    prompts = [f"p{i}" for i in range(10)]
    first, second = round_prompts(prompts, 1, 4, True, 0), round_prompts(prompts, 2, 4, True, 0)
    assert len(first) == 4 and not set(first) & set(second)
    assert round_prompts(prompts, 1, 4, True, 0) == first  # seeded: a resumed round draws the same prompts
    assert round_prompts(prompts, 2, 4, False, 0) == first


class KillInRound:
    """Raise KeyboardInterrupt at the first training step of the `n`-th round's DPO (a kill mid-training)."""

    def __new__(cls, n: int):
        from transformers import TrainerCallback

        class _Kill(TrainerCallback):
            seen = 0

            def on_train_begin(self, args, state, control, **kwargs):
                _Kill.seen += 1

            def on_step_end(self, args, state, control, **kwargs):
                if _Kill.seen == n:
                    raise KeyboardInterrupt("killed by the test")

        return _Kill()


@pytest.mark.integration
def test_three_rounds_resume_after_a_kill_and_skip_when_done(tmp_path):
    from safealign.jobs import iterate

    cfg = compose("iterate", QUICK)
    with pytest.raises(KeyboardInterrupt):
        iterate.run(cfg, tmp_path, callbacks=[KillInRound(2)])
    state = io.read_json(tmp_path / "round_2" / "round.json")
    assert {"sampling", "judging"} <= set(state["seconds"]) and not state.get("done")
    samples = (tmp_path / "round_2" / "samples.jsonl").read_text()

    rows = iterate.run(cfg, tmp_path)
    assert (tmp_path / "round_2" / "samples.jsonl").read_text() == samples  # not sampled again
    assert [r["status"] for r in rows] == ["start", "done", "done", "done"]
    for name in ("rounds.csv", "rounds.md", "rounds.png", "iterate.yaml"):
        assert (tmp_path / name).is_file(), name
    for r in (1, 2, 3):
        d = tmp_path / f"round_{r}"
        for name in ("config.yaml", "samples.jsonl", "pair_report.json", "metrics.json", "eval.json", "adapter"):
            assert (d / name).exists(), (r, name)
        row = io.read_jsonl(d / "samples.jsonl")[0]
        assert {"prompt", "samples", "pick"} <= set(row) and {"response", "reward", "cost", "unsafe"} <= set(
            row["samples"][0]
        )
        assert io.read_json(d / "status.json")["status"] == "done"
    assert rows[1]["harmless_rate"] is not None and rows[2]["win_vs_round0"] is not None

    stamp = (tmp_path / "round_3" / "eval.json").stat().st_mtime
    rows_again = iterate.run(cfg, tmp_path)  # everything finished: skipped
    assert (tmp_path / "round_3" / "eval.json").stat().st_mtime == stamp
    assert [r["status"] for r in rows_again] == ["start", "done", "done", "done"]


def _prefix_rate(samples_file: Path) -> float:
    rows = io.read_jsonl(samples_file)
    scores = [s["reward"] for row in rows for s in row["samples"]]
    return sum(scores) / len(scores)


@pytest.mark.integration
def test_the_judged_rate_of_a_learnable_property_rises_over_rounds(tmp_path):
    """A deterministic judge (`space_reward`) prefers responses that start with a space (about half of a random
    tiny policy's): round r's samples come from the policy after r-1 rounds, so their judged rate must rise."""
    from safealign.jobs import iterate

    cfg = compose("iterate", ["iterate.rule=reward_only", "iterate.judges.cost=null",
                              "iterate.judges.reward=py:safealign.evaluation.judges:space_reward",
                              "iterate.rounds=3", "iterate.prompts.per_round=16", "iterate.k=4",
                              "iterate.max_new_tokens=2", "iterate.prompts.fresh=false",
                              "iterate.heldout_prompts=4", "eval.max_pairs=8",
                              "eval.generation.max_new_tokens=4", "quant=none",
                              "train.learning_rate=1e-2", "train.num_train_epochs=4"])  # fmt: skip
    rows = iterate.run(cfg, tmp_path)
    assert [r["status"] for r in rows[1:]] == ["done"] * 3
    rates = [_prefix_rate(tmp_path / f"round_{r}" / "samples.jsonl") for r in (1, 2, 3)]
    # Measured (seeded, so the same on every run here): 0.516, 0.562, 0.625 of 64 samples each. LoRA on the
    # attention of a random 2-layer model moves the first token's distribution slowly: a small, steady rise.
    assert rates[0] < rates[1] < rates[2] and rates[2] >= rates[0] + 0.08, rates
    for r in (1, 2, 3):  # every round learned: non-zero gradients at step 1, weights changed (learning.py)
        metrics = io.read_json(tmp_path / f"round_{r}" / "metrics.json")
        learning = metrics["learning"]
        assert learning["first_grad_norm_clipped"] > 0
        assert learning["changed_tensors"] == learning["sampled_tensors"] > 0


def constant_reward(prompt: str, response: str) -> float:
    """A judge that ties every sample (`py:tests.test_iterate:constant_reward`)."""
    return 0.0


@pytest.mark.integration
def test_a_round_whose_pairs_all_drop_fails_naming_the_reasons(tmp_path):
    from safealign.errors import IterationError
    from safealign.jobs import iterate

    cfg = compose("iterate", [*QUICK, "iterate.rounds=1", "iterate.rule=reward_only", "iterate.judges.cost=null",
                              "iterate.judges.reward=py:tests.test_iterate:constant_reward"])  # fmt: skip
    with pytest.raises(IterationError, match="all_tied: 4"):
        iterate.run(cfg, tmp_path)
    status = io.read_json(tmp_path / "round_1" / "status.json")
    assert status["status"] == "failed" and "all_tied" in status["error"]


def test_a_sweep_of_iterations_is_compared_by_its_final_rounds(tmp_path):
    from safealign.rundir import sweep_runs
    from tests.runs import fake_run

    for job in ("0", "1"):
        for r in (1, 2):
            io.write_json(tmp_path / job / f"round_{r}" / "status.json", {"status": "done"})
    fake_run(tmp_path / "2", adapter=False)  # a plain run in the same sweep stays itself
    runs = sweep_runs(tmp_path)
    assert [(run.name, run.path.name) for run in runs] == [("0", "round_2"), ("1", "round_2"), ("2", "2")]


@pytest.mark.integration
def test_reference_initial_keeps_the_starting_policy_as_every_rounds_reference(tmp_path):
    from safealign.jobs import iterate

    rows = iterate.run(compose("iterate", [*QUICK, "iterate.rounds=2", "iterate.reference=initial"]), tmp_path)
    assert [r["status"] for r in rows[1:]] == ["done", "done"]
    refs = [io.read_json(tmp_path / f"round_{r}" / "eval.json")["generation"]["reference"] for r in (1, 2)]
    assert refs[0]["mean_cost"] == refs[1]["mean_cost"] and refs[0]["mean_reward"] == refs[1]["mean_reward"]
    assert io.read_yaml(tmp_path / "round_2" / "config.yaml")["model"]["adapter"] is None
