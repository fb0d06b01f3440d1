"""Where a model runs and in which precision: one policy for generation, judges, evaluation and training.

    device()                 # cuda when a GPU is present, else cpu
    resolve_dtype("auto")    # float32 on a CPU; on a GPU bfloat16 where it is supported, float16 on a T4
    resolve_dtype("float16") # a recipe's explicit choice wins (checked against the GPU)

On a CPU the answer is always float32 on the CPU: bf16 matmuls are ~100x slower than fp32 on CPUs
without bf16 instructions, and the tiny scale's numbers are fp32 numbers.
"""

from __future__ import annotations

import ctypes
import gc
import sys

import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")  # weights' dtypes a recipe may name; "auto": see resolve_dtype


def device() -> torch.device:
    """The device models run on: the (current) GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_supports_bf16() -> bool:
    """bf16 needs compute capability 8.0 or newer (A100, A10, L4, RTX 30xx/40xx, H100); a T4 is 7.5."""
    major, _ = torch.cuda.get_device_capability()
    return major >= 8


def resolve_dtype(dtype: str = "auto") -> str:
    """The dtype to hold a model's weights in: "auto" gives float32 on a CPU, bfloat16 on a GPU that
    supports it and float16 on an older GPU (T4, V100). Any other value is a recipe's explicit choice;
    bfloat16 on a GPU without it is an error (it would be emulated, or fail inside a kernel)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if not torch.cuda.is_available():
        return "float32" if dtype == "auto" else dtype
    if dtype == "auto":
        return "bfloat16" if gpu_supports_bf16() else "float16"
    if dtype == "bfloat16" and not gpu_supports_bf16():
        name = torch.cuda.get_device_name()
        raise ValueError(f"dtype bfloat16 needs a GPU of compute capability 8.0 or newer; {name} is "
                         f"{'.'.join(map(str, torch.cuda.get_device_capability()))}: use dtype 'auto' or 'float16'")
    return dtype


def release_memory() -> None:
    """Hand memory of deleted models back: collect garbage, then empty PyTorch's CUDA cache so the next
    model (or a vLLM engine, which sizes itself from the free memory) can have it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def keep_freed_memory() -> bool:
    """On Linux CPUs: stop glibc's malloc from handing freed activation buffers back to the OS.

    A training step frees and re-allocates the same large buffers every step. By default glibc serves
    each one with fresh mmap pages and trims the heap after frees, so every step pays the page faults
    (and the kernel's zeroing of the pages) again. Raising the mmap and trim thresholds keeps the memory
    in the process instead (bench/ compares it with glibc's defaults: a few percent at most). Returns
    whether the setting was applied (not on macOS/Windows/musl, where this does nothing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all([mallopt(m_mmap_threshold, 1 << 30), mallopt(m_trim_threshold, 1 << 30), mallopt(m_top_pad, 64 << 20)])
