"""What the dSFT and dDPO stages share around TRL's trainers: their arguments, resuming, saving.

    args = training_args(recipe, output_dir)     # the recipe's SFTConfig or DPOConfig, writing to output_dir
    run_trainer(trainer, output_dir)             # trainer.train(), resumed from the last complete checkpoint
    save_outputs(trainer, tokenizer, output_dir, recipe, "sft", {"model": base_path, "dataset": data})   # + manifest
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from pathlib import Path

from . import progress
from .models import merge_lora
from .runs import display_path, write_manifest, write_run_info

logger = logging.getLogger(__name__)


def training_args(recipe, output_dir: str | Path):
    """The trainer's config: the recipe's own SFTConfig or DPOConfig (`recipe.args`), writing to `output_dir`.
    Its progress bars follow ZEPHYR_PROGRESS (`progress.enabled`) unless the recipe sets disable_tqdm."""
    args = copy.copy(recipe.args)
    args.output_dir = str(output_dir)
    if "disable_tqdm" not in recipe.given:
        args.disable_tqdm = not progress.enabled()  # ZEPHYR_PROGRESS=0: see progress.report_evaluations
    return args


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
    if recipe.use_peft:
        if trainer.is_world_process_zero():
            merge_lora(trainer, inputs["model"], recipe).save_pretrained(output_dir, safe_serialization=True)
    else:
        trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        write_run_info(output_dir, recipe, trainer.state.log_history)
        write_manifest(output_dir, stage, recipe, inputs, {"model": ".", "log_history": "log_history.json"}, run_name)
