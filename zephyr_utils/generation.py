"""Batched sampling of completions: many conversations, one model, left padding, a progress bar.

    completions = generate(model, tokenizer, conversations, max_new_tokens=48, temperature=0.0)
    completions[0].text, completions[0].finished      # finished: the model ended its turn with EOS
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Completion:
    text: str  # the decoded answer, up to (not including) the EOS
    finished: bool  # True if the model emitted EOS within max_new_tokens
    n_tokens: int  # generated tokens, EOS included


def load_model(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a Hub id or a local directory, safetensors only, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.eval()
    return model, tokenizer


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The conversation in the tokenizer's chat template, ending with the assistant's cue.

    A tokenizer without a chat template (a base model) gets the Zephyr template, so base and chat
    models are prompted with the very same text."""
    from .chat import ZEPHYR_CHAT_TEMPLATE

    template = tokenizer.chat_template or ZEPHYR_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 64, seed: int = 0,
             sort_by_length: bool = True, progress: bool = True, desc: str = "generating") -> list[Completion]:
    """Answer each conversation (a message list ending with a user turn). Greedy if temperature is 0.

    Prompts are sorted by length before batching (less padding), and results returned in input order."""
    from tqdm.auto import tqdm

    prompts = [render_prompt(tokenizer, c) for c in conversations]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if sort_by_length else list(range(len(encoded)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    results: list[Completion | None] = [None] * len(encoded)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends at the same column
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention[row, width - len(encoded[i]) :] = 1
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
            eos_token_id=eos_id, pad_token_id=pad_id, **sampling,
        )
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            finished = eos_id in new
            if finished:
                new = new[: new.index(eos_id) + 1]
            text_ids = [t for t in new if t not in (eos_id, pad_id)]
            results[i] = Completion(tokenizer.decode(text_ids, skip_special_tokens=True).strip(), finished, len(new))
    return results  # type: ignore[return-value]


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def generate_vllm(model_path: str, conversations: list[list[dict]], max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, llm=None, tokenizer=None) -> list[Completion]:
    """The same as `generate`, with vLLM (demo/full scale, GPU; `pip install 'zephyr-utils[gpu]'`)."""
    if not vllm_available():
        raise ValueError("the vLLM backend needs vllm and a GPU: pip install 'zephyr-utils[gpu]', or use backend='transformers'")
    from vllm import LLM, SamplingParams

    from .models import load_tokenizer

    llm = llm or LLM(model=model_path, seed=seed)
    tokenizer = tokenizer or load_tokenizer(model_path)
    prompts = [render_prompt(tokenizer, c) for c in conversations]
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    outs = llm.generate(prompts, params)
    return [Completion(o.outputs[0].text.strip(), o.outputs[0].finish_reason == "stop", len(o.outputs[0].token_ids)) for o in outs]


class Sampler:
    """One model ready to answer conversations, with the backend chosen once:
    vLLM when `backend="vllm"`, or `"auto"` and vLLM is installed; transformers otherwise."""

    def __init__(self, model_path: str, backend: str = "auto", batch_size: int = 64):
        if backend not in ("auto", "vllm", "transformers"):
            raise ValueError(f"unknown generation backend {backend!r}; use auto, vllm or transformers")
        self.backend = "vllm" if backend == "vllm" or (backend == "auto" and vllm_available()) else "transformers"
        self.model_path, self.batch_size = model_path, batch_size
        if self.backend == "vllm":
            from vllm import LLM

            from .models import load_tokenizer

            self.llm, self.tokenizer = LLM(model=model_path), load_tokenizer(model_path)
        else:
            self.model, self.tokenizer = load_model(model_path)

    def __call__(self, conversations, max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0, progress=False):
        if self.backend == "vllm":
            return generate_vllm(self.model_path, conversations, max_new_tokens, temperature, top_p, seed,
                                 llm=self.llm, tokenizer=self.tokenizer)
        return generate(self.model, self.tokenizer, conversations, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, batch_size=self.batch_size, seed=seed, progress=progress)
