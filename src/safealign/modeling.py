"""Loading any causal LM for training or scoring: bitsandbytes quantization, LoRA, and the reference.

The `model`, `quant` and `peft` groups are mapped onto TRL's `ModelConfig`, and TRL's
`get_quantization_config` / `get_peft_config` build the bitsandbytes and LoRA configs, so
safealign gets TRL's defaults (and keys such as `bnb_4bit_quant_storage`, which QLoRA with
FSDP needs) without restating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .devices import has_bf16, load_dtype
from .errors import SafealignError
from .hub import go_offline_unless_reachable
from .settings import QUANT_METHODS
from .tiny import resolve_path


def trl_model_config(name_or_path: str, quant: str, peft: Any | None = None) -> Any:
    """safealign's `quant` (and `peft`) choices as TRL's ModelConfig.

    nf4 is QLoRA's 4-bit NF4 with double quantization; its compute dtype is bf16 where the
    GPU has it, else fp32 (TRL takes the compute dtype from `dtype`).
    """
    from trl import ModelConfig

    lora = peft is not None and peft.method == "lora"
    return ModelConfig(
        model_name_or_path=name_or_path,
        dtype="bfloat16" if has_bf16() else "float32",
        load_in_4bit=quant == "nf4",
        load_in_8bit=quant == "int8",
        bnb_4bit_quant_type="nf4",
        use_bnb_nested_quant=True,
        use_peft=lora,
        lora_r=peft.r if lora else 16,
        lora_alpha=peft.alpha if lora else 32,
        lora_dropout=peft.dropout if lora else 0.05,
        lora_target_modules=target_modules(peft.target_modules) if lora else None,
    )


def target_modules(modules: Any) -> Any:
    """`peft.target_modules` as PEFT takes it: a list of module names, or the string "all-linear"."""
    return modules if isinstance(modules, str) else list(modules)


def quantization_config(method: str) -> Any:
    """bitsandbytes settings for `quant=`: nf4, int8, or none (None), from TRL's `get_quantization_config`."""
    from trl import get_quantization_config

    if method not in QUANT_METHODS:
        raise SafealignError(f"quant.method: expected one of {', '.join(QUANT_METHODS)}, got '{method}'")
    return get_quantization_config(trl_model_config("", method))


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if has_bf16() else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref_model: Any | None
    peft_config: Any | None


def _hub_error(path: str, err: Exception) -> SafealignError:
    return SafealignError(
        f"could not load model '{path}' (model.name_or_path): {err}\n"
        "Without network access, download the model once elsewhere and set model.name_or_path=/path/to/model."
    )


