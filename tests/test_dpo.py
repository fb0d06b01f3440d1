import json

import pytest
import torch

from zephyr_utils.config import SCALES, load_recipe
from zephyr_utils.dpo import dpo_loss
from zephyr_utils.train import training_args


def test_dpo_loss_by_hand():
    losses, chosen, rejected = dpo_loss(torch.tensor([-5.0, -3.0]), torch.tensor([-9.0, -3.0]),
                                        torch.tensor([-6.0, -3.0]), torch.tensor([-8.0, -3.0]), beta=0.1)
    # pair 0: margin = 0.1 * ((-5 + 6) - (-9 + 8)) = 0.2 ; pair 1: identical to the reference -> log 2
    assert torch.allclose(chosen, torch.tensor([0.1, 0.0])) and torch.allclose(rejected, torch.tensor([-0.1, 0.0]))
    assert torch.allclose(losses, torch.tensor([-torch.nn.functional.logsigmoid(torch.tensor(0.2)).item(), 0.693147]), atol=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_every_shipped_dpo_recipe_is_trls_own_config(scale, tmp_path):
    """A recipe is parsed into TRL's DPOConfig: the loss type is TRL's list of losses (`--set loss_type=ipo`
    makes a list of one), and a global batch is made on one process."""
    from trl import DPOConfig

    recipe = load_recipe("dpo", scale)
    assert isinstance(recipe.args, DPOConfig)
    assert load_recipe("dpo", scale, loss_type="ipo").args.loss_type == ["ipo"]
    config = training_args(recipe, tmp_path)
    assert [str(getattr(t, "value", t)) for t in config.loss_type] == ["sigmoid"]
    if recipe.global_batch_size:  # this test runs as one process
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps == recipe.global_batch_size


def pairs(n):
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"What color is the creature number {i}?"}]
        rows.append({"prompt": prompt[0]["content"], "prompt_id": str(i),
                     "chosen": prompt + [{"role": "assistant", "content": f"It is blue, number {i}."}],
                     "rejected": prompt + [{"role": "assistant", "content": "The fur of the hills is eight legs and"}]})
    return rows


def multi_turn_pair():
    """A pair whose rejected answer repeats the chosen conversation's first answer."""
    earlier = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "And what color is the creature?"}]
    return {"prompt": "Hi.", "prompt_id": "m", "chosen": earlier + [{"role": "assistant", "content": "It is blue."}],
            "rejected": earlier + [{"role": "assistant", "content": "Hello."}]}


def test_trl_splits_our_pairs_into_the_shared_turns_and_the_two_answers():
    """DPOTrainer is given only the chosen and rejected conversations and extracts the prompt itself
    (`trl.extract_prompt`): for a multi-turn pair too, the prompt is every turn before the last answer."""
    import datasets
    from trl import extract_prompt

    from zephyr_utils.dpo import PAIR_COLUMNS

    rows = pairs(2) + [multi_turn_pair()]
    for row, split in zip(rows, datasets.Dataset.from_list(rows).select_columns(PAIR_COLUMNS).map(extract_prompt)):
        assert split["prompt"] == row["chosen"][:-1]
        assert (split["chosen"], split["rejected"]) == (row["chosen"][-1:], row["rejected"][-1:])


def test_dpo_loss_matches_trls_on_the_same_batch(tiny_base_path):
    """Policy = the base model with perturbed weights, reference = the base model, one batch of 6 pairs (one of
    them multi-turn: TRL extracts its prompt, `batch_logps` takes every turn before the last)."""
    from zephyr_utils.dpo import batch_logps, trl_loss_on_batch
    from zephyr_utils.models import load_model, load_tokenizer

    recipe = load_recipe("dpo", "tiny", beta=0.1)
    tokenizer = load_tokenizer(str(tiny_base_path))
    policy, reference = load_model(str(tiny_base_path), recipe), load_model(str(tiny_base_path), recipe)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = pairs(5) + [multi_turn_pair()]
    ours = dpo_loss(*batch_logps(policy, reference, tokenizer, rows), beta=0.1)[0].mean().item()
    trl = trl_loss_on_batch(policy, reference, tokenizer, rows, recipe)
    print(f"\nDPO loss on one batch: ours {ours:.7f}, TRL {trl:.7f}")
    assert abs(ours - trl) < 1e-5 and abs(ours - 0.693147) > 1e-3  # and not the trivial policy == reference value


def test_preference_accuracy_counts_ties_as_half():
    from zephyr_utils.dpo import preference_accuracy

    assert preference_accuracy(torch.tensor([1.0, 0.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0, -2.0])) == 0.625


BAD = [
    (lambda r: r["chosen"][-1].update(content=""), r"chosen\[1\]\['content'\] is empty"),
    (lambda r: r["rejected"][-1].update(content=r["chosen"][-1]["content"]), "answers are identical"),
    (lambda r: (r["chosen"].pop(0), r["rejected"].pop(0)), "'chosen' has no user turn: the prompt turn is missing"),
]


@pytest.mark.parametrize("corrupt, match", BAD)
def test_bad_preference_rows_fail_before_training(tmp_path, monkeypatch, corrupt, match):
    from zephyr_utils import dpo

    rows = pairs(5)
    corrupt(rows[3])
    d = tmp_path / "prefs"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(2)))
    monkeypatch.setattr(dpo, "load_model", lambda *a, **k: pytest.fail("a model was loaded before the data was checked"))
    with pytest.raises(ValueError, match=f"train.jsonl: row 3.*{match}|train.jsonl: row 3, field.*{match}"):
        dpo.train_dpo(load_recipe("dpo", "tiny", dataset=str(d), model_name_or_path=str(tmp_path), output_dir=str(tmp_path / "out")))


def test_lora_dpo_uses_the_adapter_disabled_reference_and_saves_a_merged_model(tmp_path, monkeypatch, tiny_base_path):
    """LoRA at tiny size: no reference copy is loaded, and the saved model is plain (adapter merged)."""
    from zephyr_utils import dpo
    from zephyr_utils.data import write_jsonl

    rows = pairs(24)
    write_jsonl(rows[:20], tmp_path / "prefs" / "train.jsonl")
    write_jsonl(rows[20:], tmp_path / "prefs" / "test.jsonl")
    loaded = []
    real_load = dpo.load_model
    monkeypatch.setattr(dpo, "load_model", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    recipe = load_recipe("dpo", "tiny", model_name_or_path=str(tiny_base_path), dataset=str(tmp_path / "prefs"),
                         output_dir=str(tmp_path / "out"), use_peft=True, lora_r=4, lora_alpha=8, max_steps=3,
                         per_device_train_batch_size=4, learning_rate=1e-3, lora_target_modules=["q_proj", "v_proj"],
                         logging_steps=1)
    out = dpo.train_dpo(recipe)
    assert len(loaded) == 1  # the policy only: the reference is the adapter-disabled policy
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    assert not any("lora" in k for k in weights) and any("q_proj" in k for k in weights)
    history = json.loads((out / "log_history.json").read_text())
    assert any("rewards/margins" in h for h in history)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "dpo" and manifest["inputs"]["model"]["path"] == str(tiny_base_path)
    assert manifest["inputs"]["dataset"] == {"path": str(tmp_path / "prefs"), "digest": None}
