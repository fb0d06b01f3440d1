import pytest

from zephyr_utils.config import (SCALES, STAGES, DPORecipe, RecipeError, SFTRecipe, load_recipe, recipe_path, resolve_scale,
                                 train_batch)

RECIPES = recipe_path("sft", "tiny").parents[1]  # zephyr_utils/recipes
SHIPPED = sorted(RECIPES.rglob("*.yaml"))


def test_scale_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv("ZEPHYR_SCALE", raising=False)
    assert resolve_scale() == "tiny"
    monkeypatch.setenv("ZEPHYR_SCALE", "demo")
    assert resolve_scale() == "demo"
    assert resolve_scale("FULL") == "full"  # the argument wins, case-insensitive


@pytest.mark.parametrize("bad", ["huge", "", "tiny2"])
def test_unknown_scale_names_the_source(monkeypatch, bad):
    with pytest.raises(ValueError, match="unknown scale"):
        resolve_scale(bad)
    monkeypatch.setenv("ZEPHYR_SCALE", "medium")
    with pytest.raises(ValueError, match="ZEPHYR_SCALE"):
        resolve_scale()


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "base"])
def test_every_scale_has_a_recipe_per_stage(stage, scale):
    recipe = load_recipe(stage, scale)
    assert isinstance(recipe, STAGES[stage]) and recipe.scale == scale


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_validates(path):
    """Every YAML under zephyr_utils/recipes (presets and dpo_handbook.yaml too) passes `validate`."""
    scale, *preset = path.parent.relative_to(RECIPES).parts
    preset = "/".join(preset)
    recipe = load_recipe(path.stem.split("_")[0], scale, recipe_file=path, preset=preset)
    assert (recipe.scale, getattr(recipe, "preset", "")) == (scale, preset)


def test_tiny_recipes_are_cpu_safe():
    for stage in ("sft", "dpo"):
        r = load_recipe(stage, "tiny")
        assert r.given["bf16"] is False and r.given["activation_checkpointing"] is False and r.dtype == "float32"
        assert r.args.bf16 is False and r.args.activation_checkpointing is False  # TRL's defaults are True for both


def test_full_recipes_carry_the_papers_hyperparameters():
    sft = load_recipe("sft", "full")
    assert sft.model_name_or_path == "mistralai/Mistral-7B-v0.1"
    assert sft.dataset == "HuggingFaceH4/ultrachat_200k" and sft.train_split == "train_sft"
    assert sft.learning_rate == 2e-5 and sft.lr_scheduler_type == "cosine" and sft.warmup_steps == 0.1
    assert sft.global_batch_size == 128 and train_batch(sft, 8) == (16, 1)  # the handbook's 16 x 8 GPUs
    assert sft.max_length == 2048 and sft.bf16 and sft.seed == 42
    dpo = load_recipe("dpo", "full")  # the paper's setting
    assert dpo.dataset == "HuggingFaceH4/ultrafeedback_binarized" and dpo.train_split == "train_prefs"
    assert dpo.learning_rate == 5e-7 and dpo.beta == 0.1 and dpo.num_train_epochs == 3
    assert dpo.lr_scheduler_type == "linear" and dpo.weight_decay == 0.0
    assert dpo.global_batch_size == 32 and train_batch(dpo, 8) == (4, 1)
    assert dpo.launcher == "deepspeed_zero3" and dpo.bf16
    handbook = load_recipe("dpo", "full", recipe_file=recipe_path("dpo_handbook", "full"))
    assert handbook.beta == 0.01 and handbook.num_train_epochs == 1 and handbook.learning_rate == 5e-7
    assert handbook.global_batch_size == 128 and train_batch(handbook, 8) == (8, 2)
    demo = load_recipe("dpo", "demo")
    assert demo.use_peft and demo.lora_r == 128 and demo.lora_alpha == 128


def test_overrides_replace_fields_and_are_checked():
    shipped = load_recipe("dpo", "full")
    r = load_recipe("dpo", "full", beta=0.05, num_train_epochs=2)
    assert (shipped.beta, shipped.num_train_epochs) == (0.1, 3)  # so the overrides below change something
    assert isinstance(r, DPORecipe) and (r.beta, r.num_train_epochs) == (0.05, 2.0) and r.learning_rate == shipped.learning_rate
    with pytest.raises(ValueError, match="unknown field 'betta' for ScriptArguments or DPOConfig or ModelConfig.*did you mean beta"):
        load_recipe("dpo", "full", betta=0.1)
    with pytest.raises(ValueError, match="field 'learning_rate' must be float"):
        load_recipe("sft", "tiny", learning_rate="fast")
    with pytest.raises(ValueError, match=r"sft\.yaml with overrides \(--set\): unknown field 'warmup_ratio'.*did you mean warmup_steps"):
        load_recipe("sft", "tiny", warmup_ratio=0.1)  # the mistake is in the override, not in the shipped file
    with pytest.raises(ValueError, match=r"field 'loss_type' is \['nll'\]; DPOConfig takes sigmoid"):
        load_recipe("dpo", "tiny", loss_type=["nll"])  # SFTConfig's loss, not DPOConfig's
    with pytest.raises(ValueError, match="field 'model_name_or_path' is not set"):
        load_recipe("sft", "tiny", model_name_or_path=None)
    recipe = load_recipe("sft", "tiny")
    with pytest.raises(AttributeError, match="set when it loads"):
        recipe.learning_rate = 1.0  # would never reach the trainer
    with pytest.raises(ValueError, match="field 'packing' must be bool"):
        load_recipe("sft", "tiny", packing="yes")
    with pytest.raises(ValueError, match="field 'per_device_train_batch_size' must be int"):
        load_recipe("sft", "tiny", per_device_train_batch_size=True)
    with pytest.raises(ValueError, match=r"lora_target_modules'\[1\] must be str"):
        load_recipe("sft", "demo", lora_target_modules=["q_proj", 3])


