"""The paper's ablations (Table 3 and the dDPO-epochs finding of section 5), built from the stages:

    dpo_only = train_dpo_only(scale)     # dDPO without dSFT: DPO from the base model on the same pairs
    sft2 = train_sft2(scale)             # dSFT-2: dSFT-1 plus one more SFT epoch on the AIF chosen answers
    epoch_checkpoints(dpo_dir)           # [(1, path), (2, path), ...]: the dDPO run at the end of each epoch
    train_reward_accuracy(log_history)   # {epoch: mean train `rewards/accuracies` during that epoch}

Each trains with the scale's own dSFT or dDPO recipe, changing only what the ablation changes, and writes
to runs/<scale>/<name>/ beside the stages' outputs.
"""

from __future__ import annotations

from pathlib import Path

from .config import load_recipe, stage_dir


def train_dpo_only(scale: str | None = None, **overrides) -> Path:
    """dDPO without dSFT (Table 3, first row): the dDPO recipe, started from (and referenced to) the base
    model instead of the dSFT model."""
    from .dpo import train_dpo

    recipe = load_recipe("dpo", scale, **overrides)
    recipe.model_name_or_path = "base"
    recipe.output_dir = recipe.output_dir or str(stage_dir(recipe, "dpo_only"))
    return train_dpo(recipe)


def train_sft2(scale: str | None = None, **overrides) -> Path:
    """dSFT-2 (Table 3): the dSFT model trained one more epoch, with the dSFT recipe, on the AIF pairs'
    chosen conversations (`messages` of the ultrafeedback_binarized schema). It asks whether preference
    optimisation is needed at all, or whether imitating the chosen answers is enough."""
    from .sft import train_sft

    recipe = load_recipe("sft", scale, **overrides)
    aif = stage_dir(load_recipe("aif", recipe.scale), "aif") / "preferences"
    recipe.model_name_or_path, recipe.dataset = str(stage_dir(recipe, "sft")), str(aif)
    recipe.num_train_epochs, recipe.max_steps = 1.0, -1
    recipe.output_dir = recipe.output_dir or str(stage_dir(recipe, "sft2"))
    return train_sft(recipe)


def epoch_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, checkpoint directory) for each checkpoint a run saved at an epoch's end (recipes with
    `save_strategy: epoch` and no `save_total_limit`), in order."""
    import json

    found = []
    for ckpt in Path(output_dir).glob("checkpoint-*"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if abs(state["epoch"] - round(state["epoch"])) < 1e-6:
            found.append((round(state["epoch"]), ckpt))
    return sorted(found)


def train_reward_accuracy(log_history: list[dict]) -> dict[int, float]:
    """{epoch k: mean of the logged train `rewards/accuracies` with epoch in (k - 1, k]}."""
    import math

    by_epoch: dict[int, list[float]] = {}
    for entry in log_history:
        if "rewards/accuracies" in entry and "eval_loss" not in entry and "epoch" in entry:
            by_epoch.setdefault(max(1, math.ceil(entry["epoch"] - 1e-9)), []).append(entry["rewards/accuracies"])
    return {k: sum(v) / len(v) for k, v in sorted(by_epoch.items())}
