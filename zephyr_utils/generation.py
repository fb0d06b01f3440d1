"""Batched sampling of completions: many conversations, one model, left padding, a progress bar.

    completions = generate(model, tokenizer, conversations, max_new_tokens=48, temperature=0.0)
    completions[0].text, completions[0].finished      # finished: the model ended its turn with EOS

    with Sampler("HuggingFaceH4/zephyr-7b-beta") as sampler:   # vLLM on a GPU when installed
        completions = sampler(conversations, max_new_tokens=512, temperature=0.7)
    # leaving the block frees the model (a vLLM engine holds ~90% of the GPU until it is shut down)

Both backends send the same tokens: each model's own chat template (the Zephyr template for a
tokenizer without one), rendered and tokenized once here, with no special tokens added on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .chat import ZEPHYR_CHAT_TEMPLATE
from .config import BACKENDS
from .device import device, release_memory, resolve_dtype
from .progress import bar, enabled


@dataclass
class Completion:
    text: str  # the decoded answer, up to (not including) the EOS
    finished: bool  # True if the model emitted EOS within max_new_tokens
    n_tokens: int  # generated tokens, EOS included


def load_model(path: str, dtype: str = "auto", trust_remote_code: bool = False):
    """(model, tokenizer) from a Hub id or a local directory, safetensors only, in eval mode, on the
    GPU when there is one, in `dtype` ("auto": see `device.resolve_dtype`; float32 on a CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    on_gpu = device().type == "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, resolve_dtype(dtype)), use_safetensors=True, trust_remote_code=trust_remote_code,
        device_map=device() if on_gpu else None,  # straight onto the GPU, no full copy in CPU memory first
    )
    model.eval()
    return model, tokenizer


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The conversation in the tokenizer's chat template, ending with the assistant's cue.

    A tokenizer without a chat template (a base model) gets the Zephyr template, so base and chat
    models are prompted with the very same text."""
    template = tokenizer.chat_template or ZEPHYR_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """The token ids each backend is given. No special tokens are added: a template that wants a BOS
    writes it itself (Llama-2-chat, Mistral-Instruct), so it appears exactly once."""
    return [tokenizer(render_prompt(tokenizer, c), add_special_tokens=False)["input_ids"] for c in conversations]


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 64, seed: int = 0,
             sort_by_length: bool = True, progress: bool = True, desc: str = "generating") -> list[Completion]:
    """Answer each conversation (a message list ending with a user turn). Greedy if temperature is 0.

    Prompts are sorted by length before batching (less padding), and results returned in input order."""
    encoded = encode_prompts(tokenizer, conversations)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if sort_by_length else list(range(len(encoded)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    model_device = next(model.parameters()).device
    torch.manual_seed(seed)
    results: list[Completion | None] = [None] * len(encoded)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in bar(batches, desc=desc, progress=progress):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends at the same column
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention[row, width - len(encoded[i]) :] = 1
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        out = model.generate(
            input_ids=input_ids.to(model_device), attention_mask=attention.to(model_device), max_new_tokens=max_new_tokens,
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


def choose_backend(backend: str = "auto") -> str:
    """"vllm" or "transformers". "auto" takes vLLM when it is installed and a GPU is present."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "vllm" and not vllm_available():
        raise ValueError("generation_backend 'vllm' needs vllm and a GPU: pip install vllm, or set generation_backend: auto")
    if backend == "auto":
        return "vllm" if vllm_available() and torch.cuda.is_available() else "transformers"
    return backend


def generate_vllm(llm, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64, temperature: float = 0.0,
                  top_p: float = 1.0, seed: int = 0, progress: bool = True) -> list[Completion]:
    """The same as `generate`, with a vLLM engine (`llm`). The prompts go in as token ids from
    `encode_prompts`, so vLLM's tokenizer adds no second BOS and both backends see the same tokens."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    prompts = [{"prompt_token_ids": ids} for ids in encode_prompts(tokenizer, conversations)]
    outs = llm.generate(prompts, params, use_tqdm=enabled(progress))
    return [Completion(o.outputs[0].text.strip(), o.outputs[0].finish_reason == "stop", len(o.outputs[0].token_ids)) for o in outs]


def shutdown_vllm(llm) -> None:
    """Stop a vLLM engine and give its GPU memory back, so that another model can load."""
    if hasattr(llm, "shutdown"):  # newer vLLM
        llm.shutdown()
    elif getattr(llm.llm_engine, "engine_core", None) is not None:  # vLLM's V1 engine runs in its own process
        llm.llm_engine.engine_core.shutdown()
    from vllm.distributed import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()


class Sampler:
    """One model ready to answer conversations, with the backend chosen once (see `choose_backend`),
    in `dtype` on the GPU when there is one. `close()` (or leaving a `with` block) frees it."""

    def __init__(self, model_path: str, backend: str = "auto", batch_size: int = 64, dtype: str = "auto"):
        self.backend = choose_backend(backend)
        self.model_path, self.batch_size = model_path, batch_size
        self.model = self.llm = None
        if self.backend == "vllm":
            from transformers import AutoTokenizer
            from vllm import LLM

            self.tokenizer = AutoTokenizer.from_pretrained(model_path)  # the model's own chat template, as below
            self.llm = LLM(model=model_path, dtype=resolve_dtype(dtype))
        else:
            self.model, self.tokenizer = load_model(model_path, dtype)

    def __call__(self, conversations, max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0, progress=False,
                 desc="generating"):
        if self.llm is None and self.model is None:
            raise ValueError(f"the sampler of {self.model_path} is closed")
        if self.backend == "vllm":
            return generate_vllm(self.llm, self.tokenizer, conversations, max_new_tokens, temperature, top_p, seed, progress)
        return generate(self.model, self.tokenizer, conversations, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, batch_size=self.batch_size, seed=seed, progress=progress, desc=desc)

    def close(self) -> None:
        """Free the model: shut the vLLM engine down, or drop the transformers model, then release memory."""
        if self.llm is not None:
            shutdown_vllm(self.llm)
        self.model = self.llm = None
        release_memory()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
