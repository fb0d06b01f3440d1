import json
from pathlib import Path

from zephyr_utils.chat import follows_template
from zephyr_utils.generation import generate
from zephyr_utils.toy.base_model import build_tiny_base, fact_accuracy


def test_base_model_loads_like_a_hub_model(tiny_base_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny_base_path / "model.safetensors").is_file() and not list(tiny_base_path.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(tiny_base_path, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_path)
    n_params = sum(p.numel() for p in model.parameters())
    assert model.config.model_type == "mistral" and 5e5 < n_params < 5e6
    assert tokenizer.chat_template is None  # a base model has no chat template
    assert tokenizer.eos_token == "</s>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    info = json.loads((tiny_base_path / "zephyr_base.json").read_text())
    print(f"\ntiny base: {n_params:,} params, built in {info['build_seconds']:.0f} s, final loss {info['final_loss']:.3f}")


def test_build_is_cached(tiny_base_path):
    before = (tiny_base_path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_base(progress=False) == tiny_base_path
    assert (tiny_base_path / "model.safetensors").stat().st_mtime_ns == before


def test_base_model_learnt_held_out_facts(tiny_base, world):
    model, tokenizer = tiny_base
    probes = world.probe_facts(held_out=True)
    accuracy = fact_accuracy(model, tokenizer, probes)
    chance = sum(1 / len(c) for _, _, c in probes) / len(probes)
    print(f"\nheld-out fact completion accuracy {accuracy:.1%} (chance {chance:.1%}, {len(probes)} facts)")
    assert accuracy > 3 * chance and accuracy > 0.5


def test_base_model_does_not_follow_the_chat_template(tiny_base, world):
    model, tokenizer = tiny_base
    convs = [[{"role": "user", "content": r["turns"][0]}] for r in world.eval_prompts()]
    outs = generate(model, tokenizer, convs, max_new_tokens=48, progress=False)
    rate = sum(follows_template(o.text, o.finished) for o in outs) / len(outs)
    print(f"\nbase model template adherence {rate:.1%}")
    assert rate < 0.2


def test_build_is_deterministic_for_a_seed(tmp_path):
    from zephyr_utils.config import load_recipe

    import torch
    from safetensors.torch import load_file

    small = load_recipe("base", "tiny", max_steps=3, hidden_size=32, intermediate_size=64, docs_per_creature=2)
    a = build_tiny_base(small, root=tmp_path / "a", progress=False)
    b = build_tiny_base(small, root=tmp_path / "b", progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert Path(a).name == Path(b).name  # the cache key depends on the recipe only
