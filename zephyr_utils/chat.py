"""The Zephyr chat template and message validation.

    <|system|>\\n...</s>\\n<|user|>\\n...</s>\\n<|assistant|>\\n...</s>\\n

The role markers are plain text, not special tokens; `</s>` is the tokenizer's EOS, so a model that
learnt the template stops generating at the end of its turn. The `{% generation %}` markers around
each assistant message (its EOS included) let TRL's `assistant_only_loss` mask everything else.
"""

from __future__ import annotations

ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant")


def apply_zephyr_template(tokenizer):
    """Set the Zephyr template on a tokenizer (in place) and return it."""
    tokenizer.chat_template = ZEPHYR_CHAT_TEMPLATE
    return tokenizer


def validate_messages(messages, last_role: str | None = "assistant", where: str = "messages") -> None:
    """Check a conversation: an optional system message, then user/assistant alternating, each with
    non-empty string content, ending in `last_role` (None: either). Raises ValueError naming the
    problem and the index."""
    if not isinstance(messages, list):
        raise ValueError(f"{where} must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError(f"{where} is empty: a conversation needs at least one user message")
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{where}[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        for key in ("role", "content"):
            if key not in m:
                raise ValueError(f"{where}[{i}] has no {key!r} field")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ValueError(f"{where}[{i}]['role'] is {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system":
            if i != 0:
                raise ValueError(f"{where}[{i}] is a system message; only the first message may be one")
            continue
        if role != expected:
            raise ValueError(f"{where}[{i}]['role'] is {role!r} but {expected!r} was expected (roles must alternate)")
        if not isinstance(content, str):
            raise ValueError(f"{where}[{i}]['content'] must be a string, got {type(content).__name__}")
        if not content.strip():
            raise ValueError(f"{where}[{i}]['content'] is empty")
        expected = "assistant" if role == "user" else "user"
    if expected == "user" and messages[-1]["role"] == "system":
        raise ValueError(f"{where} has only a system message; it needs a user message")
    final = messages[-1]["role"]
    if last_role is not None and final != last_role:
        raise ValueError(f"{where} ends with a {final!r} message at index {len(messages) - 1}; it must end with {last_role!r}")


ROLE_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")


def follows_template(text: str, finished: bool) -> bool:
    """Did a generated turn follow the chat template? It must end with EOS (`finished`), be
    non-empty, and not write another role's turn (no role marker inside the answer)."""
    return finished and bool(text.strip()) and not any(marker in text for marker in ROLE_MARKERS)


def show_loss_mask(tokenizer, messages: list[dict]) -> str:
    """The formatted conversation with the tokens that carry loss (assistant text and its EOS)
    wrapped in [[ ]]: what `assistant_only_loss=True` trains on."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    pieces, inside = [], False
    for token, trained in zip(out["input_ids"], out["assistant_masks"]):
        if trained and not inside:
            pieces.append("[[")
        if not trained and inside:
            pieces.append("]]")
        inside = bool(trained)
        pieces.append(tokenizer.decode([token]))
    return "".join(pieces) + ("]]" if inside else "")
