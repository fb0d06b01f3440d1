import json
import math
import os
import shlex
import subprocess

import pytest

from zephyr_utils.cli import LAUNCHERS, accelerate_config, accelerate_executable, launch_command, main, parse_sets


def test_parse_sets_reads_yaml_values():
    assert parse_sets(["learning_rate=1e-4", "use_peft=true", "pool=[a@1, b]", "name=x=y"]) == {
        "learning_rate": "1e-4", "use_peft": True, "pool": ["a@1", "b"], "name": "x=y"}
    with pytest.raises(SystemExit):
        parse_sets(["novalue"])


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_shipped_accelerate_configs(launcher):
    import yaml

    config = yaml.safe_load(accelerate_config(launcher).read_text())
    assert config["mixed_precision"] == "bf16" and config["num_machines"] == 1
    assert config["distributed_type"] == {"deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP", "multi_gpu": "MULTI_GPU"}[launcher]
    if launcher == "deepspeed_zero3":
        assert config["deepspeed_config"]["zero_stage"] == 3


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_full_scale_dry_run_prints_the_exact_launch_command(capsys, stage, launcher):
    main([stage, "--scale", "full", "--launcher", launcher, "--num-processes", "8", "--dry-run", "--set", "num_train_epochs=1"])
    batch, printed = capsys.readouterr().out.strip().splitlines()
    assert batch.startswith(f"{stage}: global batch ") and batch.endswith(" x 8 processes")
    config = accelerate_config(launcher)
    assert shlex.split(printed) == ["accelerate", "launch", "--config_file", str(config), "--num_processes", "8",
                                    "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
                                    "-m", "zephyr_utils.cli", stage, "--scale", "full", "--in-process", "--set", "num_train_epochs=1"]
    assert config.is_file() and config.name == f"{launcher}.yaml"


def test_full_recipe_launches_with_zero3_by_default(capsys):
    main(["dpo", "--scale", "full", "--num-processes", "16", "--dry-run"])
    assert "deepspeed_zero3.yaml --num_processes 16" in capsys.readouterr().out


def test_tiny_runs_in_process(capsys):
    main(["sft", "--scale", "tiny", "--dry-run"])
    assert "in this process" in capsys.readouterr().out


def test_bad_input_is_a_clear_cli_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--scale", "tiny", "--set", "learnin_rate=1", "--dry-run"])
    assert exit_info.value.code == 2 and "unknown field 'learnin_rate'" in capsys.readouterr().err


# Mistakes a new user makes in a copy of a shipped tiny recipe: (stage, the fields changed, extra flags, the
# field the error must name). `{tmp}` is a fresh directory, so a path in it does not exist.
BAD_RECIPES = [
    ("sft", "", [], None),  # an empty file
    ("sft", "# learning_rate: 1e-4\n", [], None),  # only comments
    ("sft", "num_train_epochs: 0", [], "num_train_epochs"),
    ("sft", "learning_rate: 0", [], "learning_rate"),
    ("dpo", "learning_rate: -5e-7", [], "learning_rate"),
    ("sft", "max_length: -1", [], "max_length"),
    ("sft", "per_device_train_batch_size: 0", [], "per_device_train_batch_size"),
    ("sft", "global_batch_size: 0", [], "global_batch_size"),
    ("dpo", "beta: 0", [], "beta"),
    ("dpo", "loss_type: dpo", [], "loss_type"),
    ("aif", "pool: []", [], "pool"),
    ("aif", "pool: [sft@0.7]", [], "pool"),
    ("aif", "completions_per_prompt: 0", [], "completions_per_prompt"),
    ("aif", "max_new_tokens: 0", [], "max_new_tokens"),
    ("eval", "models: []", [], "models"),
    ("eval", "bootstrap_samples: 0", [], "bootstrap_samples"),
    ("eval", "bootstrap_samples: 10", [], "bootstrap_samples"),
    ("eval", "benchmarks: [mt-bench]", [], "benchmarks"),
    ("eval", "models: [sft, {tmp}/checkpoint-100]", [], "models"),
    ("sft", "launcher: deepspeed", [], "launcher"),
    ("sft", "model_name_or_path: {tmp}/my-base-model", [], "model_name_or_path"),
    ("sft", "dataset: {tmp}/chats.jsonl", [], "dataset"),
    ("dpo", "dataset: runs/tiny/aif/prefs", [], "dataset"),
    ("sft", "dtype: float16", [], "dtype"),  # fp16 without LoRA
    ("sft", "load_in_4bit: true", [], "load_in_4bit"),  # 4-bit without LoRA
    ("sft", "scale: demo", ["--scale", "tiny"], "scale"),
    ("sft", "preset: ''", ["--scale", "demo", "--preset", "24gb"], "preset"),
    ("dpo", "epochs: 3", [], "epochs"),
]


