"""The toy world of the tiny scale as a plug-in: its data, prompts, teacher, oracle judge and base model.

Core modules never import this package: they look its pieces up by the names the tiny recipes use
(`registry.lookup(kind, name)` imports it on the first lookup). What it registers:

    dataset "toyworld"       the teacher's dSFT dialogues, written as JSON-lines files (`world`)
    prompts "toyworld"       the held-out AIF prompts of a split ("aif")
    eval_prompts "toyworld"  the two-turn evaluation prompts
    sampler "teacher"        the teacher as an AIF pool member and as the eval reference (`teacher`)
    judge "toy"              the world's oracle, written like an LLM judge (`judge`)
    base_model "tiny"        a few-million-parameter model pretrained on the world's text (`base_model`)
"""

from __future__ import annotations

from .. import registry
from .base_model import build_tiny_base
from .judge import ToyJudge
from .teacher import TeacherSampler
from .world import TOYWORLD, ToyWorld, write_toyworld_data


def aif_prompts(split: str, world_seed: int = 0) -> list[dict]:
    return ToyWorld(seed=world_seed).prompts(split)


def eval_prompts(world_seed: int = 0) -> list[dict]:
    return ToyWorld(seed=world_seed).eval_prompts()


registry.register("dataset", TOYWORLD, write_toyworld_data)
registry.register("prompts", TOYWORLD, aif_prompts)
registry.register("eval_prompts", TOYWORLD, eval_prompts)
registry.register("sampler", "teacher", TeacherSampler.from_recipe)
registry.register("judge", ToyJudge.name, ToyJudge)
registry.register("base_model", "tiny", build_tiny_base)
