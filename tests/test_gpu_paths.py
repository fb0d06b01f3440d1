"""The GPU paths, checked on a CPU: CUDA is patched in, vLLM is a fake module, models are stand-ins.

What each test would have caught is in its docstring. Nothing here needs a GPU, the Hub or DeepSpeed
(the one DeepSpeed check is skipped where it is not installed; the order it depends on is checked
without it)."""

import json
import os
import subprocess
import sys
import textwrap
import types
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from zephyr_utils import device, generation, models
from zephyr_utils.config import batch_plan, load_recipe, recipe_path, train_batch
from zephyr_utils.runs import stage_dir

LLAMA2_STYLE_TEMPLATE = (  # an instruct model's own template that writes the BOS itself
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)
CONVERSATIONS = [[{"role": "user", "content": "What colour is the lenooll?"}],
                 [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                  {"role": "user", "content": "How many legs does it have?"}]]


# ---------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    """Two small tokenizers on disk: a base model's (no chat template) and an instruct model's
    (its own template, starting with BOS). Their token ids are what the backends are checked on."""
    from zephyr_utils.toy.base_model import train_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    texts = ["<|user|>\nWhat colour is the lenooll?</s>\n<|assistant|>\nIt is blue.</s>\n[INST] Hi [/INST] Hello."] * 20
    base = train_tokenizer(texts, vocab_size=300)
    base.save_pretrained(root / "base")
    base.chat_template = LLAMA2_STYLE_TEMPLATE
    base.save_pretrained(root / "instruct")
    return {"base": str(root / "base"), "instruct": str(root / "instruct")}


def patch_gpu(monkeypatch, capability=(8, 0), name="NVIDIA A100"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


def patch_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_vllm(monkeypatch, request):
    """A fake `vllm` module. Like the real one, an engine reserves most of the GPU: creating a second
    `LLM` while another is not shut down fails with an out-of-memory error. It records the prompts."""
    state = SimpleNamespace(live=[], created=[], prompts={}, cleanups=0)

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, model, dtype="auto", **kwargs):
            if state.live:
                raise RuntimeError(f"CUDA out of memory: the engine of {state.live[0].model} still holds 90% of the GPU")
            self.model, self.dtype = model, dtype
            self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._stop))  # vLLM V1
            state.live.append(self)
            state.created.append(self)

        def _stop(self):
            if self in state.live:
                state.live.remove(self)

        def generate(self, prompts, params, use_tqdm=True):
            state.prompts.setdefault(self.model, []).extend(prompts)
            answer = SimpleNamespace(text=f" answer of {Path(self.model).name} ", finish_reason="stop", token_ids=[5, 6, 2])
            return [SimpleNamespace(outputs=[answer]) for _ in prompts]

    class LLMWithShutdown(LLM):  # newer vLLM: LLM.shutdown()
        def shutdown(self):
            self._stop()

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLMWithShutdown if getattr(request, "param", "") == "shutdown method" else LLM
    vllm.SamplingParams = SamplingParams
    distributed = types.ModuleType("vllm.distributed")

    def cleanup_dist_env_and_memory(shutdown_ray=False):
        state.cleanups += 1

    distributed.cleanup_dist_env_and_memory = cleanup_dist_env_and_memory
    vllm.distributed = distributed
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    return state


class RecordingLM(torch.nn.Module):
    """A stand-in causal LM for the transformers backend: records the ids it is given and answers EOS."""

    alive = weakref.WeakSet()

    def __init__(self, path, eos_id):
        super().__init__()
        self.path, self.eos_id, self.calls = path, eos_id, []
        self.weight = torch.nn.Parameter(torch.zeros(1))
        RecordingLM.alive.add(self)

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append((input_ids, attention_mask))
        return torch.cat([input_ids, torch.full((len(input_ids), 1), self.eos_id)], dim=1)


def recording_loader(monkeypatch):
    from transformers import AutoTokenizer

    def load(path, dtype="auto", trust_remote_code=False):
        tokenizer = AutoTokenizer.from_pretrained(path)
        return RecordingLM(path, tokenizer.eos_token_id), tokenizer

    monkeypatch.setattr(generation, "load_model", load)


def unpadded(input_ids, attention_mask) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


# ------------------------------------------------------------------------- the device/dtype policy

@pytest.mark.parametrize("capability, expected", [((7, 5), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")])
def test_auto_dtype_is_bf16_where_the_gpu_has_it_and_fp16_on_a_t4(monkeypatch, capability, expected):
    patch_gpu(monkeypatch, capability)
    assert device.resolve_dtype("auto") == expected and device.device().type == "cuda"
    assert device.resolve_dtype("float16") == "float16"  # the recipe's choice wins
    assert device.resolve_dtype("float32") == "float32"


def test_cpu_keeps_float32_and_a_bad_dtype_is_a_clear_error(monkeypatch, tmp_path):
    patch_cpu(monkeypatch)
    assert device.resolve_dtype("auto") == "float32" and device.device().type == "cpu"
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*auto, float32"):
        device.resolve_dtype("fp8")
    patch_gpu(monkeypatch, (7, 5), "Tesla T4")
    with pytest.raises(ValueError, match="bfloat16 needs .*8.0.*Tesla T4 is 7.5.*'auto' or 'float16'"):
        device.resolve_dtype("bfloat16")
    (tmp_path / "mine.yaml").write_text("models: [sft]\ndtype: fp8\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: field 'dtype' must be one of auto"):
        load_recipe("eval", "tiny", recipe_file=tmp_path / "mine.yaml")


@pytest.mark.parametrize("capability, dtype, on_gpu", [((7, 5), torch.float16, True), ((8, 6), torch.bfloat16, True),
                                                       (None, torch.float32, False)])
def test_inference_loads_onto_the_gpu_in_the_policy_dtype(monkeypatch, tokenizer_dirs, capability, dtype, on_gpu):
    """Finding 1: `generation.load_model` (the transformers sampler, the local HF judge, evaluation and the
    notebooks all use it) loaded fp32 weights and left them on the CPU."""
    from transformers import AutoModelForCausalLM

    from zephyr_utils.judges import make_judge

    if on_gpu:
        patch_gpu(monkeypatch, capability)
    else:
        patch_cpu(monkeypatch)
    loads = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kwargs: loads.append(kwargs) or RecordingLM(path, 2))
    generation.load_model(tokenizer_dirs["base"])
    make_judge(f"hf:{tokenizer_dirs['instruct']}")  # the local judge loads through the same policy
    for kwargs in loads:
        assert kwargs["dtype"] == dtype and kwargs["use_safetensors"] is True
        assert (kwargs["device_map"] == torch.device("cuda")) if on_gpu else kwargs["device_map"] is None
    assert len(loads) == 2


def test_cpu_inference_is_unchanged_fp32_on_the_cpu(tmp_path, tokenizer_dirs):
    """The tiny scale's numbers are fp32 CPU numbers: the policy must leave them as they were."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the policy puts the model on it")

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dirs["base"])
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = generation.load_model(str(tmp_path))
    assert {p.dtype for p in model.parameters()} == {torch.float32} and {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.parametrize("capability, bf16, fp16", [((7, 5), False, True), ((8, 0), True, False), (None, False, False)])
def test_training_precision_follows_the_policy(monkeypatch, tmp_path, capability, bf16, fp16):
    """The demo recipes say `dtype: auto` and leave bf16/fp16 to the machine: fp16 autocast on a T4, bf16 on
    an A100, none on a CPU. (`machine_settings` is what load_recipe adds; a real GPU is needed to build the
    config itself.)"""
    from zephyr_utils.config import machine_settings

    if capability:
        patch_gpu(monkeypatch, capability)
    else:
        patch_cpu(monkeypatch)
    on_cpu = capability is None
    for stage in ("sft", "dpo"):
        recipe = load_recipe(stage, "demo", cpu=True)
        settings = machine_settings(recipe.given, recipe.global_batch_size, recipe.dtype, 4, 1, on_cpu)
        assert (settings["bf16"], settings["fp16"], settings.get("use_cpu", False)) == (bf16, fp16, on_cpu)
    tiny = load_recipe("sft", "tiny", cpu=True)
    settings = machine_settings(tiny.given, tiny.global_batch_size, tiny.dtype, 16, 1, on_cpu)
    assert tiny.given["bf16"] is False and "bf16" not in settings  # tiny is fp32 wherever it runs: the recipe says so
    if capability:  # an explicit dtype brings its own mixed precision on a GPU, not TRL's default bf16
        assert machine_settings({}, None, "float16", 8, 1, cpu=False) == {"bf16": False, "fp16": True}
        assert machine_settings({}, None, "float32", 8, 1, cpu=False) == {"bf16": False, "fp16": False}


def test_training_load_uses_the_policy_dtype_and_no_device_map(monkeypatch):
    """Full and LoRA training loads leave placement to the trainer (ZeRO-3 needs device_map=None)."""
    from transformers import AutoModelForCausalLM

    patch_gpu(monkeypatch, (7, 5))
    loads = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: loads.append(kwargs))
    models.load_model("some/base", load_recipe("sft", "demo", cpu=True))
    assert loads[0]["dtype"] == torch.float16 and "device_map" not in loads[0]
    models.load_model("some/base", load_recipe("sft", "demo", cpu=True, model_revision="a1b2c3d"))  # a pinned commit
    assert loads[0]["revision"] == "main" and loads[1]["revision"] == "a1b2c3d"