def load_tokenizer(model_cfg: Any) -> Any:
    """The model's tokenizer, loaded first so the template can be checked before the weights load."""
    from transformers import AutoTokenizer

    path = resolve_path(model_cfg)
    if not Path(path).expanduser().exists():  # a hub id: fail in seconds, not minutes, without a network
        go_offline_unless_reachable(f"the model {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=bool(model_cfg.trust_remote_code)
        )
    except OSError as err:
        raise _hub_error(path, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_cfg: Any,
    quant_method: str,
    peft_cfg: Any,
    tokenizer: Any | None = None,
    gradient_checkpointing: bool = False,
    reference: bool | None = None,
) -> LoadedModel:
    """Load the policy (quantized if asked) and the LoRA config or the reference model.

    With LoRA the reference is the same base model with adapters disabled (TRL does this),
    so no second copy is loaded; full fine-tuning loads an explicit, unquantized reference
    (`reference`, by default whether `peft=none`). Remote code runs only with
    `model.trust_remote_code=true`.

    With `model.adapter` (a previous run) the policy is a PeftModel that already carries that
    run's adapter, trainable, and there is no LoRA config: TRL's DPOTrainer then copies the
    adapter into a frozen "ref" adapter and uses it as the reference, so the reference is the
    starting run's model on the same single copy of the base weights.
    """
    if reference is None:
        reference = peft_cfg.method == "none"
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    path = resolve_path(model_cfg)
    kwargs: dict[str, Any] = {
        "revision": model_cfg.revision,
        "trust_remote_code": bool(model_cfg.trust_remote_code),
        "dtype": torch_dtype(model_cfg.dtype),  # the reference: never trained, bf16 where the GPU has it
    }
    full = peft_cfg.method == "none" and getattr(model_cfg, "adapter", None) is None
    policy_dtype = torch_dtype(load_dtype(model_cfg.dtype, full, has_bf16()))  # fp32 master weights (devices.py)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization_config(quant_method),
                                                     **{**kwargs, "dtype": policy_dtype})  # fmt: skip
        ref_model = AutoModelForCausalLM.from_pretrained(path, **kwargs) if reference else None
    except OSError as err:
        raise _hub_error(path, err) from err
    if quant_method != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_4bit_differentiable(model)
    adapter = getattr(model_cfg, "adapter", None)
    if adapter is not None:
        from peft import PeftModel

        from .settings import adapter_dir

        model = PeftModel.from_pretrained(model, str(adapter_dir(adapter)), is_trainable=True)
        return LoadedModel(model, tokenizer, ref_model, None)
    config = lora_config(peft_cfg)
    check_target_modules(model, config, f"model.name_or_path={model_cfg.name_or_path}")
    return LoadedModel(model, tokenizer, ref_model, config)


def check_target_modules(model: Any, config: Any | None, where: str) -> None:
    """Raise SafealignError for a `peft.target_modules` name that matches no module of the model.

    Why here: PEFT finds out only when TRL wraps the model, after the reference log-probs have been
    computed, and says so in a traceback; a misspelled name among several would even pass silently.
    Names match as PEFT matches them (the module's full name, or its last dotted parts); a single
    string (`all-linear`, a regular expression) is PEFT's to match.
    """
    targets = getattr(config, "target_modules", None)
    if targets is None or isinstance(targets, str):
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in sorted(targets) if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise SafealignError(
            f"peft.target_modules: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a module of "
            f"{where}. Its linear layers: {', '.join(linear)} (or write peft.target_modules=all-linear)"
        )


SCORE_HEAD = "score"  # transformers' *ForSequenceClassification head: trained and saved with the adapter


def load_score_model(model_cfg: Any, quant_method: str, tokenizer: Any, gradient_checkpointing: bool = False,
                     train: bool = True) -> Any:  # fmt: skip
    """The base model with a one-output score head (a reward or cost model), quantized if asked.

    A quantized model is prepared for k-bit training (its norms in fp32), for training and for
    judging alike, so a judge is read in the dtypes it was trained in; for training (`train`) it
    is also kept differentiable (`keep_4bit_differentiable`), as the policy is. A judge only
    read keeps bitsandbytes' fast CPU inference kernel (`fast_4bit_inference`). The head starts
    random (seeded by TRL from `train.seed`) and is trained with the adapter (`judge_lora_config`).
    """
    from transformers import AutoModelForSequenceClassification

    from .trl_compat import suppress_seqcls_warning

    path = resolve_path(model_cfg)
    try:
        with suppress_seqcls_warning():  # the head is new on a causal LM's checkpoint: expected, not worth a report
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, quantization_config=quantization_config(quant_method), revision=model_cfg.revision,
                trust_remote_code=bool(model_cfg.trust_remote_code), dtype=torch_dtype(model_cfg.dtype),
            )  # fmt: skip
    except OSError as err:
        raise _hub_error(path, err) from err
    model.config.pad_token_id = tokenizer.pad_token_id
    if quant_method != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        if train:
            keep_4bit_differentiable(model)
    return model


