"""What the device and the launcher allow: precision, dtypes, and the combinations refused before loading.

Why pure functions: no GPU is lent to the tests or CI, so each decision takes the device's
capabilities (compute capability, GPU count) and the launcher's environment (what `accelerate
launch` exports) as arguments, and `tests/test_gpu_paths.py` checks every branch on the CPU.
The callers in `trainer.py`, `modeling.py` and `jobs/dpo.py` pass in what torch and
`os.environ` report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SafealignError

LAUNCHED = ("WORLD_SIZE", "LOCAL_RANK")  # set by accelerate launch, torchrun, and SLURM's srun through them


def native_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 in hardware: compute capability 8.0 (Ampere) or newer.

    Why not `torch.cuda.is_bf16_supported()`: by default it also counts emulation, so a V100
    (7.0) would train in emulated bf16, several times slower, and DeepSpeed refuses it.
    """
    return capability is not None and capability >= (8, 0)


def mixed_precision(cuda: bool, bf16_native: bool, bf16: bool | str = "auto") -> dict[str, bool]:
    """`train.bf16` as the Trainer's bf16/fp16 flags: `auto` is bf16 where the GPU has it natively,
    fp16 (with loss scaling) on an older GPU, and neither on the CPU."""
    if bf16 != "auto":
        return {"bf16": bool(bf16)}
    return {"bf16": cuda and bf16_native, "fp16": cuda and not bf16_native}


def autocast_dtype(device_type: str, bf16: bool, fp16: bool) -> str | None:
    """The autocast dtype evaluation and generation run under: training's (the Trainer autocasts to
    bf16 or fp16 on a GPU), so held-out log-probs are the numbers training optimised; none on the CPU."""
    if device_type != "cuda":
        return None
    return "bfloat16" if bf16 else "float16" if fp16 else None


def has_bf16() -> bool:
    """bf16 in hardware on every visible GPU (not emulated: `native_bf16`)."""
    cuda, native, _ = cuda_capabilities()
    return cuda and native


def training_precision(device: Any, bf16: bool | None = None, fp16: bool | None = None) -> Any:
    """A context that autocasts as training did on `device` (`bf16`/`fp16`: the run's DPOConfig flags;
    None: `train.bf16=auto`'s choice for this GPU)."""
    import contextlib

    import torch

    if bf16 is None or fp16 is None:
        flags = mixed_precision(torch.cuda.is_available(), has_bf16())
        bf16, fp16 = flags["bf16"], flags["fp16"]
    dtype = autocast_dtype(torch.device(device).type, bool(bf16), bool(fp16))
    return torch.autocast("cuda", dtype=getattr(torch, dtype)) if dtype else contextlib.nullcontext()


def load_dtype(name: str, full_fine_tuning: bool, bf16_native: bool) -> str:
    """The dtype the policy's weights load in for `model.dtype`.

    `auto` loads a fully fine-tuned policy in fp32: the Trainer's bf16 is autocast only, so the
    weights AdamW updates are the loaded ones, and in bf16 most updates at full fine-tuning's
    learning rates (5e-7..2e-5) are below half a bf16 step and vanish. fp32 weights are the
    master copy; the forward pass still runs in bf16 under autocast. LoRA and quantized
    models load in bf16 where the GPU has it (their trained weights are fp32 anyway).
    """
    if name != "auto":
        return name
    if full_fine_tuning:
        return "float32"
    return "bfloat16" if bf16_native else "float32"


@dataclass(frozen=True)
class Launch:
    """How this process was started, from the environment `accelerate launch` / torchrun export."""

    launched: bool  # by a launcher (one or more processes), not a plain `python recipes/...`
    fsdp: bool
    deepspeed_stage: int | None
    fsdp_state_dict_type: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        env = os.environ if env is None else env
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        deepspeed = env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        return cls(
            launched=any(k in env for k in LAUNCHED),
            fsdp=env.get("ACCELERATE_USE_FSDP", "").lower() == "true",
            deepspeed_stage=int(stage) if deepspeed and stage and stage.isdigit() else None,
            fsdp_state_dict_type=env.get("FSDP_STATE_DICT_TYPE"),
        )


def check_launch(launch: Launch, gpus: int, quant: str) -> None:
    """Refuse, in one line that says what works, a launch that would crash or save nothing on a GPU."""
    if gpus > 1 and not launch.launched:
        raise SafealignError(
            f"this machine has {gpus} GPUs and the run was started without a launcher, which TRL refuses "
            "(DataParallel). Pick one GPU: CUDA_VISIBLE_DEVICES=0 python recipes/..., or use all of them: "
            "accelerate launch --config_file conf/accelerate/ddp.yaml recipes/..."
        )
    if quant != "none" and launch.fsdp:
        raise SafealignError(
            f"quant={quant} under FSDP is not supported: its bitsandbytes weights cannot be sharded as safealign "
            "loads them. Use quant=none with conf/accelerate/fsdp.yaml, or quant=nf4 with conf/accelerate/ddp.yaml "
            "or deepspeed_zero2.yaml"
        )
    if quant != "none" and launch.deepspeed_stage == 3:
        raise SafealignError(
            f"quant={quant} under DeepSpeed ZeRO-3 is not supported: its bitsandbytes weights cannot be partitioned "
            "as safealign loads them. Use quant=none with deepspeed_zero3.yaml, or quant=nf4 with "
            "deepspeed_zero2.yaml or ddp.yaml"
        )
    if launch.fsdp and launch.fsdp_state_dict_type not in (None, "FULL_STATE_DICT"):
        raise SafealignError(
            f"fsdp_state_dict_type: {launch.fsdp_state_dict_type} saves no adapter or model a later step can load; "
            "set fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config (conf/accelerate/fsdp.yaml does)"
        )


def precompute_under(launch: Launch, precompute_ref: bool) -> bool:
    """Whether the reference log-probs are precomputed: not under FSDP.

    Why: TRL precomputes before its Trainer has moved the FSDP policy to the GPU, so the model is
    on the CPU while the batches are on CUDA (TRL issue #6470). Under FSDP the reference
    log-probs are computed batch by batch instead, which costs a reference forward per step.
    """
    return precompute_ref and not launch.fsdp


def cuda_capabilities() -> tuple[bool, bool, int]:
    """(CUDA available, bf16 native on every visible GPU, number of GPUs), from torch."""
    import torch

    if not torch.cuda.is_available():
        return False, False, 0
    gpus = torch.cuda.device_count()
    native = all(native_bf16(torch.cuda.get_device_capability(i)) for i in range(gpus))
    return True, native, gpus
