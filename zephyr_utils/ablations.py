"""The paper's ablations (Table 3, and the dDPO-epochs finding of section 5), built from the stages.

    record = run_table3("tiny")     # trains the ablations, grades every model, writes runs/tiny/table3/results.json

The rows, each graded on the eval prompts by the scale's judge:
- `base`: the base model;  `dpo_only`: dDPO without dSFT (the dDPO recipe started from, and referenced
  to, the base model);  `sft`: dSFT-1;  `sft2`: dSFT-2, dSFT-1 trained one more epoch with the dSFT
  recipe on the AIF pairs' chosen conversations;  `dpo`: dSFT + dDPO;  `idk`: a constant
  "I don't know." to every turn, the score of having learnt nothing but to stop;
- `epochs`: the dDPO run's checkpoint at the end of each epoch (recipes with `save_strategy: epoch`),
  with the mean train reward accuracy logged during that epoch: the paper's Figure 3.
At `tiny` scale the ablations train in this process; at `demo`/`full` they run as `zephyr` stages.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import math
from pathlib import Path

from . import runs
from .cli import run_stage
from .config import load_recipe
from .dpo import train_dpo
from .evaluation import CONSTANT, evaluate
from .sft import train_sft

IDK = "I don't know."


def ablation_overrides(name: str, scale: str | None = None, **overrides) -> tuple[str, dict]:
    """(stage, recipe overrides) that train ablation `name` ("dpo_only" or "sft2") at `scale`."""
    if name == "dpo_only":
        recipe = load_recipe("dpo", scale, **overrides)
        return "dpo", {**overrides, "model_name_or_path": "base", "output_dir": str(runs.stage_dir(recipe, "dpo_only"))}
    if name == "sft2":
        recipe = load_recipe("sft", scale, **overrides)
        aif = runs.find("aif", recipe.scale, recipe.preset) / "preferences"  # `messages` = the chosen conversation
        return "sft", {**overrides, "model_name_or_path": "sft", "dataset": str(aif), "num_train_epochs": 1.0,
                       "max_steps": -1, "output_dir": str(runs.stage_dir(recipe, "sft2"))}
    raise ValueError(f"unknown ablation {name!r}; expected dpo_only or sft2")


def table3_order_holds(models: dict[str, dict]) -> bool:
    """The paper's Table 3 order, from `run_table3`'s "models" ({row: {"score": ...}}): dDPO without dSFT <
    dSFT-1 < dSFT + dDPO, and dSFT-2 < dSFT + dDPO."""
    s = {row: m["score"] for row, m in models.items()}
    return s["dpo_only"] < s["sft"] < s["dpo"] and s["sft2"] < s["dpo"]


def train_ablation(name: str, scale: str | None = None, **overrides) -> Path:
    """Train ablation `name` with its stage's recipe; returns its output directory. Its manifest names it
    `name`, so later stages never take it for the dSFT or dDPO run (see `runs.find`)."""
    stage, values = ablation_overrides(name, scale, **overrides)
    recipe = load_recipe(stage, scale, **values)
    if recipe.launcher == "in-process":
        return (train_dpo if stage == "dpo" else train_sft)(recipe, run_name=name)
    # many GPUs: `zephyr <stage>` under accelerate launch, never a 7B fine-tune in a kernel
    run_stage(stage, recipe.scale, *(f"{k}={json.dumps(v)}" for k, v in values.items()), run_name=name)
    return Path(values["output_dir"])


def epoch_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, checkpoint directory) for each checkpoint a run saved at an epoch's end, in order."""
    found = []
    for ckpt in Path(output_dir).glob("checkpoint-*"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if abs(state["epoch"] - round(state["epoch"])) < 1e-6:
            found.append((round(state["epoch"]), ckpt))
    return sorted(found)


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether two model directories hold byte-identical weights, one model.safetensors file each (sharded
    weights and LoRA adapters are never taken for the same model)."""
    a, b = Path(a) / "model.safetensors", Path(b) / "model.safetensors"
    return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def train_reward_accuracy(log_history: list[dict]) -> dict[int, float]:
    """{epoch k: mean of the logged train `rewards/accuracies` with epoch in (k - 1, k]}."""
    by_epoch: dict[int, list[float]] = {}
    for entry in log_history:
        if "rewards/accuracies" in entry and "epoch" in entry and not any(k.startswith("eval_") for k in entry):
            by_epoch.setdefault(max(1, math.ceil(entry["epoch"] - 1e-9)), []).append(entry["rewards/accuracies"])
    return {k: sum(v) / len(v) for k, v in sorted(by_epoch.items())}


def run_table3(scale: str | None = None, progress: bool = True, sets: dict | None = None,
               answered: dict | None = None, **overrides) -> dict:
    """Train the ablations (after the dSFT, AIF and dDPO stages have run), grade every row of Table 3
    and every dDPO epoch, compare dDPO with dSFT head to head, and write runs/<scale>/table3/results.json.
    `overrides` (e.g. seed, world_seed) apply to every stage's recipe, `sets` = {stage: {field: value}}
    to one stage's (dpo_only uses the dpo stage's, sft2 the sft stage's). `answered`: the answers of rows
    an `evaluation.evaluate` of the eval recipe already made (e.g. {"base": ..., "sft": ..., "dpo": ...})."""
    sets = sets or {}
    evaluation = load_recipe("eval", scale, **{k: v for k, v in overrides.items() if k in ("seed", "world_seed")})
    sft, dpo = (Path(runs.resolve(name, evaluation.scale, evaluation.preset, evaluation.world_seed)) for name in ("sft", "dpo"))
    models = {"base": runs.resolve("base", evaluation.scale, evaluation.preset, evaluation.world_seed),
              "dpo_only": str(train_ablation("dpo_only", scale, **overrides, **sets.get("dpo", {}))), "sft": str(sft),
              "sft2": str(train_ablation("sft2", scale, **overrides, **sets.get("sft", {}))), "dpo": str(dpo),
              "idk": CONSTANT + IDK}
    checkpoints = epoch_checkpoints(dpo)
    # a checkpoint with the final model's very weights file (the last epoch's, at tiny scale) is the dDPO row: graded once
    epoch_rows = {k: "dpo" if same_weights(path, dpo) else f"dpo_epoch{k}" for k, path in checkpoints}
    models.update({epoch_rows[k]: str(path) for k, path in checkpoints if epoch_rows[k] != "dpo"})
    results, answers = evaluate(dataclasses.replace(evaluation, reference=""), models, compare=("dpo", "sft"),
                                progress=progress, answered=answered)  # Table 3 is judged scores: no reference needed
    accuracy = train_reward_accuracy(json.loads((dpo / "log_history.json").read_text()))
    graded, pairwise = results.pop("models"), results.pop("pairwise")
    record = {
        **results,
        "models": {name: {k: v for k, v in m.items() if k != "ratings"} for name, m in graded.items() if "epoch" not in name},
        "dpo_vs_sft": {k: v for k, v in pairwise.items() if k not in ("a", "b")},
        "epochs": [{"epoch": k, "train_reward_accuracy": accuracy.get(k), "score": graded[epoch_rows[k]]["score"],
                    "ci95": graded[epoch_rows[k]]["ci95"]} for k, _ in checkpoints],
        "answers": {name: [[c.text for c in turns] for turns in a] for name, a in answers.items() if "epoch" not in name},
    }
    out = runs.stage_dir(evaluation, "table3")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=1))
    runs.write_manifest(out, "table3", evaluation, {n: p for n, p in models.items() if not p.startswith(CONSTANT)},
                        {"results": "results.json"})
    return record
