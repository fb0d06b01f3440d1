"""dSFT: TRL's SFTTrainer wired from a recipe.

    path = train_sft(load_recipe("sft", "tiny"))     # runs/tiny/sft: model, tokenizer, recipe, logs

Resumes from the last checkpoint in the output directory when a run was interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from . import progress
from .config import SFTRecipe, display_path, stage_dir, train_batch, write_run_info
from .data import load_sft_data
from .device import resolve_dtype
from .models import load_model, load_tokenizer, lora_config, merge_lora, resolve_model_path


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


def sft_config(recipe: SFTRecipe, output_dir: str | Path):
    from trl import SFTConfig

    return SFTConfig(
        **training_args(recipe, output_dir),
        packing=recipe.packing,
        packing_strategy=recipe.packing_strategy,
        assistant_only_loss=recipe.assistant_only_loss,
    )


def subsample(dataset, n: int | None, seed: int):
    """The first `n` rows after a seeded shuffle (all rows if n is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest *complete* checkpoint in `output_dir`, or None. The Trainer writes
    trainer_state.json last, so a run killed while saving leaves a checkpoint without a readable one:
    it is skipped and the previous checkpoint is used."""
    candidates = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    for ckpt in reversed(candidates):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(ckpt)
    return None


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
        print(f"resuming from {display_path(checkpoint)}", flush=True)
    tied = checkpoint and getattr(trainer.model.config, "tie_word_embeddings", False)
    log, quiet = logging.getLogger("transformers.trainer"), TiedHeadIsNotMissing()
    if tied:
        log.addFilter(quiet)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        log.removeFilter(quiet)


def train_sft(recipe: SFTRecipe, callbacks: list | None = None) -> Path:
    """Fine-tune `recipe.model_name_or_path` on `recipe.dataset`; returns the output directory."""
    from trl import SFTTrainer

    output_dir = stage_dir(recipe, "sft")
    base_path = resolve_model_path(recipe.model_name_or_path, recipe.scale, recipe.preset, recipe.world_seed)
    train = subsample(load_sft_data(recipe.dataset, recipe.train_split, recipe.world_seed), recipe.max_train_samples, recipe.seed)
    evaluation = subsample(load_sft_data(recipe.dataset, recipe.eval_split, recipe.world_seed), recipe.max_eval_samples, recipe.seed)
    tokenizer = load_tokenizer(base_path)
    args = sft_config(recipe, output_dir)  # before the model: under ZeRO-3 each process then loads only its shard
    trainer = SFTTrainer(
        model=load_model(base_path, recipe),
        args=args,
        train_dataset=train.select_columns(["messages"]),
        eval_dataset=evaluation.select_columns(["messages"]),
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
        callbacks=callbacks,
    )
    progress.report_evaluations(trainer, {"loss": "train loss", "eval_loss": "held-out loss"})
    run_trainer(trainer, output_dir)
    save_outputs(trainer, tokenizer, output_dir, recipe, base_path, base_model=base_path)
    return output_dir


def save_outputs(trainer, tokenizer, output_dir: Path, recipe, base_path: str, **info) -> None:
    """Save the trained model (LoRA merged in), its tokenizer, the recipe, versions and logs.

    Under `accelerate launch` every process gets here; the trainer gathers sharded weights and only the
    main process writes."""
    for config in (trainer.model.generation_config,):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if lora_config(recipe):
        if trainer.is_world_process_zero():
            merge_lora(trainer, base_path, recipe).save_pretrained(output_dir, safe_serialization=True)
    else:
        trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        write_run_info(output_dir, recipe, trainer.state.log_history, **info)
