"""dSFT: TRL's SFTTrainer wired from a recipe.

    path = train_sft(load_recipe("sft", "tiny"))     # runs/tiny/sft: model, tokenizer, recipe, logs

The recipe carries TRL's own SFTConfig (`recipe.args`) and ModelConfig (`recipe.model`); this module adds
the data, the model and the hand-off to the next stage.

Resumes from the last checkpoint in the output directory when a run was interrupted (see `train`).
"""

from __future__ import annotations

from pathlib import Path

from . import progress, runs
from .config import SFTRecipe
from .data import load_sft_data
from .models import load_model, load_tokenizer, lora_config
from .train import run_trainer, save_outputs, subsample, training_args


def train_sft(recipe: SFTRecipe, callbacks: list | None = None, run_name: str = "sft") -> Path:
    """Fine-tune `recipe.model_name_or_path` on `recipe.dataset`; returns the output directory. Later
    stages find the run by `run_name` (see `runs.find`)."""
    from trl import SFTTrainer

    output_dir = runs.stage_dir(recipe, run_name)
    base_path = runs.resolve(recipe.model_name_or_path, recipe.scale, recipe.preset, recipe.world_seed)
    source = runs.resolve(recipe.dataset, recipe.scale, recipe.preset, recipe.world_seed)
    train = subsample(load_sft_data(source, recipe.train_split, recipe.world_seed), recipe.max_train_samples, recipe.seed)
    evaluation = subsample(load_sft_data(source, recipe.eval_split, recipe.world_seed), recipe.max_eval_samples, recipe.seed)
    tokenizer = load_tokenizer(base_path, recipe.trust_remote_code, recipe.model_revision)
    runs.begin(output_dir)  # an earlier run's manifest goes: the directory holds a run in progress
    args = training_args(recipe, output_dir)  # built when the recipe loaded: under ZeRO-3 the model loads as shards
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
    save_outputs(trainer, tokenizer, output_dir, recipe, "sft", {"model": base_path, "dataset": source}, run_name)
    return output_dir