def test_completion_logps_runs_on_the_models_device():
    """Chapter 3's hand-computed DPO loss built its ids on the CPU, so a GPU model failed."""
    from zephyr_utils.dpo import completion_logps

    class MetaLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))

        @property
        def device(self):
            return self.weight.device

        def forward(self, input_ids):
            assert input_ids.device.type == "meta", "the ids must be on the model's device"
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 50, device="meta"))

    class CharTokenizer:
        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            return "".join(m["content"] for m in messages)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 50 for c in text]}

    tokenizer = CharTokenizer()
    assert completion_logps(MetaLM(), tokenizer, [{"role": "user", "content": "ab"}], "cd").device.type == "meta"


# ------------------------------------------------------------------ backends: vLLM and transformers

def test_backend_choice(monkeypatch, fake_vllm):
    patch_cpu(monkeypatch)
    assert generation.choose_backend("auto") == "transformers"  # vLLM installed, but no GPU
    patch_gpu(monkeypatch)
    assert generation.choose_backend("auto") == "vllm" and generation.choose_backend("transformers") == "transformers"
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    assert generation.choose_backend("auto") == "transformers"
    with pytest.raises(ValueError, match="'vllm' needs vllm"):
        generation.choose_backend("vllm")
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        generation.choose_backend("tgi")