def judge_lora_config(peft_cfg: Any) -> Any:
    """`peft=lora` for a judge: LoRA on the sequence-classification model, the score head trained in full and
    saved with the adapter (PEFT's `modules_to_save`); None for full fine-tuning."""
    config = lora_config(peft_cfg)
    if config is not None:
        config.task_type = "SEQ_CLS"
        config.modules_to_save = [SCORE_HEAD]
    return config


def score_head_fp32(model: Any) -> None:
    """A judge's trained score head (PEFT's `modules_to_save` copy) in fp32, reading its input in fp32.

    Why: TRL casts every trainable weight of a quantized model to bf16 (QLoRA's recipe for the
    LoRA matrices), the head included, while the hidden states reaching it are fp32 on a CPU, and
    matmul refuses mixed dtypes; a scalar score is also where bf16's 3 significant digits would
    show. Training and judging both call this, so a reloaded judge computes as the trained one did.
    """
    for name, module in model.named_modules():
        if name.endswith("modules_to_save.default") or (name.endswith(SCORE_HEAD) and "modules_to_save" not in name
                                                         and not list(module.children())):  # fmt: skip
            module.float()
            if not getattr(module, "_safealign_fp32_input", False):
                module.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))
                module._safealign_fp32_input = True


def keep_4bit_differentiable(model: Any) -> None:
    """Keep every 4-bit layer of a model that will be trained differentiable with respect to its input.

    Why: on a CPU with AVX512-BF16, bitsandbytes' `Linear4bit.forward` in eval mode without
    gradients (TRL's reference log-prob precompute, an evaluation during training) repacks the
    weight for its fused CPU inference kernel, for good; from then on every call, training
    included, goes through that kernel, whose output has no gradient with respect to the input.
    Gradients then stop at every quantized layer: a LoRA matrix reaches the loss only through a
    frozen 4-bit layer (`[q_proj, v_proj]` through `o_proj`, `gate_proj` through `down_proj`)
    gets a gradient of 0 and never moves. Turning the repacking off keeps the autograd path;
    on other CPUs and on GPUs the attribute is never read. (`tests/test_learning.py` checks that
    bitsandbytes still has it.)
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module._safealign_avx512bf16 = getattr(module, "support_avx512bf16_for_cpu", False)
            module.support_avx512bf16_for_cpu = False


def fast_4bit_inference(model: Any) -> None:
    """Undo `keep_4bit_differentiable` once training is over: a judge read after training (its held-out
    evaluation) uses bitsandbytes' fused CPU kernel where the CPU has it, as a judge loaded for judging
    does, so both give the same scores (on a CPU without AVX512-BF16 the attribute is never read)."""
    for module in model.modules():
        if hasattr(module, "_safealign_avx512bf16"):
            module.support_avx512bf16_for_cpu = module._safealign_avx512bf16


def lora_config(peft_cfg: Any) -> Any:
    """The LoRA config of `peft=lora` (TRL's `get_peft_config`), or None for full fine-tuning."""
    from trl import get_peft_config

    return get_peft_config(trl_model_config("", "none", peft_cfg))


def load_adapter_weights(model: Any, adapter: str | Path) -> None:
    """Set the PeftModel's trained ("default") LoRA adapter to the weights saved in `adapter` (a run or adapter
    directory), leaving every other adapter, TRL's frozen "ref" copy included, as it is.

    Why: `iterate.reference=initial` trains round r from round r-1's adapter while the DPO reference stays
    the starting policy; TRL takes its reference from the model it is given (the "ref" copy of the starting
    adapter, or the adapters disabled), so the trained adapter's starting weights are set afterwards.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from .settings import adapter_dir

    path = adapter_dir(str(adapter)) / "adapter_model.safetensors"
    if not path.is_file():
        raise SafealignError(f"{adapter}: no adapter_model.safetensors to start the trained adapter from")
    result = set_peft_model_state_dict(model, load_file(str(path)), adapter_name="default")
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise SafealignError(f"{adapter}: its adapter does not match the trained one ({unexpected[0]}, ...); the "
                             "rounds of one iteration must share the peft settings")  # fmt: skip