@pytest.mark.parametrize("stage, text, flags, field", BAD_RECIPES, ids=[f"{s}: {t}" for s, t, _, _ in BAD_RECIPES])
def test_a_bad_recipe_is_one_line_naming_file_and_field(tmp_path, monkeypatch, capsys, stage, text, flags, field):
    """Each fails in `--dry-run`, before any data or model loads: exit code 2, one line, no traceback."""
    import yaml

    from zephyr_utils.config import recipe_path

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "mine.yaml"
    changed = yaml.safe_load(text.format(tmp=tmp_path))
    shipped = yaml.safe_load(recipe_path(stage, "tiny").read_text())
    recipe.write_text(yaml.safe_dump({**shipped, **changed}) if changed else text)
    with pytest.raises(SystemExit) as stop:
        main([stage, "--recipe", str(recipe), *(flags or ["--scale", "tiny"]), "--dry-run"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"zephyr: {recipe}: ") and err.count("\n") == 1, err
    assert (f"field '{field}'" if field else "the recipe is empty") in err


def toy_pairs(world, n):
    rows = []
    for p in world.prompts("aif")[:n]:
        q = world.resolve_question(p["messages"])
        rows.append({"prompt": p["prompt"], "prompt_id": p["prompt_id"],
                     "chosen": p["messages"] + [{"role": "assistant", "content": world.answer(q, chatty=False)}],
                     "rejected": p["messages"] + [{"role": "assistant", "content": "The weather is nice today."}]})
    return rows


def test_two_process_cpu_launch_of_sft_and_dpo(tmp_path, tiny_base_path, world):
    """DDP over gloo on the CPU, one torch thread per process: the tiny dSFT and dDPO stages finish and load."""
    from zephyr_utils.data import load_sft_data, write_jsonl
    from zephyr_utils.generation import load_model

    load_sft_data("toyworld", "train")  # write the toy data once, before two processes read it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZEPHYR_RUNS": str(tmp_path / "runs")}
    sft_dir, dpo_dir, prefs = tmp_path / "sft", tmp_path / "dpo", tmp_path / "prefs"
    write_jsonl(toy_pairs(world, 48), prefs / "train.jsonl")
    write_jsonl(toy_pairs(world, 56)[48:], prefs / "test.jsonl")
    for stage, sets in (("sft", [f"output_dir={sft_dir}", "max_steps=4", "save_steps=2", "logging_steps=1"]),
                        ("dpo", [f"output_dir={dpo_dir}", f"model_name_or_path={sft_dir}", f"dataset={prefs}",
                                 "max_steps=4", "save_steps=2", "logging_steps=1", "per_device_train_batch_size=4"])):
        command = launch_command(stage, "tiny", None, 2, sets=sets, cpu=True)
        done = subprocess.run([accelerate_executable()] + command[1:], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = sft_dir if stage == "sft" else dpo_dir
        state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
        assert state["global_step"] == 4
        if stage == "sft":  # two processes share each step: an epoch takes ceil(n / (16 x 2)) steps, not n / 16
            n = len(load_sft_data("toyworld", "train"))
            assert state["epoch"] == pytest.approx(4 / math.ceil(n / 32), abs=0.001)
        model, tokenizer = load_model(str(out))
        assert tokenizer.chat_template and model.config.model_type == "mistral"


def test_a_stage_whose_input_has_not_run_names_the_command_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path / "runs"))
    with pytest.raises(SystemExit) as exit_:
        main(["dpo", "--scale", "tiny"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("zephyr: no finished dSFT run for tiny scale under runs/tiny: run "
                                               "`zephyr sft --scale tiny` first, or pass a path")


def test_a_run_name_reaches_the_launched_processes(capsys):
    main(["dpo", "--scale", "full", "--run-name", "dpo_only", "--dry-run"])
    printed = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed[-2:] == ["--run-name", "dpo_only"] and "--in-process" in printed