@pytest.mark.parametrize("model", ["base", "instruct"])
def test_both_backends_send_the_same_tokens_with_one_bos(monkeypatch, fake_vllm, tokenizer_dirs, model):
    """Finding 2: the vLLM backend forced the Zephyr template on every model and let vLLM add a second
    BOS, while the transformers backend used each model's own template and no added special tokens."""
    from transformers import AutoTokenizer

    path = tokenizer_dirs[model]
    tokenizer = AutoTokenizer.from_pretrained(path)
    patch_gpu(monkeypatch)
    recording_loader(monkeypatch)
    with generation.Sampler(path, "vllm", dtype="auto") as sampler:
        sampler(CONVERSATIONS)
    with generation.Sampler(path, "transformers") as sampler:
        sampler(CONVERSATIONS)
        (input_ids, attention), = sampler.model.calls
    sent_to_vllm = [p["prompt_token_ids"] for p in fake_vllm.prompts[path]]
    order = sorted(range(len(CONVERSATIONS)), key=lambda i: len(sent_to_vllm[i]))  # transformers sorts by length
    assert unpadded(input_ids, attention) == [sent_to_vllm[i] for i in order]
    texts = [tokenizer.decode(ids) for ids in sent_to_vllm]
    if model == "instruct":  # its own template, BOS written once by the template
        assert all(t.startswith("<s>[INST] ") and t.endswith("[/INST]") for t in texts)
        assert all(ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id for ids in sent_to_vllm)
    else:  # no template of its own: the Zephyr template, no BOS at all (as it is trained)
        assert all(t.startswith("<|user|>\n") and t.endswith("<|assistant|>\n") for t in texts)
        assert all(tokenizer.bos_token_id not in ids for ids in sent_to_vllm)
    assert fake_vllm.created[0].dtype == "bfloat16" and not fake_vllm.live  # the policy's dtype; shut down


