"""The toy world's oracle as a judge (tiny scale), registered as the judge "toy" (`judge: toy`)."""

from __future__ import annotations

from ..judges import Judge, parse_preference
from .world import ToyWorld


class ToyJudge(Judge):
    """The toy world's oracle: deterministic, instant, and written like an LLM judge. Its verdicts are
    read with the same `parse_rating`/`parse_preference` as an LLM judge's."""

    name = "toy"

    def __init__(self, world: ToyWorld | None = None, world_seed: int = 0):
        self.world = world or ToyWorld(seed=world_seed)

    def addresses(self, conversation: list[dict], response: str) -> bool:
        """Does the answer name the creature asked about (part of the tiny scale's template check)?"""
        return self.world.addresses(conversation, response)

    def _verdict(self, conversation, response, aspect, attempt):
        return self.world.judge_verdict(conversation, response, aspect)

    def compare(self, conversation, answer_a, answer_b):
        text = self.world.pairwise_verdict(conversation, answer_a, answer_b)
        return parse_preference(text), text
