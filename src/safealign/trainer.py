"""The training loop's public parts: the DPOConfig (or SFTConfig) a run trains with, and the callbacks it adds.

`settings` has already checked every `train` value; this module only resolves what
depends on the device (`bf16: auto`, CPU training) and builds TRL's `DPOConfig`. The
margin-aware trainer itself overrides TRL internals, so it lives in `trl_compat`.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from trl import DPOConfig, SFTConfig

from .errors import ConfigError, did_you_mean

# transformers 5 deprecates `gradient_checkpointing_enable` and `is_gradient_checkpointing`, which
# its own Trainer, PEFT's `prepare_model_for_kbit_training` and TRL 1.16 still call whenever
# train.gradient_checkpointing is on: the warnings are about those libraries' code, not anything
# a user set or can change, so they are not shown.
for _name in ("gradient_checkpointing_enable", "is_gradient_checkpointing"):
    warnings.filterwarnings("ignore", message=f"`{_name}` is deprecated", category=FutureWarning)


def dpo_config(train: Mapping[str, Any], output_dir: str | Path, precompute_ref: bool = False) -> DPOConfig:
    """The checked `train` keys as TRL's DPOConfig. `bf16: auto` means bf16 where the GPU has it natively."""
    args = trl_config(DPOConfig, train, output_dir)
    args.precompute_ref_log_probs = precompute_ref
    return args


def sft_config(train: Mapping[str, Any], output_dir: str | Path) -> SFTConfig:
    """The checked `train` keys of `recipes/sft.py` as TRL's SFTConfig."""
    return trl_config(SFTConfig, train, output_dir)


def reward_config(train: Mapping[str, Any], output_dir: str | Path) -> Any:
    """The checked `train` keys of `recipes/reward.py` as TRL's RewardConfig."""
    from trl import RewardConfig

    return trl_config(RewardConfig, train, output_dir)


def trl_config(cls: type, train: Mapping[str, Any], output_dir: str | Path) -> Any:
    """The checked `train` keys as the TRL config class `cls`, resolving what depends on the device."""
    kwargs = dict(train)
    # Without a GPU, train on the CPU explicitly: that is also what makes a multi-process launch
    # (accelerate launch --multi_gpu, torchrun) use gloo there instead of running each rank alone.
    kwargs.setdefault("use_cpu", not torch.cuda.is_available())
    if kwargs.get("bf16", "auto") == "auto":  # bf16 where the GPU has it natively, else fp16 on a GPU
        from .devices import has_bf16, mixed_precision

        flags = mixed_precision(torch.cuda.is_available(), has_bf16())
        kwargs["bf16"] = flags["bf16"]
        if flags["fp16"]:
            kwargs.setdefault("fp16", True)
    # Every trained weight (LoRA, or the whole model) takes part in every step: DDP's search for unused
    # parameters (the Trainer's default without gradient checkpointing) is a graph walk per step for nothing.
    kwargs.setdefault("ddp_find_unused_parameters", False)
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing and warns on the
    # old name; safealign keeps the name users know and passes the new one.
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):  # fmt: skip
        if old in kwargs and kwargs.get(new) is None:
            kwargs[new] = kwargs.pop(old)
    try:
        args = cls(output_dir=str(output_dir), **kwargs)
    except (TypeError, ValueError) as err:  # e.g. "bogus is not a valid SchedulerType": name the key
        head = str(err).split(" is")[0]
        named = [k for k, v in kwargs.items() if isinstance(v, (str, int, float)) and f"{v}" in head]
        raise ConfigError(f"train.{named[0]}: {err}" if len(named) == 1 else f"train: {err}") from err
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [r for r in (args.report_to or []) if r not in INTEGRATION_TO_CALLBACK and r not in ("all", "none")]
    if unknown:
        valid = [*sorted(INTEGRATION_TO_CALLBACK), "all", "none"]
        raise ConfigError(f"train.report_to: unknown integration {unknown[0]!r}. Valid: {', '.join(valid)}."
                          f"{did_you_mean(unknown[0], valid)}")  # fmt: skip
    return args


def preemption_signal() -> int:
    """The signal a cluster sends before a job's time limit: submitit's (`SUBMITIT_PREEMPT_SIGNAL`, default USR2)."""
    import os

    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return int(getattr(signal, f"SIG{name}", signal.SIGUSR2))


class StopOnSignal(TrainerCallback):
    """On SIGTERM, Ctrl-C or the cluster's pre-timeout signal (SIGUSR2), finish the step, save a checkpoint, stop.

    The Trainer then returns normally with `stopped_by` set, so the caller can mark the run
    interrupted and exit; `train.resume=auto` continues from that checkpoint. Under submitit
    (`+cluster=slurm`), its own handler of the pre-timeout signal requeues the job: that
    handler is kept as `requeue` and called once the run is marked interrupted, so the
    requeued job resumes from the checkpoint instead of losing the steps since the last save.
    """

    def __init__(self) -> None:
        self.stopped_by: int | None = None
        self.requeue: Any = None  # the handler this one displaced for the signal received, if it was a function
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped_by is not None:  # a second signal: stop now, as the user insists
            raise KeyboardInterrupt
        self.stopped_by = signum

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, preemption_signal()):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stop = self.stopped_by is not None
        if args.world_size > 1 and torch.distributed.is_initialized():
            # Every rank must stop at the same step, or the others wait forever in the next all-reduce.
            flag = torch.tensor([float(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
            self.stopped_by = self.stopped_by or (signal.SIGTERM if stop else None)
        if stop:
            control.should_log = True  # the losses up to here, so that a resumed run's train_loss covers every step
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        preempt = preemption_signal()
        if self.stopped_by == preempt and callable(self._previous.get(preempt)):
            handler = self._previous[preempt]
            self.requeue = lambda: handler(preempt, None)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class ProgressLog(ProgressCallback):
    """transformers' progress bar, with each log line written as numbers (`loss=1.013 ...`), not a dict of strings."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        shown = {k: v for k, v in logs.items() if k != "total_flos" and isinstance(v, (int, float))}
        line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        self.training_bar.write(f"step {state.global_step}/{state.max_steps}  {line}")


def use_progress_log(trainer: Any) -> None:
    """Swap the Trainer's progress callback for `ProgressLog` (when it shows progress at all)."""
    if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ProgressLog())


def model_summary(model: Any, name_or_path: str, quant: str, peft: str) -> dict[str, Any]:
    """What was trained: the model, its quantization as loaded, and the trainable share."""
    import bitsandbytes as bnb

    quantized = sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())
    return {
        "name_or_path": name_or_path,
        "quant": quant,
        "peft": peft,
        "quantized_linear_layers": quantized,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