@pytest.mark.parametrize("fake_vllm", ["engine_core", "shutdown method"], indirect=True)
def test_aif_pool_runs_one_model_at_a_time_on_vllm(monkeypatch, tmp_path, fake_vllm, tokenizer_dirs):
    """Finding 2: each pool member's engine was created while the previous one still held the GPU, so
    the second member could not start. Here the fake engine fails exactly as the real one would."""
    from zephyr_utils.aif import JsonlLog, collect_completions

    patch_gpu(monkeypatch)
    prompts = [{"prompt_id": str(i), "prompt": c[-1]["content"], "messages": c} for i, c in enumerate(CONVERSATIONS)]
    recipe = load_recipe("aif", "demo", pool=[tokenizer_dirs["base"], tokenizer_dirs["instruct"] + "@0.7"],
                         max_new_tokens=16, batch_size=8)
    log = JsonlLog(tmp_path / "completions.jsonl", ("prompt_id", "model"))
    collect_completions(prompts, recipe, log, progress=False)
    assert [llm.model for llm in fake_vllm.created] == [tokenizer_dirs["base"], tokenizer_dirs["instruct"]]
    assert not fake_vllm.live and fake_vllm.cleanups == 2  # every engine shut down, memory released
    assert len(log.records) == 4 and {r["completion"] for r in log.records.values()} == {"answer of base", "answer of instruct"}
    instruct_prompts = fake_vllm.prompts[tokenizer_dirs["instruct"]]
    assert all(isinstance(p, dict) and p["prompt_token_ids"] for p in instruct_prompts)  # token ids, not text


def test_aif_pool_frees_each_transformers_model_before_the_next(monkeypatch, tmp_path, tokenizer_dirs):
    """Without vLLM the same holds: a member's model is garbage before the next member loads."""
    from zephyr_utils.aif import JsonlLog, collect_completions

    patch_cpu(monkeypatch)
    recording_loader(monkeypatch)
    real_load = generation.load_model
    alive_at_load = []

    def load(path, dtype="auto", trust_remote_code=False):
        import gc

        gc.collect()
        alive_at_load.append(len(RecordingLM.alive))
        return real_load(path, dtype)

    monkeypatch.setattr(generation, "load_model", load)
    prompts = [{"prompt_id": "0", "prompt": "x", "messages": CONVERSATIONS[0]}]
    recipe = load_recipe("aif", "demo", pool=[tokenizer_dirs["base"], tokenizer_dirs["instruct"], tokenizer_dirs["base"] + "@0.5"])
    collect_completions(prompts, recipe, JsonlLog(tmp_path / "c.jsonl", ("prompt_id", "model")), progress=False)
    assert alive_at_load == [0, 0, 0]


def test_eval_answers_with_vllm_and_shuts_each_engine_down(monkeypatch, tmp_path, fake_vllm, tokenizer_dirs):
    """Finding 1: `run_eval` never used vLLM. Now each model answers through the recipe's backend, one
    engine at a time, and the judge comes after."""
    from zephyr_utils.evaluation import load_eval_prompts, run_eval

    patch_gpu(monkeypatch)
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path))
    recipe = load_recipe("eval", "tiny", models=[tokenizer_dirs["base"], tokenizer_dirs["instruct"]], bootstrap_samples=100,
                         generation_backend="auto")  # tiny's recipe says transformers; auto picks vLLM on a GPU
    results = json.loads((run_eval(recipe) / "results.json").read_text())
    assert [llm.model for llm in fake_vllm.created] == recipe.models and not fake_vllm.live
    assert set(results["models"]) == set(recipe.models)
    turns = sum(len(p["turns"]) for p in load_eval_prompts(recipe.prompts))
    assert len(fake_vllm.prompts[tokenizer_dirs["base"]]) == turns and all(p["prompt_token_ids"] for p in fake_vllm.prompts[tokenizer_dirs["base"]])


