"""The tiny base model: a byte-level BPE tokenizer and a few-million-parameter Mistral-architecture
model, pretrained on the toy world's plain text and saved with `save_pretrained`, so every later
stage loads it with `AutoModelForCausalLM.from_pretrained(path)` exactly like a Hub model.

    path = build_tiny_base()          # reused from the cache when already built

Registered as the base model "tiny" (`model_name_or_path: tiny` in the tiny recipes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..chat import ROLE_MARKERS
from ..config import TinyBaseRecipe, cache_dir, load_recipe, recipe_to_dict
from ..device import keep_freed_memory
from ..progress import bar as progress_bar
from ..runs import write_manifest
from .world import ToyWorld

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def tiny_base_path(recipe: TinyBaseRecipe | None = None, root: str | os.PathLike | None = None) -> Path:
    """The cache directory of the base model a recipe builds (one directory per recipe and world)."""
    recipe = recipe or load_recipe("base", "tiny")
    key = {k: v for k, v in recipe_to_dict(recipe).items() if k not in ("output_dir", "scale")}
    # what the model is built from is part of the key (the texts, and this module's code): change the
    # world's text or the builder and it is rebuilt; change only the toy judge and it is reused
    corpus, tokenizer_text = base_texts(recipe)
    texts = hashlib.sha256("\n".join(corpus + ["<tokenizer>"] + tokenizer_text).encode()).hexdigest()
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps([key, texts, code], sort_keys=True).encode()).hexdigest()[:12]
    return Path(root or cache_dir()) / f"tiny-base-{digest}"


def base_texts(recipe: TinyBaseRecipe) -> tuple[list[str], list[str]]:
    """(pretraining corpus, tokenizer training text) of the recipe's toy world.

    The tokenizer also sees the chat markers and dialogues as text (a real tokenizer has seen all kinds
    of text); the *model* never does: it is pretrained on the plain corpus only. The names in that text
    (the world's creatures and the made-up ones of the dSFT chats) become single tokens, as common words
    do in a real tokenizer: a name split into letters is more than a two-layer model can reliably
    repeat. The made-up names of the AIF and eval prompts are not in it: they stay split into pieces."""
    corpus, tokenizer_text = _world_texts(recipe.world_seed, recipe.docs_per_creature)
    return list(corpus), list(tokenizer_text)


@functools.lru_cache(maxsize=4)
def _world_texts(world_seed: int, docs_per_creature: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    world = ToyWorld(seed=world_seed)
    corpus = world.pretraining_corpus(docs_per_creature)
    dialogue_text = [m["content"] for r in world.sft_dialogues() for m in r["messages"]]
    return tuple(corpus), tuple(corpus + dialogue_text + list(ROLE_MARKERS) * 50)


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (no chat template: base models have none)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_max_length=2048, clean_up_tokenization_spaces=False,
    )


def make_model(recipe: TinyBaseRecipe, tokenizer):
    """A randomly initialised Mistral-architecture causal LM of a few million parameters."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads,
        head_dim=recipe.hidden_size // recipe.num_attention_heads,
        max_position_embeddings=1024,
        sliding_window=None,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    return MistralForCausalLM(config)


def pretrain(model, blocks: torch.Tensor, recipe: TinyBaseRecipe, progress: bool = True) -> list[float]:
    """Causal-LM pretraining on packed blocks with AdamW and a warmup-cosine schedule; fp32, CPU."""
    keep_freed_memory()
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        t = (step - recipe.warmup_steps) / max(1, recipe.max_steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(blocks), generator=gen)
    pos = 0
    bar = progress_bar(range(recipe.max_steps), desc="pretraining tiny base", progress=progress)
    for _ in bar:
        if pos + recipe.batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=gen), 0
        batch = blocks[order[pos : pos + recipe.batch_size]]
        pos += recipe.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    model.eval()
    return losses


def pack(texts: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Concatenate documents separated by EOS and cut them into blocks of `block_size` tokens."""
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def build_tiny_base(recipe: TinyBaseRecipe | None = None, root: str | os.PathLike | None = None,
                    force: bool = False, progress: bool = True, world_seed: int = 0) -> Path:
    """Build (or reuse) the tiny base model of `recipe` (default: the shipped one, of toy world
    `world_seed`); returns the directory to `from_pretrained`."""
    recipe = recipe or load_recipe("base", "tiny", world_seed=world_seed)
    path = tiny_base_path(recipe, root)
    if path.is_dir() and (path / "model.safetensors").is_file() and not force:
        return path
    start = time.perf_counter()
    corpus, tokenizer_text = base_texts(recipe)
    tokenizer = train_tokenizer(tokenizer_text, recipe.vocab_size)
    blocks = pack(corpus, tokenizer, recipe.block_size)
    torch.manual_seed(recipe.seed)
    model = make_model(recipe, tokenizer)
    losses = pretrain(model, blocks, recipe, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {
        "recipe": recipe_to_dict(recipe),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_corpus_tokens": int(blocks.numel()),
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "losses": losses,
        "build_seconds": time.perf_counter() - start,
    }
    (tmp / "zephyr_base.json").write_text(json.dumps(info))
    write_manifest(tmp, "base", recipe, {}, {"model": ".", "build": "zephyr_base.json"})  # a finished build
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


@torch.no_grad()
def fact_accuracy(model, tokenizer, probes: list[tuple[str, str, list[str]]]) -> float:
    """Share of (prefix, answer, candidates) probes where the model gives the answer the highest
    log-likelihood among the candidates (chance is 1 / len(candidates))."""
    hits = 0
    for prefix, answer, candidates in probes:
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        scores = []
        for cand in candidates:
            cand_ids = tokenizer(" " + cand, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prefix_ids + cand_ids])
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, 1:]
            scores.append(logp[torch.arange(len(targets)), targets][-len(cand_ids):].sum().item())
        hits += int(candidates[max(range(len(scores)), key=scores.__getitem__)] == answer)
    return hits / len(probes)
