"""The GPU and cluster paths, checked on the CPU (issue 21): device capabilities as arguments, launcher
environments as dicts, a 2-process gloo run for the one distributed decision, and signals sent to real runs."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from safealign.cli import compose
from safealign.devices import Launch, check_launch, load_dtype, mixed_precision, native_bf16, precompute_under
from safealign.errors import SafealignError

from .runs import signal_mid_training

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = REPO / "conf" / "accelerate"


# ---- precision and dtypes (faults 2, 3) ----

@pytest.mark.parametrize(("capability", "native"), [((7, 0), False), ((7, 5), False), ((8, 0), True),
                                                    ((9, 0), True), (None, False)])  # fmt: skip
def test_bf16_only_where_the_gpu_has_it_in_hardware(capability, native):
    assert native_bf16(capability) is native


def test_bf16_auto_is_fp16_on_an_older_gpu_and_neither_on_the_cpu():
    assert mixed_precision(cuda=True, bf16_native=True) == {"bf16": True, "fp16": False}
    assert mixed_precision(cuda=True, bf16_native=False) == {"bf16": False, "fp16": True}  # V100
    assert mixed_precision(cuda=False, bf16_native=False) == {"bf16": False, "fp16": False}
    assert mixed_precision(cuda=True, bf16_native=True, bf16=False) == {"bf16": False}  # the user's choice


def test_has_bf16_ignores_emulated_bf16(monkeypatch):
    from safealign.devices import has_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 0))
    assert has_bf16() is False
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (8, 0))
    assert has_bf16() is True


def test_full_fine_tuning_keeps_fp32_master_weights():
    assert load_dtype("auto", full_fine_tuning=True, bf16_native=True) == "float32"
    assert load_dtype("auto", full_fine_tuning=False, bf16_native=True) == "bfloat16"
    assert load_dtype("auto", full_fine_tuning=False, bf16_native=False) == "float32"
    assert load_dtype("bfloat16", full_fine_tuning=True, bf16_native=True) == "bfloat16"  # asked for


@pytest.mark.integration
def test_full_fine_tuning_loads_the_policy_in_fp32_and_the_reference_in_bf16(monkeypatch, tiny_cfg):
    from omegaconf import OmegaConf

    from safealign import modeling

    monkeypatch.setattr(modeling, "has_bf16", lambda: True)  # a GPU with bf16, as far as loading goes
    loaded = modeling.load_model(tiny_cfg, "none", OmegaConf.create({"method": "none"}), reference=True)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert next(loaded.ref_model.parameters()).dtype == torch.bfloat16


def test_full_fine_tuning_with_precomputed_reference_loads_no_reference(monkeypatch, tmp_path):
    from safealign import modeling
    from safealign.jobs.dpo import run

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["reference"])
        raise SafealignError("stop here")

    monkeypatch.setattr(modeling, "load_model", spy)
    few = ["peft=none", "quant=none", "train.max_steps=1", "train.report_to=[]"]
    for precompute, reference in (("true", False), ("false", True)):
        with pytest.raises(SafealignError, match="stop here"):
            run(compose("dpo", [*few, f"train.precompute_ref={precompute}"]), tmp_path / precompute)
        assert seen[-1] is reference


def test_ddp_does_not_search_for_unused_parameters(tmp_path):
    from safealign.settings import parse_train
    from safealign.trainer import dpo_config

    args = dpo_config(parse_train(compose("dpo", [])).train, tmp_path)
    assert args.ddp_find_unused_parameters is False


# ---- launchers (faults 1, 4, 9) ----

def launch_env(config: str, **extra: str) -> dict[str, str]:
    """What `accelerate launch --config_file conf/accelerate/CONFIG` exports that safealign reads."""
    cfg = yaml.safe_load((ACCELERATE / config).read_text())
    env = {"WORLD_SIZE": str(cfg["num_processes"]), "LOCAL_RANK": "0"}
    if cfg["distributed_type"] == "FSDP":
        env |= {"ACCELERATE_USE_FSDP": "true", "FSDP_STATE_DICT_TYPE": cfg["fsdp_config"]["fsdp_state_dict_type"]}
    if cfg["distributed_type"] == "DEEPSPEED":
        env |= {"ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(cfg["deepspeed_config"]["zero_stage"])}  # fmt: skip
    return env | extra


def test_a_plain_command_on_a_multi_gpu_machine_is_refused_with_the_fix():
    with pytest.raises(SafealignError, match=r"CUDA_VISIBLE_DEVICES=0 .*conf/accelerate/ddp.yaml"):
        check_launch(Launch.from_env({}), gpus=4, quant="nf4")
    check_launch(Launch.from_env({}), gpus=1, quant="nf4")
    check_launch(Launch.from_env(launch_env("ddp.yaml")), gpus=4, quant="nf4")


@pytest.mark.parametrize(("config", "nf4_works"), [("ddp.yaml", True), ("deepspeed_zero2.yaml", True),
                                                  ("deepspeed_zero3.yaml", False), ("fsdp.yaml", False)])  # fmt: skip
def test_what_works_with_nf4_under_each_shipped_launcher(config, nf4_works):
    launch = Launch.from_env(launch_env(config))
    check_launch(launch, gpus=2, quant="none")  # every shipped launcher config works with quant=none
    if nf4_works:
        check_launch(launch, gpus=2, quant="nf4")
    else:
        with pytest.raises(SafealignError, match=r"quant=nf4 under .* is not supported.*Use quant=none"):
            check_launch(launch, gpus=2, quant="nf4")


def test_fsdp_saves_a_full_state_dict_and_precomputes_nothing():
    launch = Launch.from_env(launch_env("fsdp.yaml"))
    assert launch.fsdp and launch.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert precompute_under(launch, True) is False  # TRL issue #6470: turned off, with a warning
    assert precompute_under(Launch.from_env(launch_env("ddp.yaml")), True) is True
    sharded = Launch.from_env(launch_env("fsdp.yaml", FSDP_STATE_DICT_TYPE="SHARDED_STATE_DICT"))
    with pytest.raises(SafealignError, match=r"SHARDED_STATE_DICT saves no adapter.*FULL_STATE_DICT"):
        check_launch(sharded, gpus=2, quant="none")


def test_a_save_that_wrote_no_weights_fails_the_run(tmp_path):
    from safealign.jobs.training import check_saved

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(SafealignError, match=r"no weights were saved.*FULL_STATE_DICT"):
        check_saved(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    check_saved(tmp_path)


# ---- model defaults (fault 6) ----

@pytest.mark.parametrize("recipe", ["dpo", "sft", "reward"])
@pytest.mark.integration
def test_every_7b_model_trains_with_gradient_checkpointing_by_default(recipe):
    models = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    assert "tiny" in models and len(models) > 1
    for model in models:
        cfg = compose(recipe, [f"model={model}"])
        assert cfg.train.gradient_checkpointing is (model != "tiny"), model
    off = compose(recipe, ["model=alpaca-7b", "train.gradient_checkpointing=false"])
    assert off.train.gradient_checkpointing is False


@pytest.mark.integration
def test_the_recipe_shows_gradient_checkpointing_on_for_alpaca_7b():
    result = subprocess.run([sys.executable, "recipes/dpo.py", "model=alpaca-7b", "--cfg", "job"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load(result.stdout)["train"]["gradient_checkpointing"] is True


# ---- the reference cache under several ranks (fault 5) ----

def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from safealign.trl_compat import rank0_value

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # Rank 1 alone finds a cache file (e.g. written between the two checks): it must follow rank 0.
        value = rank0_value({"hit": rank == 1, "rows": torch.tensor([float(rank)])} if rank == 1 else None)
        Path(out, f"{rank}.json").write_text(json.dumps(value))
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_the_cache_decision_is_rank_0s_on_every_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)] == [None, None]


def test_the_cache_key_names_the_model_not_only_its_weights():
    from transformers import LlamaConfig, LlamaForCausalLM

    from safealign.trl_compat import model_identity

    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=64)  # fmt: skip
    a, b = LlamaForCausalLM(config), LlamaForCausalLM(copy.deepcopy(config))
    a.config._name_or_path, b.config._name_or_path = "org/model-a", "org/model-b"
    assert model_identity(a) != model_identity(b)
    b.config._name_or_path = "org/model-a"
    assert model_identity(a) == model_identity(b)
    assert model_identity(a, "adapter=run1") != model_identity(a, "adapter=run2")
    # ZeRO-3: local tensors are empty placeholders; the full shape is `ds_shape`.
    for p in b.parameters():
        p.ds_shape = (*p.shape, 2)
    assert model_identity(a) != model_identity(b)


# ---- SLURM preemption (fault 10) ----

def test_sigusr2_stops_training_and_hands_over_to_submitits_requeue():
    from safealign.trainer import StopOnSignal

    class Args:
        world_size = 1

    requeued = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(signum))
    try:
        stop = StopOnSignal()
        stop.on_train_begin(Args(), None, None)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.stopped_by == signal.SIGUSR2

        class Control:
            should_log = should_save = should_training_stop = False

        control = Control()
        stop.on_step_end(Args(), None, control)
        assert control.should_save and control.should_training_stop
        stop.on_train_end(Args(), None, None)
        assert requeued == [] and stop.requeue is not None
        stop.requeue()
        assert requeued == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.integration
def test_sigusr2_saves_a_checkpoint_marks_interrupted_and_resumes_to_done(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train.max_steps=12", "train.per_device_train_batch_size=4", "train.save_steps=1000",
            "train.logging_steps=1", "train.report_to=[]", "objective=harmless", "quant=none",
            "eval.after_train=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    cmd = [sys.executable, "recipes/dpo.py", *args]
    returncode, out = signal_mid_training(cmd, REPO, signal.SIGUSR2)
    assert returncode == 128 + signal.SIGUSR2, out[-2000:]
    assert "interrupted by SIGUSR2" in out and "Traceback" not in out
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert len(list(run_dir.glob("checkpoints/checkpoint-*"))) == 1

    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)  # the requeued job
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "done"}
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from"].startswith("checkpoint-")


def test_the_cluster_config_requeues_on_timeout():
    cfg = yaml.safe_load((REPO / "conf" / "cluster" / "slurm.yaml").read_text())
    launcher = cfg["hydra"]["launcher"]
    assert launcher["max_num_timeout"] >= 1 and launcher["signal_delay_s"] >= 60


# ---- the prepared GPU check ----

@pytest.mark.integration
def test_the_gpu_benchmark_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "benchmarks/gpu.py", "--smoke", "--steps", "3", "--warmup", "1", "--repeats", "1",
           "--max-wait", "0", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    doc = json.loads(out.read_text())
    assert doc["results"]["model_load_seconds"] > 0
    assert all(r["global_step"] == 3 for side in doc["results"]["runs"].values() for r in side)


# ---- evaluation after training (faults 7, 8) ----

def test_evaluation_autocasts_as_training_did():
    from safealign.devices import autocast_dtype, training_precision

    assert autocast_dtype("cuda", bf16=True, fp16=False) == "bfloat16"
    assert autocast_dtype("cuda", bf16=False, fp16=True) == "float16"
    assert autocast_dtype("cuda", bf16=False, fp16=False) is None  # train.bf16=false: fp32, as trained
    assert autocast_dtype("cpu", bf16=True, fp16=False) is None
    with training_precision("cpu", True, False):  # a no-op on the CPU
        assert not torch.is_autocast_enabled()


@pytest.mark.integration
def test_the_trained_policy_is_freed_before_the_judges_load():
    import functools
    import weakref
    from types import SimpleNamespace

    from safealign.evaluation.scoring import PolicyModels
    from safealign.jobs.dpo import drop_models

    policy = torch.nn.Linear(4, 4)
    freed = []
    accelerator = SimpleNamespace(free_memory=lambda: freed.append(True))
    trainer = SimpleNamespace(model=policy, model_wrapped=policy, ref_model=None, accelerator=accelerator,
                              optimizer=torch.optim.AdamW(policy.parameters()), lr_scheduler=None)  # fmt: skip
    models = PolicyModels(policy, None, on_release=functools.partial(drop_models, trainer))
    alive = weakref.ref(policy)
    del policy
    models.release()
    assert alive() is None and freed == [True]  # nothing holds the policy: its memory is back


@pytest.mark.integration
def test_submitit_requeues_a_preempted_job_which_resumes_to_done(tmp_path):
    """Hydra's submitit_local launcher: SIGUSR2 to the job mid-training (what SLURM sends before the time
    limit) leaves a checkpoint and `interrupted`; submitit requeues the job, which resumes to done."""
    import time

    psutil = pytest.importorskip("psutil")
    cmd = [sys.executable, "recipes/dpo.py", "-m", "hydra/launcher=submitit_local",
           "train.max_steps=12", "train.per_device_train_batch_size=4", "train.save_steps=1000",
           "train.logging_steps=1", "train.report_to=[]", "objective=harmless", "quant=none",
           "eval.after_train=false", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir, signalled, deadline = tmp_path / "0", False, time.monotonic() + 400
    try:
        while not signalled and proc.poll() is None and time.monotonic() < deadline:
            logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob(".submitit/*/*_log.*"))
            if "step 2/" in logs:
                jobs = [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if "submitit.core._submit" in " ".join(c.cmdline())]  # fmt: skip
                assert len(jobs) == 1, jobs
                jobs[0].send_signal(signal.SIGUSR2)
                signalled = True
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob(".submitit/*/*_log.*"))
    assert signalled, out[-2000:]
    assert proc.returncode == 0, (out + logs)[-3000:]
    assert "interrupted by SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "done"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from"].startswith("checkpoint-") and metrics["global_step"] == 12


def test_bf16_true_is_refused_on_a_gpu_that_only_emulates_it(monkeypatch):
    from safealign.errors import ConfigError
    from safealign.settings import parse_train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 0))
    with pytest.raises(ConfigError, match=r"train\.bf16=true: this device has no bf16 support"):
        parse_train(compose("dpo", ["train.bf16=true"]))