# -------------------------------------------------------------- training: load order, QLoRA device map

def _fake_trainer(events):
    class FakeTrainer:
        def __init__(self, model=None, ref_model=None, args=None, **kwargs):
            events.append("trainer")
            self.model, self.args = model, args

        def train(self, resume_from_checkpoint=None):
            events.append("train")

    return FakeTrainer


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_training_arguments_exist_before_any_model_loads(monkeypatch, tmp_path, tokenizer_dirs, stage):
    """Finding 4: `model=load_model(...)` was evaluated before `args=sft_config(...)`, so under ZeRO-3
    every process loaded the whole model (dDPO: two copies) in CPU memory before DeepSpeed existed.
    The DeepSpeed config is made when the arguments are: the recipe builds them when it loads, and the
    stage takes its copy (`training_args`) before any model loads; for full-scale dDPO that covers the
    explicit reference too."""
    import trl

    from zephyr_utils import dpo, sft
    from zephyr_utils.data import write_jsonl

    events = []
    module = sft if stage == "sft" else dpo
    make_args = module.training_args
    monkeypatch.setattr(module, "training_args", lambda *a, **k: events.append("args") or make_args(*a, **k))
    monkeypatch.setattr(module, "load_model", lambda *a, **k: events.append("model"))
    monkeypatch.setattr(trl, "SFTTrainer" if stage == "sft" else "DPOTrainer", _fake_trainer(events))
    monkeypatch.setattr(module, "save_outputs", lambda *a, **k: events.append("save"))
    if stage == "sft":
        recipe = load_recipe("sft", "tiny", model_name_or_path=tokenizer_dirs["base"], output_dir=str(tmp_path / "out"),
                             max_train_samples=4, max_eval_samples=2)
        sft.train_sft(recipe)
    else:
        row = {"prompt": "Hi", "prompt_id": "0", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
               "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No."}]}
        for split in ("train", "test"):
            write_jsonl([row, {**row, "prompt_id": "1"}], tmp_path / "prefs" / f"{split}.jsonl")
        recipe = load_recipe("dpo", "full", model_name_or_path=tokenizer_dirs["base"], dataset=str(tmp_path / "prefs"),
                             train_split="train", eval_split="test", output_dir=str(tmp_path / "out"), bf16=False,
                             dtype="float32", attn_implementation="sdpa", activation_checkpointing=False)
        dpo.train_dpo(recipe)
    models_loaded = 1 if stage == "sft" else 2  # policy, and for full fine-tuning the frozen reference
    assert events == ["args"] + ["model"] * models_loaded + ["trainer", "train", "save"]


DEEPSPEED_CHECK = """
import os, sys, json
from unittest import mock
import transformers
from transformers.integrations import is_deepspeed_zero3_enabled
from zephyr_utils import sft
from zephyr_utils.config import load_recipe
# what `accelerate launch --config_file deepspeed_zero3.yaml` puts in each process's environment
os.environ.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
                  ACCELERATE_DEEPSPEED_ZERO3_INIT="true", ACCELERATE_MIXED_PRECISION="no")
seen = []
def from_pretrained(path, **kwargs):
    seen.append(is_deepspeed_zero3_enabled())
    raise SystemExit(0 if all(seen) else 3)
with mock.patch.object(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained):
    sft.train_sft(load_recipe("sft", "tiny", model_name_or_path=sys.argv[1], output_dir=sys.argv[2],
                              max_train_samples=4, max_eval_samples=2))
raise SystemExit(4)  # the model was never loaded
"""


