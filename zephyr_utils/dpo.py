"""dDPO: TRL's DPOTrainer wired from a recipe, and the DPO loss written out from its formula.

    path = train_dpo(load_recipe("dpo", "tiny"))     # runs/tiny/dpo

The policy starts from the dSFT model and the reference is the frozen dSFT model: a second copy for
full fine-tuning, or, with LoRA, the same weights with the adapter disabled (no second copy).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from . import runs
from .config import DPORecipe
from .data import load_preference_data
from .models import load_model, load_tokenizer, lora_config
from .progress import report_evaluations
from .train import run_trainer, save_outputs, subsample, training_args

# What DPOTrainer is given of an `ultrafeedback_binarized` row: the two full conversations. With no `prompt`
# column it splits off their shared turns as the prompt itself (`trl.extract_prompt`); the row's `prompt`
# (the first user turn, a string) would not be the prompt of a multi-turn pair.
PAIR_COLUMNS = ["chosen", "rejected"]


@contextlib.contextmanager
def trl_checkpointing_warning_filtered():
    """TRL 1.x's DPOTrainer reads `model.is_gradient_checkpointing` on every step, a property transformers 5
    deprecates with a FutureWarning: nothing we pass causes it, so exactly that warning is filtered where we
    call the trainer (a decorator on those functions, or a `with` block)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def dpo_loss(policy_chosen_logps: torch.Tensor,
             policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float):
    """The sigmoid DPO loss per pair, and the implicit rewards
    r = beta * (log pi - log pi_ref).

        loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x))
                                    - (log pi(y_l|x) - log ref(y_l|x))])

    Each argument is a tensor of summed log-probabilities of the
    completion tokens, one per pair.
    Returns (losses, chosen_rewards, rejected_rewards)."""
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards, rejected_rewards


def completion_logps(model, tokenizer, prompt: list[dict], answer: str) -> torch.Tensor:
    """Summed log-probability of a completion given a prompt, as DPO scores it.

    The completion is everything the chat template writes after the assistant cue: the answer, its
    EOS and the newline after it. Prompt and completion are tokenized separately and concatenated,
    as TRL does, so the numbers match the trainer's."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids], device=model.device)
    logps = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt_ids) - 1 :].sum()


@torch.no_grad()
def batch_logps(policy, reference, tokenizer, rows: list[dict]) -> tuple[torch.Tensor, ...]:
    """(policy chosen, policy rejected, reference chosen, reference rejected) summed log-probs of
    `ultrafeedback_binarized` rows: the four inputs of `dpo_loss`."""
    def logps(model, key):
        return torch.stack([completion_logps(model, tokenizer, r[key][:-1], r[key][-1]["content"]) for r in rows])

    return logps(policy, "chosen"), logps(policy, "rejected"), logps(reference, "chosen"), logps(reference, "rejected")


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """Share of pairs whose chosen answer gets the higher implicit reward (a tie counts one half)."""
    return ((chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()).mean().item()


@torch.no_grad()
@trl_checkpointing_warning_filtered()
def trl_loss_on_batch(policy, reference, tokenizer, rows: list[dict], recipe: DPORecipe) -> float:
    """The loss TRL's DPOTrainer computes on `rows` as one batch (to check `dpo_loss` against)."""
    import tempfile

    import datasets
    from trl import DPOTrainer

    data = datasets.Dataset.from_list(rows).select_columns(PAIR_COLUMNS)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(recipe, tmp)
        args.per_device_eval_batch_size = len(rows)
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, eval_dataset=data,
                             processing_class=tokenizer)
        trainer.model.eval()
        return trainer.compute_loss(trainer.model, next(iter(trainer.get_eval_dataloader()))).item()


@trl_checkpointing_warning_filtered()
def train_dpo(recipe: DPORecipe, callbacks: list | None = None, run_name: str = "dpo") -> Path:
    """Preference-tune `recipe.model_name_or_path` (the dSFT model) on `recipe.dataset` (the AIF pairs);
    returns the output directory. Later stages find the run by `run_name` (see `runs.find`)."""
    from trl import DPOTrainer

    output_dir = runs.stage_dir(recipe, run_name)
    start_path = runs.resolve(recipe.model_name_or_path, recipe.scale, recipe.preset, recipe.world_seed)
    source = runs.resolve(recipe.dataset, recipe.scale, recipe.preset, recipe.world_seed)
    train = subsample(load_preference_data(source, recipe.train_split), recipe.max_train_samples, recipe.seed)
    evaluation = subsample(load_preference_data(source, recipe.eval_split), recipe.max_eval_samples, recipe.seed)
    tokenizer = load_tokenizer(start_path, recipe.trust_remote_code, recipe.model_revision)
    runs.begin(output_dir)  # an earlier run's manifest goes: the directory holds a run in progress
    args = training_args(recipe, output_dir)  # built when the recipe loaded: under ZeRO-3 each model loads as shards
    peft = lora_config(recipe)  # LoRA: the reference is the policy with its adapter disabled, not a second copy
    trainer = DPOTrainer(
        model=load_model(start_path, recipe),
        ref_model=None if peft else load_model(start_path, recipe),  # full fine-tuning: a frozen copy of the start
        args=args,
        train_dataset=train.select_columns(PAIR_COLUMNS),
        eval_dataset=evaluation.select_columns(PAIR_COLUMNS),
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=callbacks,
    )
    report_evaluations(trainer, {"loss": "train loss", "eval_loss": "held-out loss",
                                 "eval_rewards/accuracies": "held-out accuracy", "eval_rewards/margins": "held-out margin"})
    run_trainer(trainer, output_dir)
    save_outputs(trainer, tokenizer, output_dir, recipe, "dpo", {"model": start_path, "dataset": source}, run_name)
    return output_dir
