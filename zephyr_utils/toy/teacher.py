"""The toy world's teacher as an AIF pool member (tiny scale), registered as the sampler "teacher"."""

from __future__ import annotations

from ..config import AIFRecipe, EvalRecipe
from ..generation import Completion
from .world import CHATTY_SHARE, ToyWorld


class TeacherSampler:
    """The toy world's teacher as a pool member: UltraFeedback's pool also held the strong models (GPT-4,
    GPT-3.5) whose answers the student is distilled towards. Called like a `generation.Sampler`.
    `chatty_share`: the share of its answers that end with the filler sentence (the dSFT teacher's is
    `world.CHATTY_SHARE`)."""

    def __init__(self, world_seed: int = 0, chatty_share: float | None = None):
        self.world = ToyWorld(seed=world_seed)
        self.chatty_share = CHATTY_SHARE if chatty_share is None else chatty_share

    @classmethod
    def from_recipe(cls, recipe: AIFRecipe | EvalRecipe) -> TeacherSampler:
        """The teacher of the recipe's toy world, as chatty as an AIF recipe's `teacher_chatty_share` says (an
        eval recipe's reference: as the dSFT teacher)."""
        return cls(recipe.world_seed, getattr(recipe, "teacher_chatty_share", None))

    def __call__(self, conversations, **_):
        answers = [self.world.answer(self.world.resolve_question(c), chatty_share=self.chatty_share) for c in conversations]
        return [Completion(a, True, 0) for a in answers]