def test_under_deepspeed_zero3_the_model_loads_partitioned(tmp_path, tokenizer_dirs):
    """The real thing, in a child process (DeepSpeed's config is process-global): with the environment
    `accelerate launch` sets for the shipped ZeRO-3 config, `from_pretrained` runs while
    `is_deepspeed_zero3_enabled()` is true, so transformers loads each process's shard only."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed); the order it "
                                            "depends on is checked by test_training_arguments_exist_before_any_model_loads")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(DEEPSPEED_CHECK), tokenizer_dirs["base"], str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"


@pytest.mark.parametrize("local_rank, expected", [(None, {"": 0}), ("3", {"": 3})])
def test_qlora_loads_on_each_processs_own_gpu(monkeypatch, local_rank, expected):
    """Finding 4: under `--launcher multi_gpu` every QLoRA process loaded its 4-bit model onto GPU 0."""
    from transformers import AutoModelForCausalLM

    patch_gpu(monkeypatch, (8, 9))
    recipe = load_recipe("sft", "demo", preset="24gb", cpu=True)  # before LOCAL_RANK: a launched process has its config
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(models, "quantization_config", lambda recipe: SimpleNamespace(kind="nf4"))
    loads = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: loads.append(kwargs))
    models.load_model("mistralai/Mistral-7B-v0.1", recipe)
    assert loads[0]["device_map"] == expected and loads[0]["dtype"] == torch.bfloat16
    patch_cpu(monkeypatch)
    assert models.kbit_device_map() is None


# ------------------------------------------------------------------------------- the global batch

FULL_BATCHES = [("sft", None, 128), ("dpo", None, 32), ("dpo", "dpo_handbook", 128)]


@pytest.mark.parametrize("processes", [1, 4, 8, 16])
@pytest.mark.parametrize("stage, recipe_name, global_batch", FULL_BATCHES)
def test_the_papers_global_batch_holds_on_any_gpu_count(tmp_path, stage, recipe_name, global_batch, processes):
    """The process count used to default to the GPUs present, silently changing the global batch. The
    config a process of an N-process launch builds makes the recipe's global batch with N processes."""
    recipe_file = recipe_path(recipe_name, "full") if recipe_name else None
    recipe = load_recipe(stage, "full", recipe_file=recipe_file, processes=processes)
    assert recipe.global_batch_size == global_batch
    per_device, accumulation = recipe.args.per_device_train_batch_size, recipe.args.gradient_accumulation_steps
    assert per_device * accumulation * processes == global_batch
    assert per_device <= recipe.given["per_device_train_batch_size"]  # never more than fits on one GPU
    assert train_batch(load_recipe(stage, "full", recipe_file=recipe_file), processes) == (per_device, accumulation)


def test_batch_plan_arithmetic_and_errors():
    assert [batch_plan(128, 16, n) for n in (1, 4, 8, 16)] == [(16, 8), (16, 2), (16, 1), (8, 1)]
    assert [batch_plan(32, 4, n) for n in (1, 4, 8, 16)] == [(4, 8), (4, 2), (4, 1), (2, 1)]
    assert batch_plan(48, 16, 2) == (12, 2)  # the largest per-device batch that divides the share
    with pytest.raises(ValueError, match="global batch of 32 cannot be split evenly over 3 processes"):
        batch_plan(32, 4, 3)
    with pytest.raises(ValueError, match="fields 'global_batch_size' and 'gradient_accumulation_steps' are both set"):
        load_recipe("dpo", "full", gradient_accumulation_steps=2)
    tiny = load_recipe("sft", "tiny")  # no global batch: the recipe's own fields, as before
    assert train_batch(tiny, 1) == (tiny.per_device_train_batch_size, tiny.gradient_accumulation_steps)


