"""Back-of-the-envelope memory and time of training and sampling, from a model's published shape (the
page "Running the full recipe" uses them for the demo and full scales). Estimates, not measurements.

    m = ModelShape(params=7.24e9, layers=32, hidden=4096, mlp=14336, vocab=32000, kv_heads=8, head=128)
    train_memory(m, tokens=8192, lora_r=16, load_in_4bit=True)["total"]   # GB on one GPU
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BYTES_16BIT = 2      # a bf16 or fp16 weight
BYTES_NF4 = 0.52     # an NF4 4-bit weight with its block scales; embeddings and head stay in 16 bits
BYTES_TRAINED = 16   # per trained parameter in mixed precision: fp32 weight, gradient, two Adam moments
BYTES_LOGIT = 8      # fp16 logits, their gradient and an fp32 working copy
MLP_RECOMPUTED = 4   # activations of the one MLP recomputed under gradient checkpointing, in MLP-size tensors
FLOPS_TRAIN = 6      # per parameter and token, forward and backward of the trained model (also about right for
                     # LoRA: the backward through the frozen weights and the recomputation cost as much)
FLOPS_FORWARD = 2    # per parameter and token of a frozen reference's forward pass (DPO)


@dataclass(frozen=True)
class ModelShape:
    """A decoder's parameters, layers, hidden size, MLP size, vocabulary, KV heads and head size."""
    params: float
    layers: int
    hidden: int
    mlp: int
    vocab: int
    kv_heads: int
    head: int


def lora_params(m: ModelShape, r: int) -> int:
    """LoRA on all seven projections: r x (inputs + outputs) per projection, for q, k, v, o, gate, up, down."""
    kv = m.kv_heads * m.head
    return r * m.layers * (2 * m.hidden + 2 * (m.hidden + kv) + 2 * m.hidden + 3 * (m.hidden + m.mlp))


def kv_bytes_per_token(m: ModelShape) -> int:
    """The KV cache of one token: a key and a value per KV head, per layer, in 16 bits."""
    return m.layers * 2 * m.kv_heads * m.head * BYTES_16BIT


def train_memory(m: ModelShape, tokens: int, lora_r: int | None = None, load_in_4bit: bool = False,
                 dpo: bool = False, shards: int = 1) -> dict[str, float]:
    """GB per GPU of one training step of `tokens` tokens at full length, by part. With `lora_r` only the
    adapter is trained and a DPO reference is the same weights with the adapter off; without it, the model
    state and a DPO reference are split over `shards` GPUs (ZeRO-3)."""
    embeddings = 2 * m.vocab * m.hidden  # input embeddings and output head (untied)
    if lora_r:
        weights = (m.params - embeddings) * BYTES_NF4 + embeddings * BYTES_16BIT if load_in_4bit else m.params * BYTES_16BIT
        trained, reference = lora_params(m, lora_r) * BYTES_TRAINED, 0
    else:
        weights, trained = 0, m.params * BYTES_TRAINED / shards
        reference = m.params * BYTES_16BIT / shards if dpo else 0
    parts = {"weights": weights, "trained state": trained, "reference": reference,
             "hidden states": tokens * m.hidden * BYTES_16BIT * m.layers,
             "recomputed MLP": tokens * m.mlp * BYTES_16BIT * MLP_RECOMPUTED,
             "logits": tokens * m.vocab * BYTES_LOGIT}
    return {**{k: v / 1e9 for k, v in parts.items()}, "total": sum(parts.values()) / 1e9}


def sampling_memory(models: list[ModelShape], batch: int, context: int) -> dict[str, float]:
    """GB of the largest model's 16-bit weights and the KV cache of `batch` sequences of `context` tokens."""
    weights = max(m.params for m in models) * BYTES_16BIT
    cache = batch * context * max(map(kv_bytes_per_token, models))
    return {"weights": weights / 1e9, "KV cache": cache / 1e9, "total": (weights + cache) / 1e9}


def train_flops(m: ModelShape, tokens: float, dpo: bool = False) -> float:
    """FLOPs of training on `tokens` tokens (a DPO reference adds one forward pass)."""
    return (FLOPS_TRAIN + (FLOPS_FORWARD if dpo else 0)) * m.params * tokens


def decode_seconds(m: ModelShape, prompts: int, batch: int, steps: int, bandwidth_gb_s: float, overhead_s: float) -> float:
    """Sampling `steps` new tokens for `prompts` prompts in batches: memory-bound, each step of a batch reads
    all the 16-bit weights once, plus `overhead_s` of Python per step."""
    return math.ceil(prompts / batch) * steps * (m.params * BYTES_16BIT / (bandwidth_gb_s * 1e9) + overhead_s)
