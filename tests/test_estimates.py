"""The estimates of the page "Running the full recipe", against sums done by hand from the layer sizes."""

import pytest

from zephyr_utils.estimates import (ModelShape, decode_seconds, kv_bytes_per_token, lora_params, sampling_memory,
                                    train_flops, train_memory)

MISTRAL = ModelShape(params=7.24e9, layers=32, hidden=4096, mlp=14336, vocab=32000, kv_heads=8, head=128)


def test_lora_counts_inputs_and_outputs_of_the_seven_projections():
    h, kv, mlp = 4096, 8 * 128, 14336
    projections = [(h, h), (h, kv), (h, kv), (h, h), (h, mlp), (h, mlp), (mlp, h)]  # q k v o gate up down
    assert lora_params(MISTRAL, 16) == 16 * 32 * sum(i + o for i, o in projections)


def test_kv_cache_per_token():
    assert kv_bytes_per_token(MISTRAL) == 32 * 2 * 8 * 128 * 2  # layers x (key, value) x heads x size x 2 bytes


def test_training_memory_by_part():
    full = train_memory(MISTRAL, tokens=8192, dpo=True, shards=8)
    assert full["weights"] == 0 and full["reference"] == pytest.approx(7.24e9 * 2 / 8 / 1e9)
    assert full["trained state"] == pytest.approx(7.24e9 * 16 / 8 / 1e9)
    assert full["logits"] == pytest.approx(8192 * 32000 * 8 / 1e9)
    assert full["total"] == pytest.approx(sum(v for k, v in full.items() if k != "total"))
    qlora = train_memory(MISTRAL, tokens=8192, lora_r=16, load_in_4bit=True, dpo=True)
    lora = train_memory(MISTRAL, tokens=8192, lora_r=16, dpo=True)
    assert qlora["reference"] == 0 and qlora["weights"] < lora["weights"] / 3  # 4-bit weights, the head in 16 bits
    assert lora["trained state"] == pytest.approx(lora_params(MISTRAL, 16) * 16 / 1e9)


def test_sampling_takes_the_largest_weights_and_cache():
    small = ModelShape(params=0.5e9, layers=24, hidden=896, mlp=4864, vocab=151936, kv_heads=2, head=64)
    memory = sampling_memory([small, MISTRAL], batch=4, context=100)
    assert memory["weights"] == pytest.approx(7.24e9 * 2 / 1e9)
    assert memory["KV cache"] == pytest.approx(4 * 100 * kv_bytes_per_token(MISTRAL) / 1e9)


def test_flops_and_decoding_time():
    assert train_flops(MISTRAL, 1e6, dpo=True) == pytest.approx(8 * 7.24e9 * 1e6)
    # 33 prompts in batches of 32: two batches of 10 steps, each reading 14.48 GB at 1,000 GB/s plus 20 ms
    assert decode_seconds(MISTRAL, 33, 32, 10, 1000, 0.02) == pytest.approx(2 * 10 * (14.48 / 1000 + 0.02))