@pytest.mark.parametrize("processes, line", [
    (8, "global batch 128 = 16 per device x 1 accumulation step x 8 processes"),
    (4, "global batch 128 = 16 per device x 2 accumulation steps x 4 processes"),
    (16, "global batch 128 = 8 per device x 1 accumulation step x 16 processes"),
])
def test_the_launch_prints_the_global_batch(capsys, processes, line):
    from zephyr_utils.cli import main

    main(["sft", "--scale", "full", "--num-processes", str(processes), "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"sft: {line}" and f"--num_processes {processes}" in printed[1]


def test_a_process_count_that_cannot_make_the_global_batch_stops_before_launching(capsys):
    from zephyr_utils.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["dpo", "--scale", "full", "--num-processes", "3", "--dry-run"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "cannot be split evenly over 3 processes" in captured.err and "accelerate launch" not in captured.out


# ------------------------------------------------------------------------------ the one-GPU presets

def test_t4_preset_is_a_small_model_in_fp16(monkeypatch, tmp_path):
    from zephyr_utils.config import machine_settings

    patch_gpu(monkeypatch, (7, 5), "Tesla T4")
    sft = load_recipe("sft", "demo", cpu=True)
    assert sft.model_name_or_path == "Qwen/Qwen2.5-0.5B" and sft.use_peft and not sft.load_in_4bit
    assert device.resolve_dtype(sft.dtype) == "float16"
    assert machine_settings(sft.given, sft.global_batch_size, sft.dtype, 4, 1, cpu=False)["fp16"] is True
    for stage in ("aif", "eval"):
        assert device.resolve_dtype(load_recipe(stage, "demo").dtype) == "float16"


def test_24gb_preset_is_mistral_7b_with_the_handbook_qlora_recipe(monkeypatch, tmp_path):
    sft, dpo = load_recipe("sft", "demo", preset="24gb"), load_recipe("dpo", "demo", preset="24gb")
    assert sft.model_name_or_path == "mistralai/Mistral-7B-v0.1" and sft.load_in_4bit and sft.use_peft
    assert (sft.lora_r, sft.lora_alpha, sft.lora_dropout, sft.learning_rate) == (16, 16, 0.05, 2e-4)
    assert (sft.global_batch_size, sft.max_length, sft.lr_scheduler_type, sft.warmup_steps) == (8, 2048, "cosine", 0.1)
    assert (dpo.lora_r, dpo.lora_alpha, dpo.beta, dpo.learning_rate, dpo.optim) == (128, 128, 0.01, 5e-6, "paged_adamw_32bit")
    assert (dpo.global_batch_size, dpo.max_length, dpo.num_train_epochs) == (16, 1024, 1)
    assert train_batch(sft, 1) == (4, 2) and train_batch(dpo, 1) == (4, 4)  # the handbook's 4 x 2 and 4 x 4
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path))
    assert stage_dir(sft, "sft") == tmp_path / "demo-24gb" / "sft"  # never resumes the T4 preset's checkpoints
    assert stage_dir(load_recipe("sft", "demo"), "sft") == tmp_path / "demo" / "sft"


def test_preset_by_flag_set_or_environment(monkeypatch, capsys):
    from zephyr_utils.cli import main

    for argv in (["--preset", "24gb"], ["--set", "preset=24gb"]):
        main(["sft", "--scale", "demo", *argv, "--dry-run"])
        assert capsys.readouterr().out.splitlines()[0] == "sft: global batch 8 = 4 per device x 2 accumulation steps x 1 process"
    monkeypatch.setenv("ZEPHYR_PRESET", "24gb")
    assert load_recipe("dpo", "demo").load_in_4bit and load_recipe("dpo", "demo").preset == "24gb"
    with pytest.raises(ValueError, match="unknown preset 'a100' at demo scale from argument `preset`; presets at demo scale: 24gb"):
        load_recipe("sft", "demo", preset="a100")
    monkeypatch.setenv("ZEPHYR_PRESET", "24GB ")
    assert load_recipe("sft", "demo").preset == "24gb"
    monkeypatch.setenv("ZEPHYR_PRESET", "")
    assert load_recipe("sft", "demo").model_name_or_path == "Qwen/Qwen2.5-0.5B"
