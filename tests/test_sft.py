import json
import os
import signal
import subprocess
import sys
import time

import pytest

from zephyr_utils.config import SCALES, load_recipe, train_batch
from zephyr_utils.device import keep_freed_memory
from zephyr_utils.models import lora_config, quantization_config
from zephyr_utils.sft import last_checkpoint, sft_config, training_args


@pytest.mark.parametrize("scale", SCALES)
def test_recipe_to_sft_config_at_every_scale(scale, tmp_path):
    recipe = load_recipe("sft", scale)
    config = sft_config(recipe, tmp_path)  # built and validated by TRL, nothing downloaded
    assert config.learning_rate == recipe.learning_rate and config.max_length == recipe.max_length
    assert config.assistant_only_loss == recipe.assistant_only_loss and config.packing == recipe.packing
    per_device, accumulation = train_batch(recipe, 1)  # one process here
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (per_device, accumulation)
    assert config.lr_scheduler_type.value == recipe.lr_scheduler_type
    assert config.bf16 == recipe.bf16 and config.seed == recipe.seed
    assert config.train_sampling_strategy == recipe.train_sampling_strategy and config.optim.value == recipe.optim
    lora = lora_config(recipe)
    if scale == "demo":
        assert lora.r == 16 and lora.lora_alpha == 16 and set(lora.target_modules) >= {"q_proj", "down_proj"}
    else:
        assert lora is None


def test_tiny_training_args_avoid_the_cpu_traps(tmp_path):
    args = training_args(load_recipe("sft", "tiny"), tmp_path)
    assert args["bf16"] is False and args["activation_checkpointing"] is False and args["use_cpu"] is True
    assert args["train_sampling_strategy"] == "group_by_length"  # the padding a random batch wastes (bench/)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_applies_on_linux():
    assert keep_freed_memory() is True


def test_qlora_without_bitsandbytes_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="load_in_4bit .*bitsandbytes"):
        quantization_config(load_recipe("sft", "demo", load_in_4bit=True))


def test_last_checkpoint_skips_a_half_written_one(tmp_path):
    assert last_checkpoint(tmp_path) is None
    for step, complete in ((10, True), (20, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-30" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert last_checkpoint(tmp_path).endswith("checkpoint-20")


@pytest.fixture(scope="module")
def tiny_sft(tmp_path_factory, tiny_base_path):
    """The tiny dSFT model trained with the shipped recipe into a temporary runs directory."""
    from zephyr_utils.sft import train_sft

    out = tmp_path_factory.mktemp("runs") / "sft"
    return train_sft(load_recipe("sft", "tiny", output_dir=str(out)))


def test_sft_saves_model_tokenizer_recipe_and_versions(tiny_sft):
    for name in ("model.safetensors", "tokenizer.json", "recipe.yaml", "versions.json", "log_history.json"):
        assert (tiny_sft / name).is_file(), name
    from transformers import AutoTokenizer

    assert "{% generation %}" in AutoTokenizer.from_pretrained(tiny_sft).chat_template
    history = json.loads((tiny_sft / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] / 3


def test_dsft_model_follows_the_template_and_base_does_not(tiny_sft, tiny_base, world):
    from zephyr_utils.evaluation import template_adherence
    from zephyr_utils.generation import load_model

    convs = [[{"role": "user", "content": r["turns"][0]}] for r in world.eval_prompts()]
    base_rate, _ = template_adherence(*tiny_base, convs, progress=False)
    model, tokenizer = load_model(str(tiny_sft))
    sft_rate, answers = template_adherence(model, tokenizer, convs, progress=False)
    print(f"\ntemplate adherence on {len(convs)} held-out prompts: base {base_rate:.1%}, dSFT {sft_rate:.1%}")
    assert sft_rate >= 0.95 and base_rate < 0.2


def test_killed_training_resumes_from_its_checkpoint(tmp_path, tiny_base_path):
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "zephyr_utils.cli", "sft", "--scale", "tiny", "--set", f"output_dir={out}",
           "--set", "max_steps=120", "--set", "save_steps=20", "--set", "save_total_limit=10"]
    env = {**os.environ, "ZEPHYR_RUNS": str(tmp_path)}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (out / "checkpoint-20" / "trainer_state.json").is_file():
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint-120").exists()
    killed_at = int(last_checkpoint(out).rsplit("-", 1)[1])
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from runs/sft/checkpoint-{killed_at}" in second.stdout  # printed relative to the runs directory
    state = json.loads((out / "checkpoint-120" / "trainer_state.json").read_text())
    assert state["global_step"] == 120 and (out / "model.safetensors").is_file()
    # the resumed run logged the steps after the checkpoint, not the ones before it again
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == sorted(set(steps)) and steps[-1] == 120
