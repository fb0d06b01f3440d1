import json
import logging
import math
import os
import signal
import subprocess
import sys

import pytest

from zephyr_utils.config import SCALES, load_recipe
from zephyr_utils.models import lora_config, quantization_config
from zephyr_utils.train import last_checkpoint, training_args


@pytest.mark.parametrize("scale", SCALES)
def test_every_shipped_sft_recipe_is_trls_own_config(scale, tmp_path):
    """A recipe is parsed into TRL's SFTConfig and ModelConfig (nothing is downloaded): the trainer gets that
    config, writing to its output directory; a warmup below 1 is a share of the total steps, a global batch is
    made on one process, and the demo scale's LoRA settings become peft's LoraConfig."""
    from trl import ModelConfig, SFTConfig

    recipe = load_recipe("sft", scale)
    assert isinstance(recipe.args, SFTConfig) and isinstance(recipe.model, ModelConfig)
    config = training_args(recipe, tmp_path)
    assert config.output_dir == str(tmp_path) and config.learning_rate == recipe.given["learning_rate"]
    assert config.get_warmup_steps(1000) == math.ceil(1000 * recipe.warmup_steps) > 1
    if recipe.global_batch_size:  # this test runs as one process
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps == recipe.global_batch_size
    lora = lora_config(recipe)
    if scale == "demo":
        assert lora.r == 16 and lora.lora_alpha == 16 and set(lora.target_modules) >= {"q_proj", "down_proj"}
    else:
        assert lora is None


def test_lora_targets_one_module_by_its_name():
    """TRL's ModelConfig turns a list of one into a string, which peft reads as a regex of the whole module
    name ("q_proj" would match nothing); "all-linear" stays peft's keyword."""
    assert lora_config(load_recipe("sft", "demo", cpu=True, lora_target_modules=["q_proj"])).target_modules == {"q_proj"}
    assert lora_config(load_recipe("sft", "demo", cpu=True, lora_target_modules=["all-linear"])).target_modules == "all-linear"


def test_tiny_sft_config_turns_off_trls_cpu_traps(tmp_path, monkeypatch):
    """TRL's configs default to bf16 and activation checkpointing, ~17x slower on a CPU. The tiny recipe's
    config, built as on a machine without a GPU (the real one may have one), has neither."""
    import torch
    from trl import SFTConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trls_defaults = SFTConfig(output_dir=str(tmp_path), use_cpu=True)
    assert trls_defaults.bf16 and trls_defaults.activation_checkpointing  # the traps exist, so this test can fail
    config = training_args(load_recipe("sft", "tiny"), tmp_path)
    assert not (config.bf16 or config.fp16 or config.activation_checkpointing or config.dataloader_pin_memory)
    assert config.use_cpu and config.train_sampling_strategy == "group_by_length"  # the padding a random batch wastes (bench/)


def test_any_trl_field_can_be_set_by_its_own_name(tmp_path):
    """Fields no shipped recipe mentions reach TRL's configs: the recipe mirrors nothing by hand."""
    defaults = load_recipe("sft", "tiny")
    recipe = load_recipe("sft", "tiny", max_grad_norm=0.25, dataset_num_proc=2, lr_scheduler_kwargs={"num_cycles": 2},
                         use_rslora=True)
    assert (defaults.args.max_grad_norm, defaults.args.dataset_num_proc, defaults.model.use_rslora) == (1.0, None, False)
    config = training_args(recipe, tmp_path)
    assert (config.max_grad_norm, config.dataset_num_proc, config.lr_scheduler_kwargs) == (0.25, 2, {"num_cycles": 2})
    assert recipe.model.use_rslora is True


def test_qlora_without_bitsandbytes_is_a_clear_error():
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="load_in_4bit .*bitsandbytes"):
        quantization_config(load_recipe("sft", "demo", load_in_4bit=True))


def test_last_checkpoint_deletes_an_unfinished_save_and_takes_the_one_before(tmp_path, caplog):
    assert last_checkpoint(tmp_path / "missing") is None and last_checkpoint(tmp_path) is None
    for step in (9, 10, 20, 30, 40):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
        if step <= 20:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-30" / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    (tmp_path / "checkpoint-50.tmp").mkdir()  # not a checkpoint's name
    with caplog.at_level(logging.WARNING, logger="zephyr_utils.train"):
        assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")  # by step: 20, not the "9" of sorted names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20", "checkpoint-50.tmp", "checkpoint-9"]
    deleted = [r.getMessage() for r in caplog.records]
    assert len(deleted) == 2 and "checkpoint-40: its save did not finish" in deleted[0] and "checkpoint-30:" in deleted[1]
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20") and len(caplog.records) == 2  # nothing more to delete


