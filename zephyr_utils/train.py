"""What the dSFT and dDPO stages share around TRL's trainers: their arguments, resuming, saving.

    args = training_args(recipe, output_dir)     # keyword arguments of SFTConfig and DPOConfig alike
    run_trainer(trainer, output_dir)             # trainer.train(), resumed from the last complete checkpoint
    save_outputs(trainer, tokenizer, output_dir, recipe, "sft", {"model": base_path, "dataset": data})   # + manifest
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from . import progress
from .config import train_batch
from .device import resolve_dtype
from .models import lora_config, merge_lora
from .runs import display_path, write_manifest, write_run_info

logger = logging.getLogger(__name__)


def process_count() -> int:
    """The processes of this run: $WORLD_SIZE under `accelerate launch`/torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_args(recipe, output_dir: str | Path, processes: int | None = None) -> dict:
    """The keyword arguments shared by SFTConfig and DPOConfig, from a recipe (pure: no download).

    The batch comes from `config.train_batch` for `processes` (default: this run's process count), and
    mixed precision from the weights' dtype: bf16 or fp16 autocast on a GPU, none on a CPU."""
    import torch

    on_cpu = not torch.cuda.is_available()
    dtype = resolve_dtype(recipe.dtype)
    per_device, accumulation = train_batch(recipe, processes or process_count())
    return dict(
        output_dir=str(output_dir),
        seed=recipe.seed,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=recipe.per_device_eval_batch_size,
        gradient_accumulation_steps=accumulation,
        train_sampling_strategy=recipe.train_sampling_strategy,
        max_length=recipe.max_length,
        bf16=recipe.bf16 or (dtype == "bfloat16" and not on_cpu),
        fp16=dtype == "float16" and not on_cpu,
        activation_checkpointing=recipe.gradient_checkpointing,
        optim=recipe.optim,
        weight_decay=recipe.weight_decay,
        logging_steps=recipe.logging_steps,
        eval_strategy="steps" if recipe.eval_steps else "epoch",
        eval_steps=recipe.eval_steps,
        save_strategy=recipe.save_strategy,
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        report_to=recipe.report_to,
        use_cpu=on_cpu,
        dataloader_pin_memory=not on_cpu,
        disable_tqdm=not progress.enabled(),  # ZEPHYR_PROGRESS=0: see progress.report_evaluations
    )


def subsample(dataset, n: int | None, seed: int):
    """The first `n` rows after a seeded shuffle (all rows if n is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def is_complete(checkpoint: str | Path) -> bool:
    """Whether a checkpoint was saved to the end: the Trainer writes trainer_state.json last."""
    try:
        json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint in `output_dir` (transformers' `get_last_checkpoint`), or None.

    A run killed while saving leaves a newest checkpoint without a readable trainer_state.json: it is
    deleted (with a warning), so that the run resumes from the one before and the Trainer never meets it."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    while (checkpoint := get_last_checkpoint(str(output_dir))) and not is_complete(checkpoint):
        logger.warning("deleting %s: its save did not finish (no readable trainer_state.json)", display_path(checkpoint))
        shutil.rmtree(checkpoint, ignore_errors=True)  # every process of a launch may try: errors of the race ignored
        if Path(checkpoint).exists():
            raise RuntimeError(f"{checkpoint}: an unfinished checkpoint that could not be deleted; delete it, then rerun")
    return checkpoint


class TiedHeadIsNotMissing(logging.Filter):
    """transformers' Trainer, resuming a model whose output layer is tied to its input embeddings (the tiny
    models), warns that the checkpoint lacks lm_head.weight: the checkpoint leaves the tied copy out on
    purpose, and the weight is loaded with the embeddings it shares. Exactly that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.fullmatch(r"There were missing keys in the checkpoint model loaded: \['lm_head\.weight'\]\.",
                                record.getMessage())


def run_trainer(trainer, output_dir: Path) -> None:
    """`trainer.train()`, resuming from the last complete checkpoint if there is one."""
    checkpoint = last_checkpoint(output_dir)
    if checkpoint:
        logger.info("resuming from %s", display_path(checkpoint))
    tied = checkpoint and getattr(trainer.model.config, "tie_word_embeddings", False)
    log, quiet = logging.getLogger("transformers.trainer"), TiedHeadIsNotMissing()
    if tied:
        log.addFilter(quiet)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        log.removeFilter(quiet)


def save_outputs(trainer, tokenizer, output_dir: Path, recipe, stage: str, inputs: dict[str, str],
                 run_name: str | None = None) -> None:
    """Save the trained model (LoRA merged in), its tokenizer, the recipe, versions and logs, then the run's
    manifest (`runs.write_manifest`; `inputs["model"]` is the model training started from).

    Under `accelerate launch` every process gets here; the trainer gathers sharded weights and only the
    main process writes."""
    generation = trainer.model.generation_config
    generation.eos_token_id, generation.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if lora_config(recipe):
        if trainer.is_world_process_zero():
            merge_lora(trainer, inputs["model"], recipe).save_pretrained(output_dir, safe_serialization=True)
    else:
        trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        write_run_info(output_dir, recipe, trainer.state.log_history)
        write_manifest(output_dir, stage, recipe, inputs, {"model": ".", "log_history": "log_history.json"}, run_name)
