"""The paper's ablations: which recipe each one trains, and how the epochs finding is read from a run."""

import json

import pytest

from zephyr_utils.ablations import ablation_overrides, epoch_checkpoints, same_weights, train_reward_accuracy


def test_dpo_without_dsft_is_the_dpo_recipe_from_the_base_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path))
    stage, values = ablation_overrides("dpo_only", "tiny", seed=3)
    assert stage == "dpo" and values["model_name_or_path"] == "base" and values["seed"] == 3
    assert values["output_dir"] == str(tmp_path / "tiny" / "dpo_only")  # beside, never over, the dDPO run


def test_dsft2_is_one_more_sft_epoch_on_the_chosen_conversations(tmp_path, monkeypatch):
    from zephyr_utils.config import load_recipe
    from zephyr_utils.runs import write_manifest

    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path))
    aif = tmp_path / "my-aif"  # an AIF run written outside runs/tiny is the one dSFT-2 trains on
    write_manifest(aif, "aif", load_recipe("aif", "tiny", output_dir=str(aif)), {}, {"train": "preferences/train.jsonl"})
    stage, values = ablation_overrides("sft2", "tiny", num_train_epochs=7)
    assert stage == "sft" and values["num_train_epochs"] == 1.0  # one epoch, whatever dSFT-1 used
    assert values["model_name_or_path"] == "sft"  # the newest dSFT run, found when dSFT-2 starts
    assert values["dataset"] == str(aif / "preferences")
    assert values["output_dir"] == str(tmp_path / "tiny" / "sft2")
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_overrides("sft3", "tiny")


def test_train_reward_accuracy_is_averaged_within_each_epoch():
    log = [{"epoch": 0.5, "rewards/accuracies": 0.5, "loss": 0.7}, {"epoch": 1.0, "rewards/accuracies": 0.7},
           {"epoch": 1.0, "eval_loss": 0.3, "eval_rewards/accuracies": 0.1},  # held-out, not train
           {"epoch": 1.5, "rewards/accuracies": 0.9}, {"epoch": 2.0, "rewards/accuracies": 1.0},
           {"epoch": 2.0, "train_runtime": 3.0}]
    assert train_reward_accuracy(log) == pytest.approx({1: 0.6, 2: 0.95})


def test_epoch_checkpoints_are_the_ones_saved_at_an_epochs_end(tmp_path):
    for step, epoch in ((30, 1.0), (45, 1.5), (60, 2.0), (90, 3.0)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"epoch": epoch}))
    assert epoch_checkpoints(tmp_path) == [(1, tmp_path / "checkpoint-30"), (2, tmp_path / "checkpoint-60"),
                                           (3, tmp_path / "checkpoint-90")]


def test_a_checkpoint_with_the_final_weights_is_found_by_its_bytes(tmp_path):
    """run_table3 grades such a checkpoint once, as the dDPO row (the last epoch's, in full fine-tuning)."""
    for name, weights in (("final", b"w3"), ("checkpoint-3", b"w3"), ("checkpoint-2", b"w2"), ("sharded", b"")):
        (tmp_path / name).mkdir()
        if weights:
            (tmp_path / name / "model.safetensors").write_bytes(weights)
    assert same_weights(tmp_path / "checkpoint-3", tmp_path / "final")
    assert not same_weights(tmp_path / "checkpoint-2", tmp_path / "final")
    assert not same_weights(tmp_path / "sharded", tmp_path / "final")  # no single weights file: graded on its own