@pytest.fixture(scope="module")
def tiny_sft(built_book):
    """The tiny dSFT model trained with the shipped recipe: the one chapter 1 trained in the book build (tiny
    dSFT is trained once per test session)."""
    return built_book.parent / "runs" / "tiny" / "sft"


def test_sft_saves_model_tokenizer_recipe_and_versions(tiny_sft):
    for name in ("model.safetensors", "tokenizer.json", "recipe.yaml", "versions.json", "log_history.json"):
        assert (tiny_sft / name).is_file(), name
    from transformers import AutoTokenizer

    assert "{% generation %}" in AutoTokenizer.from_pretrained(tiny_sft).chat_template
    history = json.loads((tiny_sft / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] / 3


def test_sft_writes_its_manifest_with_the_base_model_it_started_from(tiny_sft, tiny_base_path, monkeypatch):
    from zephyr_utils.runs import find, manifest_digest, resolve

    monkeypatch.setenv("ZEPHYR_RUNS", str(tiny_sft.parents[1]))  # the book build's runs, where chapter 1 trained it

    manifest = json.loads((tiny_sft / "manifest.json").read_text())
    assert (manifest["stage"], manifest["scale"], manifest["world_seed"]) == ("sft", "tiny", 0)
    base = manifest["inputs"]["model"]
    assert base["path"] == str(tiny_base_path) and base["digest"] == manifest_digest(tiny_base_path) is not None
    assert manifest["inputs"]["dataset"] == {"path": "toyworld", "digest": None}
    assert find("sft", "tiny") == tiny_sft and resolve("base", "tiny") == str(tiny_base_path)  # its output_dir found


def test_dsft_model_follows_the_template_and_base_does_not(tiny_sft, tiny_base, world):
    from zephyr_utils.evaluation import template_adherence
    from zephyr_utils.generation import load_model

    convs = [[{"role": "user", "content": r["turns"][0]}] for r in world.eval_prompts()]
    base_rate, _ = template_adherence(*tiny_base, convs, progress=False)
    model, tokenizer = load_model(str(tiny_sft))
    sft_rate, answers = template_adherence(model, tokenizer, convs, progress=False)
    print(f"\ntemplate adherence on {len(convs)} held-out prompts: base {base_rate:.1%}, dSFT {sft_rate:.1%}")
    assert sft_rate >= 0.95 and base_rate < 0.2


# `zephyr sft` whose Trainer saves its checkpoints as usual, except that the save of checkpoint-<argv[1]> is cut
# short: its weights written, its trainer_state.json torn, then SIGKILL.
SAVE_THEN_DIE = r"""
import os, signal, sys
from pathlib import Path
import transformers

kill_at, save = int(sys.argv[1]), transformers.Trainer._save_checkpoint


def save_checkpoint(self, model, trial):
    step = self.state.global_step
    if step == kill_at:
        folder = Path(self.args.output_dir) / f"checkpoint-{step}"
        self.save_model(str(folder), _internal_call=True)
        (folder / "trainer_state.json").write_text('{"global_st')
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, model, trial)


transformers.Trainer._save_checkpoint = save_checkpoint
from zephyr_utils.cli import main

main(sys.argv[2:])
"""


def test_training_killed_while_saving_resumes_from_the_checkpoint_before(tmp_path, tiny_base_path, monkeypatch, capsys):
    """Killed (in a process of its own) while saving checkpoint-4; the rerun (in this process) resumes."""
    import transformers

    from zephyr_utils.cli import main

    out = tmp_path / "sft"
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path))
    monkeypatch.setenv("ZEPHYR_PROGRESS", "0")
    args = ["sft", "--scale", "tiny", *(arg for pair in [f"output_dir={out}", "max_steps=6", "save_steps=2", "logging_steps=1"]
                                        for arg in ("--set", pair))]
    killed = subprocess.run([sys.executable, "-c", SAVE_THEN_DIE, "4", *args], env=dict(os.environ), capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoint-4").is_dir() and not (out / "model.safetensors").exists()

    saved, save = [], transformers.Trainer._save_checkpoint

    def recorded_save(self, model, trial):
        saved.append(self.state.global_step)
        return save(self, model, trial)

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", recorded_save)
    capsys.readouterr()
    main(args)
    lines = capsys.readouterr().out.splitlines()  # logged through `logging`, shown on stdout by the CLI; relative to the runs dir
    assert "deleting runs/sft/checkpoint-4: its save did not finish (no readable trainer_state.json)" in lines
    assert "resuming from runs/sft/checkpoint-2" in lines
    assert saved == [4, 6]
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and (out / "model.safetensors").is_file()
    # the log of steps 1-2 came back with the checkpoint; the resumed run logged steps 3-6 once each
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]
