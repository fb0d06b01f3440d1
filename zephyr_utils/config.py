"""The scale flag and the recipes.

A recipe is read from a YAML file shipped in `zephyr_utils/recipes/<scale>/<stage>.yaml`. A dSFT or dDPO recipe
is TRL's own configuration: its fields are parsed, as the alignment-handbook does, into our `ScriptArguments`
(the data, the global batch, the launcher), TRL's `SFTConfig` or `DPOConfig` (what the trainer gets) and TRL's
`ModelConfig` (`TrainRecipe`). The other stages' recipes are small dataclasses of ours (`TinyBaseRecipe`,
`AIFRecipe`, `EvalRecipe`). `load_recipe("sft", "demo", learning_rate=1e-4)` reads the file, applies overrides
and checks every field's name, type and value (`RULES`, `validate`), so a mistake in a recipe fails at once,
before any data or model loads, with a one-line `RecipeError` naming the file, the field, the value and what
to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import yaml

from .device import DTYPES, resolve_dtype

SCALES = ("tiny", "demo", "full")
SCALE_ENV = "ZEPHYR_SCALE"
PRESET_ENV = "ZEPHYR_PRESET"
BACKENDS = ("auto", "vllm", "transformers")  # generation backends; "auto": vLLM on a GPU when installed
LAUNCHERS = ("deepspeed_zero3", "fsdp", "multi_gpu")  # accelerate configs shipped in zephyr_utils/accelerate/
BENCHMARKS = ("mt_bench", "alpaca_eval", "alpaca_eval_2", "open_llm_leaderboard")  # see zephyr_utils.benchmarks
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")  # TRL's DPOConfig.loss_type
SFT_LOSS_TYPES = ("nll", "dft")  # TRL's SFTConfig.loss_type


class RecipeError(ValueError):
    """A recipe that cannot run. The message is one line: the file, the field, the bad value and what to do."""


def _above(low, example):
    return lambda v: v > low, f"must be above {low}, e.g. {example}"


def _one_of(choices):
    return lambda v: v in choices, f"must be one of {', '.join(choices)}"


# field -> (check of its value, what the value must be). A field left None ("not set") passes.
RULES: dict[str, tuple[Callable[[typing.Any], bool], str]] = {
    "scale": _one_of(SCALES),
    "dtype": _one_of(DTYPES),
    "generation_backend": _one_of(BACKENDS),
    "launcher": _one_of(("in-process",) + LAUNCHERS),
    "warmup_steps": (lambda v: v >= 0, "must be 0 or more: a number of steps, or below 1 a share of them, e.g. 0.1"),
    "learning_rate": _above(0, "2e-5"),
    "num_train_epochs": _above(0, "1 (max_steps, when above 0, stops training sooner)"),
    "beta": _above(0, "0.1 (the paper's) or 0.01 (the handbook's)"),
    **{name: _above(0, example) for name, example in (
        ("per_device_train_batch_size", 8), ("per_device_eval_batch_size", 8), ("global_batch_size", 128),
        ("gradient_accumulation_steps", 1), ("batch_size", 16), ("num_processes", 8), ("max_length", 1024),
        ("block_size", 128), ("max_new_tokens", 512), ("alpaca_eval_max_new_tokens", 2048),
        ("max_train_samples", 1000), ("max_eval_samples", 100), ("max_prompts", 500))},
    "completions_per_prompt": (lambda v: v >= 2, "must be 2 or more: a preference pair needs two answers to a prompt"),
    "pool": (lambda v: len(v) >= 2, "needs 2 or more members to compare, e.g. [sft@0.7, sft@1.0]"),
    "models": (lambda v: len(v) >= 1, "needs 1 or more models to evaluate, e.g. [sft, dpo]"),
    "bootstrap_samples": (lambda v: v >= 100, "must be 100 or more for a confidence interval, e.g. 2000"),
    "benchmarks": (lambda v: set(v) <= set(BENCHMARKS), f"may hold only {', '.join(BENCHMARKS)}"),
}
# Fields naming a model or data set: a Hub id (org/name), a name (sft, dpo, base, aif, tiny, toyworld...) or a
# local path, which must exist.
PATH_FIELDS = ("model_name_or_path", "dataset", "prompts", "pool", "models", "reference", "mt_bench_judge_prompts",
               "mt_bench_reference_answers")
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow")


def resolve_scale(scale: str | None = None) -> str:
    """The scale to run at: the argument, else $ZEPHYR_SCALE, else "tiny"."""
    value = scale if scale is not None else os.environ.get(SCALE_ENV, "tiny")
    value = str(value).strip().lower()
    if value not in SCALES:
        source = "argument `scale`" if scale is not None else f"environment variable {SCALE_ENV}"
        raise ValueError(f"unknown scale {value!r} from {source}; expected one of {', '.join(SCALES)}")
    return value


def presets(scale: str) -> list[str]:
    """The named recipe sets shipped for a scale besides its default one (subfolders of recipes/<scale>/)."""
    folder = Path(str(resources.files("zephyr_utils") / "recipes" / scale))
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def resolve_preset(scale: str, preset: str | None = None) -> str:
    """The preset to run: the argument, else $ZEPHYR_PRESET, else "" (the scale's default recipes)."""
    value = preset if preset is not None else os.environ.get(PRESET_ENV, "")
    value = str(value).strip().lower()
    if value and value not in presets(scale):
        source = "argument `preset`" if preset is not None else f"environment variable {PRESET_ENV}"
        known = ", ".join(presets(scale)) or "none"
        raise ValueError(f"unknown preset {value!r} at {scale} scale from {source}; presets at {scale} scale: {known}")
    return value


@dataclass
class Recipe:
    """Fields every stage has."""

    scale: str = "tiny"
    seed: int = 42
    world_seed: int = 0  # tiny scale: which generated toy world (data, teacher, judge, base model)
    output_dir: str = ""  # empty: runs/<scale>/<stage> under the runs directory

    def to_yaml(self) -> str:
        """The recipe as YAML, one field a line, in the recipe files' format (`_dump`)."""
        return _dump(recipe_to_dict(self))

    def _repr_pretty_(self, printer, cycle) -> None:
        """IPython and Jupyter show a recipe as its YAML, not as a one-line repr too long for a page."""
        printer.text(self.to_yaml().rstrip())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._repr_pretty_ = Recipe._repr_pretty_  # IPython prefers a class's own (dataclass) __repr__ to an inherited one


@dataclass
class TinyBaseRecipe(Recipe):
    """The tiny base model: tokenizer, architecture and pretraining on the toy world (tiny only)."""

    vocab_size: int = 1024
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    block_size: int = 128
    batch_size: int = 16
    max_steps: int = 600
    learning_rate: float = 2e-3
    warmup_steps: int = 40
    docs_per_creature: int = 24


@dataclass
class ScriptArguments:
    """What a dSFT or dDPO recipe holds besides TRL's two configs (`TrainRecipe`): the scale, the data, the
    global batch and the launcher. (The alignment-handbook's ScriptArguments, with our fields.)"""

    scale: str = "tiny"
    preset: str = ""  # "" for the scale's default recipes, else a folder of recipes/<scale>/ (e.g. demo's 24gb)
    world_seed: int = 0  # tiny scale: which generated toy world (data, teacher, judge, base model)
    dataset: str = "toyworld"  # a Hub id, a local file/directory, a run name ("aif") or "toyworld"
    train_split: str = "train"
    eval_split: str = "test"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # Sequences per optimizer step over all processes. When set, the per-device batch (at most the config's
    # per_device_train_batch_size) and the gradient accumulation follow from the process count (`batch_plan`).
    global_batch_size: int | None = None
    launcher: str = "in-process"  # "in-process" or an accelerate config name (deepspeed_zero3, fsdp, multi_gpu)
    num_processes: int = 1


@dataclass
class TrainRecipe:
    """A dSFT or dDPO recipe: three configs parsed from one YAML file, as the alignment-handbook parses
    `(ScriptArguments, SFTConfig, ModelConfig)` with TRL's parser. Every field of TRL's SFTConfig/DPOConfig
    (the trainer's `args`) and ModelConfig can be set, under TRL's own name; each field also reads as an
    attribute of the recipe wherever it lives (`recipe.learning_rate`, `recipe.dataset`, `recipe.lora_r`)."""

    script: ScriptArguments
    args: typing.Any  # trl.SFTConfig or trl.DPOConfig, for this machine and process count (`machine_settings`)
    model: typing.Any  # trl.ModelConfig: the model to start from, its dtype, attention and LoRA / QLoRA
    given: dict  # the fields of `args` that the recipe file and the overrides set (the rest are TRL's defaults)

    config_name: typing.ClassVar[str] = ""  # the name of `args`' class in trl
    loss_types: typing.ClassVar[tuple[str, ...]] = ()  # the values its loss_type takes

    @classmethod
    def classes(cls) -> tuple[type, type, type]:
        import trl

        return ScriptArguments, getattr(trl, cls.config_name), trl.ModelConfig

    @property
    def output_dir(self) -> str:
        """The output directory the recipe names; "" (the default) for runs/<scale>/<stage> (`runs.stage_dir`)."""
        return self.given.get("output_dir") or ""

    def __setattr__(self, name: str, value) -> None:
        if name not in ("script", "args", "model", "given"):  # `recipe.learning_rate = x` would not reach the trainer
            raise AttributeError(f"a recipe's fields are set when it loads: load_recipe(..., {name}=...) or --set {name}=...")
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        parts = [self.__dict__[k] for k in ("script", "args", "model") if k in self.__dict__]
        for part in parts:
            if name in getattr(part, "__dataclass_fields__", {}):
                return getattr(part, name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def to_yaml(self) -> str:
        """The recipe as YAML: every field of ScriptArguments, and the fields of ModelConfig and of the TRL
        config that this recipe sets, each group under a comment naming its class."""
        model_defaults = dataclasses.asdict(type(self.model)())
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if v != model_defaults[k]}
        groups = (("ScriptArguments (zephyr_utils.config)", dataclasses.asdict(self.script)),
                  ("ModelConfig (trl): fields that differ from TRL's defaults", model),
                  (f"{self.config_name} (trl): fields this recipe sets; the rest are TRL's defaults", self.given))
        return "".join(f"# {title}\n" + _dump(values) for title, values in groups if values)

    def _repr_pretty_(self, printer, cycle) -> None:
        """IPython and Jupyter show a recipe as its YAML."""
        printer.text(self.to_yaml().rstrip())


class SFTRecipe(TrainRecipe):
    config_name = "SFTConfig"
    loss_types = SFT_LOSS_TYPES


class DPORecipe(TrainRecipe):
    config_name = "DPOConfig"
    loss_types = DPO_LOSS_TYPES


@dataclass
class AIFRecipe(Recipe):
    preset: str = ""  # "" for the scale's default recipes, else a folder of recipes/<scale>/ (e.g. demo's 24gb)
    prompts: str = "toyworld"  # a Hub id, a local file, or "toyworld"
    prompt_split: str = "train"
    max_prompts: int | None = None
    pool: list[str] = field(default_factory=list)  # model ids/paths, or tiny pool member names
    teacher_chatty_share: float | None = None  # tiny pool member "teacher": share of answers with the filler (None: as in dSFT)
    completions_per_prompt: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 64
    generation_backend: str = "auto"  # "auto" (vLLM on a GPU when installed), "vllm" or "transformers"
    dtype: str = "auto"  # of the pool models: bf16 on a GPU that has it, fp16 on a T4, fp32 on a CPU
    judge: str = "toy"  # "toy", "hf:<model>", or "openai:<model>"
    judge_base_url: str = ""
    max_judge_failure_share: float = 0.02  # more ratings than this without a readable verdict: no pairs, an error


@dataclass
class EvalRecipe(Recipe):
    preset: str = ""  # "" for the scale's default recipes, else a folder of recipes/<scale>/ (e.g. demo's 24gb)
    prompts: str = "toyworld"
    models: list[str] = field(default_factory=list)
    max_new_tokens: int = 64
    temperature: float = 0.0
    batch_size: int = 64
    generation_backend: str = "auto"
    dtype: str = "auto"
    judge: str = "toy"
    judge_base_url: str = ""
    bootstrap_samples: int = 2000
    max_judge_failure_share: float = 0.02  # more turns or comparisons than this unrated: no score, an error
    # AlpacaEval-style: the model whose first answers every model is compared with (a registered sampler such as
    # the tiny scale's "teacher", a run name, a path or a Hub id); empty: none. (demo/full: `benchmarks`.)
    reference: str = ""
    # demo/full: the paper's benchmarks by the tools that define them (see zephyr_utils.benchmarks); empty: the
    # book's own judge on `prompts`. Some of mt_bench, alpaca_eval, alpaca_eval_2, open_llm_leaderboard.
    benchmarks: list[str] = field(default_factory=list)
    mt_bench_judge_prompts: str = ""  # FastChat's judge_prompts.jsonl (path or URL); empty: FastChat's repository
    mt_bench_reference_answers: str = ""  # FastChat's reference_answer/gpt-4.jsonl; empty: the questions' `reference`
    alpaca_eval_judge_model: str = ""  # empty: the model each AlpacaEval annotator's own config names
    alpaca_eval_max_instances: int | None = None  # None: all 805 instructions
    alpaca_eval_max_new_tokens: int = 2048
    alpaca_eval_temperature: float = 0.7
    lm_eval_batch_size: str = "auto"


STAGES: dict[str, type] = {
    "base": TinyBaseRecipe,
    "sft": SFTRecipe,
    "aif": AIFRecipe,
    "dpo": DPORecipe,
    "eval": EvalRecipe,
}


def recipe_path(stage: str, scale: str, preset: str = "") -> Path:
    """The shipped YAML recipe for a stage at a scale (in the preset's folder for a preset)."""
    return Path(str(resources.files("zephyr_utils") / "recipes" / scale / preset / f"{stage}.yaml"))


def load_recipe(stage: str, scale: str | None = None, recipe_file: str | os.PathLike | None = None,
                preset: str | None = None, processes: int | None = None, cpu: bool | None = None, **overrides):
    """Load and validate the recipe of `stage` at `scale` (see `resolve_scale`) and `preset` (see
    `resolve_preset`). `recipe_file` replaces the shipped YAML; keyword `overrides` replace single fields.

    A training recipe's TRL config is built for `processes` processes (default: this run's, $WORLD_SIZE or 1)
    and for this machine, or for a CPU when `cpu` is true (see `machine_settings`)."""
    if stage not in STAGES:
        raise RecipeError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    explicit = {"scale": scale is not None, "preset": preset is not None}
    scale = resolve_scale(scale)
    preset = resolve_preset(scale, preset)
    path = Path(recipe_file) if recipe_file is not None else recipe_path(stage, scale, preset)
    if not path.is_file():
        raise RecipeError(f"no {stage} recipe at {scale} scale: {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if values is None:
        raise RecipeError(f"{path}: the recipe is empty (no field: value lines, or only comments): write the fields "
                          f"to change, one per line, e.g. from {recipe_path(stage, scale, preset)}")
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of field: value, got {type(values).__name__}")
    cls = STAGES[stage]
    fields = set(field_types(cls))  # every stage but the tiny base has a preset
    for key, value in (("scale", scale), ("preset", preset)):
        if key in fields and explicit[key] and key in values and values[key] != value:
            in_file = values[key] or "''"
            raise RecipeError(f"{path}: field {key!r} is {values[key]!r} but --{key} is {value!r}: run with --{key} "
                              f"{in_file}, or delete the {key} line from the file")
        if key in fields and key not in values:
            values[key] = value  # saved recipe.yaml files have both; they load when they agree with what is given
    check_values(cls, dict(overrides), f"{path} with overrides (--set)")  # a mistake in an override is named as one
    values.update(overrides)
    if issubclass(cls, TrainRecipe):
        return build_train_recipe(cls, values, str(path), processes, cpu)
    return build_recipe(cls, values, source=str(path))


@functools.cache
def field_types(cls: type) -> dict[str, typing.Any]:
    """{field: type hint} of a stage's recipe class; of all three configs for a training recipe (computed once
    per class: a recipe load asks several times, and TRL's configs have ~140 fields)."""
    if issubclass(cls, TrainRecipe):
        return {name: hint for part in cls.classes() for name, hint in field_types(part).items()}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}


def check_values(cls: type, values: dict, source: str) -> dict:
    """`values` with each field's name and type checked against `cls`; a RecipeError naming the first unknown
    field or wrong type."""
    hints = field_types(cls)
    for key, value in values.items():
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            owners = " or ".join(c.__name__ for c in cls.classes()) if issubclass(cls, TrainRecipe) else cls.__name__
            raise RecipeError(f"{source}: unknown field {key!r} for {owners}{hint}")
        values[key] = _check_type(value, hints[key], f"{source}: field {key!r}")
    return values


def build_recipe(cls: type[Recipe], values: dict, source: str = "<overrides>") -> Recipe:
    """Instantiate `cls` from `values`, checking each field's name and type, then its value (`validate`)."""
    recipe = cls(**check_values(cls, values, source))
    validate(recipe_to_dict(recipe), source)
    return recipe


def build_train_recipe(cls: type[TrainRecipe], values: dict, source: str = "<overrides>", processes: int | None = None,
                       cpu: bool | None = None) -> TrainRecipe:
    """A training recipe from `values`: names and types checked, values validated (`validate`), then parsed
    into ScriptArguments, the TRL config and ModelConfig by transformers' HfArgumentParser, with this
    machine's settings (`machine_settings`) for the fields the recipe leaves to them."""
    from transformers import HfArgumentParser

    script_class, config_class, model_class = cls.classes()
    values = check_values(cls, dict(values), source)
    config_fields = set(field_types(config_class))
    given = {k: v for k, v in values.items() if k in config_fields}
    defaults = {f.name: f.default for part in (script_class, model_class) for f in dataclasses.fields(part)
                if f.default is not dataclasses.MISSING}
    ours = defaults | {k: v for k, v in values.items() if k not in config_fields}  # ScriptArguments' and ModelConfig's
    validate(ours | given, source)
    if not ours["model_name_or_path"]:
        raise RecipeError(f"{source}: field 'model_name_or_path' is not set: name the model to start from (a Hub id, a "
                          f"path, or tiny, base, sft)")
    losses = given.get("loss_type")
    if losses is not None and not set([losses] if isinstance(losses, str) else losses) <= set(cls.loss_types):
        raise RecipeError(f"{source}: field 'loss_type' is {losses!r}; {config_class.__name__} takes "
                          f"{', '.join(cls.loss_types)}")
    if ours["global_batch_size"] is not None and "gradient_accumulation_steps" in given:
        raise RecipeError(f"{source}: fields 'global_batch_size' and 'gradient_accumulation_steps' are both set: set only "
                          f"global_batch_size; the accumulation follows from it and the process count")
    settings = machine_settings(given, ours["global_batch_size"], ours["dtype"], max_per_device(cls, given),
                                processes or process_count(), not torch.cuda.is_available() if cpu is None else cpu)
    try:  # TRL's and transformers' own checks of the configs run as they are built
        script, args, model = HfArgumentParser((script_class, config_class, model_class)).parse_dict(
            {**ours, **given, **settings})
    except ValueError as err:
        raise RecipeError(f"{source}: TRL rejects the recipe: {' '.join(str(err).split())}") from None
    targets = ours["lora_target_modules"]
    if isinstance(targets, list) and len(targets) == 1 and targets != ["all-linear"]:
        model.lora_target_modules = targets  # ModelConfig makes a list of one a string, which peft reads as a regex
    return cls(script, args, model, given)


def max_per_device(cls: type[TrainRecipe], given: dict) -> int:
    """The most sequences a training recipe puts on one device at once: its per_device_train_batch_size, else
    TRL's default."""
    return given.get("per_device_train_batch_size", cls.classes()[1].__dataclass_fields__["per_device_train_batch_size"].default)


def process_count() -> int:
    """The processes of this run: $WORLD_SIZE under `accelerate launch`/torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def machine_settings(given: dict, global_batch_size: int | None, dtype: str, max_per_device: int, processes: int,
                     cpu: bool) -> dict:
    """The TRL config fields that follow from the machine and the process count:

    - the batch: with a `global_batch_size`, per_device_train_batch_size (at most `max_per_device`) and
      gradient_accumulation_steps for `processes` processes (`batch_plan`);
    - on a CPU (`cpu`): use_cpu, no pinned memory and, unless `given` sets them, no mixed precision (bf16 runs
      ~100x slower than fp32 on CPUs without bf16 instructions);
    - on a GPU, unless `given` sets them: the mixed precision of the weights' dtype (`resolve_dtype`): bf16 for
      bfloat16 weights (with `dtype: auto`, where the GPU has it), fp16 for float16 (auto on a T4), none for
      float32.
    """
    settings = {}
    if global_batch_size is not None:
        settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"] = batch_plan(
            global_batch_size, max_per_device, processes)
    if cpu:
        settings.update(use_cpu=True, dataloader_pin_memory=False)
    weights = "float32" if cpu else resolve_dtype(dtype)
    settings.update({k: weights == w for k, w in (("bf16", "bfloat16"), ("fp16", "float16")) if k not in given})
    return settings


def validate(values: dict, source: str = "<overrides>") -> None:
    """Raise a RecipeError for the first value of a recipe (`recipe_to_dict`) that cannot run: out of `RULES`'
    range, a local path that does not exist, or fp16 / 4-bit weights trained without LoRA."""
    for name, value in values.items():
        check, must = RULES.get(name, (None, ""))
        if check is not None and value is not None and not check(value):
            raise RecipeError(f"{source}: field {name!r} {must}, got {value!r}")
        if name in PATH_FIELDS:
            for item in value if isinstance(value, list) else [value]:
                local = _pool_model(item) if name == "pool" else item
                if isinstance(local, str) and looks_local(local) and not Path(local).expanduser().exists():
                    raise RecipeError(f"{source}: field {name!r} is {item!r}, but no such file or directory exists: "
                                      f"{_missing_path_hint(local)}")
    if "use_peft" in values and not values["use_peft"]:
        if values.get("dtype") == "float16":
            raise RecipeError(f"{source}: field 'dtype' is 'float16' with use_peft false: full fine-tuning in fp16 "
                              f"fails (\"Attempting to unscale FP16 gradients\"); set dtype: bfloat16 (float32 on a GPU "
                              f"without bf16), or use_peft: true")
        for bits in ("4", "8"):
            if values.get(f"load_in_{bits}bit"):
                raise RecipeError(f"{source}: field 'load_in_{bits}bit' is true with use_peft false: {bits}-bit weights "
                                  f"cannot be trained, only LoRA adapters on them; set use_peft: true, or load_in_{bits}bit: false")


def looks_local(value: str) -> bool:
    """Whether a model or data set field names a local file or directory, not a Hub id or a name."""
    return "://" not in value and (value.startswith(("/", "./", "../", "~", "runs/")) or value.endswith(LOCAL_SUFFIXES))


def _pool_model(member: str) -> str:
    """The model of an AIF pool member: "runs/tiny/sft@0.7" -> "runs/tiny/sft" (as aif.parse_pool_member)."""
    name, sep, temperature = member.rpartition("@")
    try:
        return name if sep and float(temperature) >= 0 else member
    except ValueError:
        return member


def _missing_path_hint(value: str) -> str:
    """What to do about a local path that does not exist: the command that writes it, else fix the path."""
    path = Path(value).expanduser()
    try:
        parts = path.resolve().relative_to(runs_root().resolve()).parts
    except ValueError:
        parts = path.parts[len(path.parts) - path.parts[::-1].index("runs"):] if "runs" in path.parts else ()
    if len(parts) >= 2 and parts[1] in ("sft", "aif", "dpo") and parts[0].partition("-")[0] in SCALES:
        scale, _, preset = parts[0].partition("-")
        command = f"zephyr {parts[1]} --scale {scale}" + (f" --preset {preset}" if preset else "")
        return f"run `{command}` first (it writes runs/{parts[0]}/{parts[1]}), or fix the path"
    return "fix the path (a Hub id is written org/name)"


def _check_type(value, hint, where: str):
    """Return `value` (a YAML string such as 5e-7 read as the float it is) or raise a RecipeError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        if len(others := [a for a in args if a is not type(None)]) == 1:  # Optional[X]: X's own message
            return _check_type(value, others[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ValueError:
                pass
        raise RecipeError(f"{where} must be {_type_name(hint)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if item is str and isinstance(value, str):  # `--set loss_type=ipo`: a list of one
            value = [value]
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list of {_type_name(item)}, got {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where} must be a mapping, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise RecipeError(f"{where} must be one of {', '.join(map(str, typing.get_args(hint)))}, got {value!r}")
        return value
    if hint is typing.Any:
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):  # e.g. transformers' SchedulerType: its values
        if value not in [member.value for member in hint]:
            raise RecipeError(f"{where} must be one of {', '.join(str(m.value) for m in hint)}, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return value  # an int is a float here (num_train_epochs: 3)
    if hint is float and isinstance(value, str):  # YAML reads 5e-7 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise RecipeError(f"{where} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    return value


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "None")


def recipe_to_dict(recipe: Recipe | TrainRecipe) -> dict:
    """A recipe's fields as a dict, as a recipe file writes them. A training recipe's: every field of its
    ScriptArguments and ModelConfig, and the TRL config's fields it sets (as `given`)."""
    if isinstance(recipe, TrainRecipe):
        return {**dataclasses.asdict(recipe.script), **dataclasses.asdict(recipe.model), **recipe.given}
    return dataclasses.asdict(recipe)


def _dump(values: dict) -> str:
    """YAML in the recipe files' format: one field a line, a list on one line."""
    return "".join(yaml.safe_dump({k: v}, default_flow_style=True, width=10**6).strip()[1:-1] + "\n"
                   for k, v in values.items())


RUNS_ENV = "ZEPHYR_RUNS"


def runs_root() -> Path:
    """$ZEPHYR_RUNS, else `runs/` in the project checkout above the working directory (so notebooks
    run from notebooks/ and scripts run from the root share one), else `./runs`."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "zephyr_utils").is_dir() and (directory / "pyproject.toml").is_file():
            return directory / "runs"
    return here / "runs"


CACHE_ENV = "ZEPHYR_CACHE"


def cache_dir() -> Path:
    """Where built artifacts that are not a run's outputs are kept (the tiny base model, generated toy
    data): $ZEPHYR_CACHE, else ~/.cache/zephyr_book."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zephyr_book")


def batch_plan(global_batch_size: int, max_per_device: int, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) giving `global_batch_size` sequences per optimizer
    step on `processes` processes, with at most `max_per_device` sequences on a device at once:

        per_device x accumulation x processes == global_batch_size

    e.g. a global batch of 128 with at most 16 per device: 16 x 8 on 1 GPU, 16 x 2 on 4, 16 x 1 on 8,
    8 x 1 on 16."""
    if global_batch_size < 1 or max_per_device < 1 or processes < 1:
        raise ValueError(f"global batch {global_batch_size}, per-device batch {max_per_device} and process count "
                         f"{processes} must all be at least 1")
    if global_batch_size % processes:
        raise ValueError(f"a global batch of {global_batch_size} cannot be split evenly over {processes} processes: "
                         f"launch a number of processes that divides it, or change global_batch_size")
    per_process = global_batch_size // processes
    per_device = max(d for d in range(1, min(max_per_device, per_process) + 1) if per_process % d == 0)
    return per_device, per_process // per_device


def train_batch(recipe: TrainRecipe, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) of a training recipe on `processes` processes:
    derived from `global_batch_size` when the recipe has one, else the TRL config's own two fields."""
    if recipe.global_batch_size is None:
        return recipe.args.per_device_train_batch_size, recipe.args.gradient_accumulation_steps
    return batch_plan(recipe.global_batch_size, max_per_device(type(recipe), recipe.given), processes)


def describe_batch(recipe: TrainRecipe, processes: int) -> str:
    """One line saying how a training recipe's global batch is made on `processes` processes."""
    per_device, accumulation = train_batch(recipe, processes)
    return (f"global batch {per_device * accumulation * processes} = {per_device} per device x {accumulation} "
            f"accumulation step{'s' if accumulation != 1 else ''} x {processes} process{'es' if processes != 1 else ''}")
