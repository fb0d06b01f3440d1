import pytest

from zephyr_utils.chat import apply_zephyr_template, follows_template, validate_messages

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    import copy

    return apply_zephyr_template(copy.deepcopy(tiny_base[1]))


def test_template_renders_the_zephyr_format(tokenizer):
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n"
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nHi</s>\n<|assistant|>\n")


def test_generation_markers_cover_assistant_text_and_its_eos(tokenizer):
    out = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(masked) == "Hello.</s>"
    assert masked[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hello", "must be a list"),
        ([], "is empty"),
        (["hi"], r"\[0\] must be a dict"),
        ([{"content": "hi"}], r"\[0\] has no 'role'"),
        ([{"role": "user"}], r"\[0\] has no 'content'"),
        ([{"role": "human", "content": "hi"}], r"\[0\]\['role'\] is 'human'"),
        ([{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}], r"\[1\]\['role'\] is 'user' but 'assistant'"),
        ([{"role": "assistant", "content": "hi"}], r"\[0\]\['role'\] is 'assistant' but 'user'"),
        ([{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], r"\[1\] is a system message"),
        ([{"role": "user", "content": "   "}], r"\[0\]\['content'\] is empty"),
        ([{"role": "user", "content": 5}], r"\[0\]\['content'\] must be a string"),
        ([{"role": "user", "content": "hi"}], "ends with a 'user' message at index 0"),
        ([{"role": "system", "content": "x"}], "only a system message"),
    ],
)
def test_validate_messages_names_problem_and_index(messages, match):
    with pytest.raises(ValueError, match=match):
        validate_messages(messages)


def test_validate_messages_accepts_good_conversations():
    validate_messages(CHAT)
    validate_messages(CHAT[1:2], last_role="user")
    validate_messages(CHAT[1:], last_role=None)


@pytest.mark.parametrize(
    "text, finished, expected",
    [("The bork is red.", True, True), ("The bork is red.", False, False), ("", True, False),
     ("Red.\n<|user|>\nAnd?", True, False), ("<|assistant|> red", True, False)],
)
def test_follows_template(text, finished, expected):
    assert follows_template(text, finished) is expected
