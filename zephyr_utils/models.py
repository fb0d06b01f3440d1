"""Loading a model and tokenizer for training, per scale: dtype, attention, LoRA / QLoRA.

The functions here take a path or Hub id; `runs.resolve` turns a recipe's `model_name_or_path` (a name
such as "tiny", "base", "sft" or "dpo", a local directory or a Hub id) into one.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .chat import apply_zephyr_template
from .config import TrainRecipe
from .device import keep_freed_memory, resolve_dtype


def load_tokenizer(path: str, trust_remote_code: bool = False, revision: str = "main"):
    """The tokenizer with the Zephyr chat template and a pad token. (`revision`: of a Hub repository; a local
    directory has none.)"""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    apply_zephyr_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def quantization_config(recipe: TrainRecipe):
    """TRL's BitsAndBytesConfig for the recipe's ModelConfig (4-bit NF4 for QLoRA), or None. The compute
    dtype is the weights' (`resolve_dtype`). Needs the `gpu` extra (bitsandbytes)."""
    if not (recipe.load_in_4bit or recipe.load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError("load_in_4bit or load_in_8bit (QLoRA) needs bitsandbytes and a CUDA GPU: pip install 'zephyr-utils[gpu]'") from err
    from trl import get_quantization_config

    return get_quantization_config(dataclasses.replace(recipe.model, dtype=resolve_dtype(recipe.dtype)))


def kbit_device_map() -> dict | None:
    """Where a process puts its 4-bit model: all of it on its own GPU, `{"": LOCAL_RANK}`. (bitsandbytes
    weights cannot be moved after loading, and without a map every process of a multi-GPU launch would
    load onto GPU 0.) None on a CPU."""
    if not torch.cuda.is_available():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def lora_config(recipe: TrainRecipe):
    """peft's LoraConfig from the recipe's ModelConfig (`trl.get_peft_config`), or None for full fine-tuning."""
    from trl import get_peft_config

    return get_peft_config(recipe.model)


def load_model(path: str, recipe: TrainRecipe):
    """The causal LM to train: safetensors weights in the recipe's dtype (see `device.resolve_dtype`),
    quantized for QLoRA. On a CPU the allocator is tuned for training first (`keep_freed_memory`).

    Build the trainer's config (the recipe does, when it loads) *before* calling this: under `accelerate
    launch` with DeepSpeed ZeRO-3 it switches on `zero3_init_flag`, so that each process loads only its
    shard of the weights instead of the whole model."""
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_available():
        keep_freed_memory()

    kwargs = {"dtype": getattr(torch, resolve_dtype(recipe.dtype)), "use_safetensors": True,
              "trust_remote_code": recipe.trust_remote_code, "revision": recipe.model_revision}
    if recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    quant = quantization_config(recipe)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = kbit_device_map()
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def merge_lora(trainer, base_path: str, recipe: TrainRecipe):
    """A plain model with the trained LoRA adapter merged in, so the next stage starts from one set of
    weights (stacked unmerged adapters are a classic source of broken chat behaviour). For QLoRA the
    base is reloaded in `recipe.dtype` first: merging into 4-bit weights would lose precision."""
    model = trainer.model
    if recipe.load_in_4bit or recipe.load_in_8bit:
        from peft import PeftModel

        adapter_dir = Path(trainer.args.output_dir) / "adapter"
        model.save_pretrained(adapter_dir)
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, resolve_dtype(recipe.dtype)),
                                                    use_safetensors=True, revision=recipe.model_revision)
        model = PeftModel.from_pretrained(base, adapter_dir)
    return model.merge_and_unload()
