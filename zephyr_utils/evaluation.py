"""Measuring the models: template adherence now; judged scores and win rates as the book grows."""

from __future__ import annotations

from .chat import follows_template
from .generation import Completion, generate


def template_adherence(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48,
                       **generate_kwargs) -> tuple[float, list[Completion]]:
    """Share of conversations the model answers in the chat template (see `chat.follows_template`),
    and the completions themselves (greedy unless a temperature is given)."""
    completions = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, **generate_kwargs)
    rate = sum(follows_template(c.text, c.finished) for c in completions) / len(completions)
    return rate, completions