def test_errors_name_the_recipe_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("learning_rate: 1e-4\nwarmup_ratio: 0.1\n")  # gone from transformers 5: warmup_steps below 1 is a share
    with pytest.raises(ValueError, match=r"mine\.yaml: unknown field 'warmup_ratio'.*did you mean warmup_steps"):
        load_recipe("sft", "tiny", recipe_file=f)
    f.write_text("- a\n- list\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: a recipe must be a mapping"):
        load_recipe("sft", "tiny", recipe_file=f)
    f.write_text("learning_rate: [unclosed\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: not valid YAML"):
        load_recipe("sft", "tiny", recipe_file=f)
    f.write_text("model_name_or_path: tiny\nlearning_rate: 1e-4\nmax_train_samples: ~\n")  # YAML's 1e-4 is a string: accepted as float
    r = load_recipe("sft", "tiny", recipe_file=f)
    assert isinstance(r, SFTRecipe) and r.learning_rate == 1e-4 and r.max_train_samples is None
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe("sft", "tiny", recipe_file=tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="no base recipe at demo scale"):
        load_recipe("base", "demo")
    with pytest.raises(ValueError, match="unknown stage"):
        load_recipe("rlhf", "tiny")


def test_a_scale_or_preset_in_a_recipe_file_must_agree_with_the_one_given(tmp_path, monkeypatch):
    """Every saved recipe.yaml has `scale:` and `preset:` keys. It loads alone or with flags that agree; flags
    that disagree are an error, where the flag used to win silently over the file (or the file over the flag)."""
    import yaml

    from zephyr_utils.config import recipe_to_dict

    saved = tmp_path / "recipe.yaml"
    saved.write_text(yaml.safe_dump(recipe_to_dict(load_recipe("sft", "demo", preset="24gb"))))
    monkeypatch.delenv("ZEPHYR_SCALE", raising=False)
    monkeypatch.delenv("ZEPHYR_PRESET", raising=False)
    kept = load_recipe("sft", recipe_file=saved)
    assert (kept.scale, kept.preset, kept.load_in_4bit) == ("demo", "24gb", True)  # nothing given: the file's own
    agreed = load_recipe("sft", "demo", recipe_file=saved, preset="24gb")
    assert (agreed.scale, agreed.preset) == ("demo", "24gb")
    with pytest.raises(RecipeError, match=r"recipe\.yaml: field 'scale' is 'demo' but --scale is 'full': run with --scale demo"):
        load_recipe("sft", "full", recipe_file=saved)
    with pytest.raises(RecipeError, match=r"recipe\.yaml: field 'preset' is '24gb' but --preset is '': run with --preset 24gb"):
        load_recipe("sft", "demo", recipe_file=saved, preset="")


def test_a_missing_local_path_says_which_command_writes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path / "runs"))
    prefs, model = "runs/tiny/aif/preferences", "./my-model@0.7"
    with pytest.raises(RecipeError, match=r"field 'dataset' is 'runs/tiny/aif/preferences', but no such file or directory "
                                          r"exists: run `zephyr aif --scale tiny` first \(it writes runs/tiny/aif\)"):
        load_recipe("dpo", "tiny", dataset=prefs)
    with pytest.raises(RecipeError, match=r"field 'model_name_or_path' .* run `zephyr sft --scale demo --preset 24gb` first"):
        load_recipe("dpo", "demo", model_name_or_path=str(tmp_path / "runs" / "demo-24gb" / "sft"))
    with pytest.raises(RecipeError, match=r"field 'pool' is './my-model@0.7', .*: fix the path"):
        load_recipe("aif", "tiny", pool=["teacher", model])
    with pytest.raises(RecipeError, match=r"field 'prompts' is 'questions.jsonl', .*: fix the path"):
        load_recipe("eval", "tiny", prompts="questions.jsonl")
    (tmp_path / prefs).mkdir(parents=True)
    (tmp_path / "my-model").mkdir()
    assert load_recipe("dpo", "tiny", dataset=prefs).dataset == prefs
    assert load_recipe("aif", "tiny", pool=["teacher", model]).pool == ["teacher", model]
    # Hub ids and names of stages or built-in sets are not paths, so nothing needs to exist for them
    assert load_recipe("sft", "tiny", model_name_or_path="org/name", dataset="HuggingFaceH4/ultrachat_200k").dataset
    assert load_recipe("eval", "tiny", models=["base", "tiny", "sft", "dpo", "dpo_only"], prompts="toyworld").models
