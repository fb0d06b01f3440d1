"""`make bench`: how fast each stage runs at tiny scale on this machine, and why.

Writes bench/results/latest.json, latest.md and latest.png. Every ratio is computed from numbers
measured in this one run. Usage: python bench/run.py (or `make bench`); python bench/run.py --plot redraws
latest.png from latest.json without measuring anything.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def product_gflops(a: torch.Tensor, b: torch.Tensor, reps: int = 1) -> float:
    """GFLOP/s of `reps` products of the square matrices a @ b."""
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * a.shape[0] ** 3 * reps / (time.perf_counter() - start) / 1e9


def gemm_gflops(n: int = 2048, reps: int = 5, dtype=torch.float32, trials: int = 5) -> float:
    """Matmul throughput through torch with the thread count training uses (fp32 unless told): the
    median of `trials` timings, so that one burst of another tenant's load on a shared machine does
    not decide it."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return statistics.median(product_gflops(a, b, reps) for _ in range(trials))


def non_embedding_params(path: str) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_pipeline(work: Path) -> dict:
    """Wall seconds of each stage of the whole tiny recipe, the base model built from nothing."""
    from zephyr_utils.aif import run_aif
    from zephyr_utils.config import load_recipe
    from zephyr_utils.dpo import train_dpo
    from zephyr_utils.evaluation import run_eval
    from zephyr_utils.sft import train_sft
    from zephyr_utils.toy.base_model import build_tiny_base

    seconds = {}
    _, seconds["base"] = timed(build_tiny_base, force=True, progress=False)
    _, seconds["sft"] = timed(train_sft, load_recipe("sft", "tiny"))
    _, seconds["aif"] = timed(run_aif, load_recipe("aif", "tiny"), progress=False)
    _, seconds["dpo"] = timed(train_dpo, load_recipe("dpo", "tiny"))
    _, seconds["eval"] = timed(run_eval, load_recipe("eval", "tiny", models=["sft", "dpo"]))
    return {"seconds": seconds, "total_s": sum(seconds.values())}


RECIPE = "tiny recipe"
MALLOC_DEFAULTS = "glibc malloc defaults"  # the recipe with device.keep_freed_memory switched off
TRL_DEFAULTS = "TRL CPU defaults (bf16, activation checkpointing)"  # the recipe's slowdown is reported against it
OTHER_BASES = {  # the recipe on randomly initialised models of other shapes than the tiny base (recipes/tiny/base.yaml)
    "first base: hidden 128 x 4 layers": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                              num_attention_heads=4, num_key_value_heads=2),
    "previous base: MLP 768 wide": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2),
    "wider base: hidden 320 x 2 layers": dict(hidden_size=320, intermediate_size=960, num_hidden_layers=2,
                                              num_attention_heads=5, num_key_value_heads=5),
}
SFT_VARIANTS = {  # name: (recipe overrides, steps)
    RECIPE: ({}, 60),
    "random batches (no length grouping)": ({"train_sampling_strategy": "random"}, 60),
    MALLOC_DEFAULTS: ({}, 60),
    "AdamW not fused": ({"optim": "adamw_torch"}, 60),
    TRL_DEFAULTS: ({"bf16": True, "activation_checkpointing": True}, 10),
    "packing: wrapped": ({"packing": True, "packing_strategy": "wrapped"}, 40),
    "packing: bfd": ({"packing": True, "packing_strategy": "bfd"}, 20),
    "assistant-only loss off": ({"assistant_only_loss": False}, 60),
    "batch 32": ({"per_device_train_batch_size": 32}, 30),
    **{name: ({}, 60) for name in OTHER_BASES},
}
RECIPE_REPEATS = 3  # the tiny recipe is timed this many times, to show the spread on a shared machine
PROBE_EVERY = 5  # dSFT steps between two GEMM probes


def random_base(work: Path, name: str) -> str:
    """A randomly initialised model of a shape in OTHER_BASES (speed does not depend on weights)."""
    from transformers import AutoTokenizer

    from zephyr_utils.config import load_recipe
    from zephyr_utils.toy.base_model import build_tiny_base, make_model

    path = work / ("random-base-" + "-".join(map(str, OTHER_BASES[name].values())))
    if not path.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_base(progress=False))
        make_model(load_recipe("base", "tiny", **OTHER_BASES[name]), tokenizer).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def sft_variant(name: str, work: str) -> None:
    """Run in a child process (a fresh allocator per variant) and print one JSON line.

    Every PROBE_EVERY steps the run pauses for one 2048 x 2048 product: the machine's GEMM rate measured
    while it trains (another tenant's load changes it within seconds). Between two probes is a window of
    steps, timed end to end (data, forward, backward, optimizer, logging), its real tokens read from TRL's
    `num_tokens`. MFU = the model FLOPs of all windows / what GEMM could have done in them (each window's
    seconds x the mean of its two probes). The first steps, which allocate and warm caches, come before the
    first probe and are left out."""
    from transformers import TrainerCallback

    from zephyr_utils import models
    from zephyr_utils.config import load_recipe
    from zephyr_utils.sft import train_sft
    from zephyr_utils.toy import base_model
    from zephyr_utils.toy.base_model import build_tiny_base

    class GemmProbe(TrainerCallback):
        def __init__(self):
            self.a, self.b = torch.randn(2048, 2048), torch.randn(2048, 2048)
            self.window_ends, self.window_starts, self.gemm = [], [], []  # one of each per probe

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % PROBE_EVERY == 0:
                self.window_ends.append(time.perf_counter())
                self.gemm.append(product_gflops(self.a, self.b))
                self.window_starts.append(time.perf_counter())

    overrides, steps = SFT_VARIANTS[name]
    if name == MALLOC_DEFAULTS:
        models.keep_freed_memory = base_model.keep_freed_memory = lambda: False  # off where it is called
    base = random_base(Path(work).parent, name) if name in OTHER_BASES else str(build_tiny_base(progress=False))
    n = non_embedding_params(base)
    recipe = load_recipe("sft", "tiny", model_name_or_path=base, output_dir=work, max_steps=steps,
                         logging_steps=PROBE_EVERY, save_steps=10**6, eval_strategy="no", **overrides)
    probe = GemmProbe()
    history = json.loads((train_sft(recipe, callbacks=[probe]) / "log_history.json").read_text())
    num_tokens = [h["num_tokens"] for h in sorted(history, key=lambda h: h["step"]) if "num_tokens" in h]
    tokens = [b - a for a, b in zip(num_tokens, num_tokens[1:])]  # per window
    seconds = [end - start for start, end in zip(probe.window_starts, probe.window_ends[1:])]
    gemm = [(g0 + g1) / 2 for g0, g1 in zip(probe.gemm, probe.gemm[1:])]
    print(json.dumps({"steps": steps, "tokens_per_s": sum(tokens) / sum(seconds),
                      "step_s": sum(seconds) / (PROBE_EVERY * len(seconds)), "gemm_gflops": statistics.median(probe.gemm), "non_embedding_params": n,
                      "mfu": 6 * n * sum(tokens) / sum(s * g * 1e9 for s, g in zip(seconds, gemm))}))


def child(kind: str, name: str, work: Path) -> dict:
    """A variant run in its own process (its peak RSS and allocator state are its own); its JSON line."""
    done, seconds = timed(subprocess.run, [sys.executable, __file__, f"--{kind}-variant", name, str(work)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} variant {name!r} failed:\n{done.stderr[-3000:]}")
    print(f"{kind} variant {name!r}: {seconds:.0f} s", flush=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_sft(work: Path) -> dict:
    """Tokens/s and model-FLOPs utilisation (6 x non-embedding params x tokens/s / gemm) per variant;
    the tiny recipe is run RECIPE_REPEATS times and its median run is the one reported."""
    runs = {name: [child("sft", name, work / f"sft-{k}-{r}") for r in range(RECIPE_REPEATS if name == RECIPE else 1)]
            for k, name in enumerate(SFT_VARIANTS)}
    rows = {name: sorted(rs, key=lambda row: row["mfu"])[len(rs) // 2] for name, rs in runs.items()}
    default_row = rows[TRL_DEFAULTS]
    return {"variants": rows, "mfu": rows[RECIPE]["mfu"], "mfu_repeats": [row["mfu"] for row in runs[RECIPE]],
            "defaults_slowdown": rows[RECIPE]["tokens_per_s"] / default_row["tokens_per_s"]}


DPO_VARIANTS = {
    "explicit reference copy": {},
    "LoRA, adapter-disabled reference": {"use_peft": True, "lora_r": 16, "lora_alpha": 16},
    "precomputed reference log-probs": {"precompute_ref_log_probs": True},
}


def dpo_variant(name: str, work: str) -> None:
    """Run in a child process (so its peak RSS is its own) and print one JSON line."""
    from zephyr_utils.config import load_recipe
    from zephyr_utils.dpo import train_dpo

    steps = 20
    recipe = load_recipe("dpo", "tiny", output_dir=work, max_steps=steps, logging_steps=steps, save_steps=10**6,
                         **DPO_VARIANTS[name])
    history = json.loads((train_dpo(recipe) / "log_history.json").read_text())
    runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
    print(json.dumps({"step_s": runtime / steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_dpo(work: Path) -> dict:
    return {"variants": {name: child("dpo", name, work / f"dpo-{k}") for k, name in enumerate(DPO_VARIANTS)}}


def bench_generation() -> dict:
    """Completions/s for 128 prompts: one at a time, and batched with and without length sorting."""
    from zephyr_utils.generation import generate, load_model
    from zephyr_utils.runs import resolve
    from zephyr_utils.toy.world import ToyWorld

    model, tokenizer = load_model(resolve("sft", "tiny"))
    convs = [r["messages"] for r in ToyWorld().prompts("aif")[:128]]
    rows = {}
    for batch, sort in ((1, False), (8, False), (8, True), (32, False), (32, True), (64, False), (64, True)):
        _, seconds = timed(generate, model, tokenizer, convs, max_new_tokens=48, batch_size=batch, sort_by_length=sort,
                           progress=False)
        rows[f"batch {batch}" + (", length-sorted" if sort else "")] = {"completions_per_s": len(convs) / seconds}
    one = rows["batch 1"]["completions_per_s"]
    best = max(r["completions_per_s"] for r in rows.values())
    return {"variants": rows, "batched_speedup": best / one}


def machine() -> dict:
    from zephyr_utils.runs import library_versions

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "versions": library_versions()}


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Benchmarks ({results['date']})", "", f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
             f"torch {results['machine']['versions']['torch']}, {results['machine']['torch_threads']} threads.", "",
             f"fp32 GEMM 2048x2048: **{results['gemm_gflops']:.0f} GFLOP/s**; 512x512: fp32 "
             f"{results['gemm_fp32_gflops_512']:.0f}, bf16 {results['gemm_bf16_gflops_512']:.1f} GFLOP/s", "", "## dSFT", "",
             "MFU = 6 x non-embedding params x tokens/s / the fp32 GEMM rate measured during the same run "
             f"(one 2048x2048 product every {PROBE_EVERY} steps; GEMM column: their median).", "",
             "| variant | tokens/s | step (s) | GEMM (GFLOP/s) | MFU |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['tokens_per_s']:.0f} | {v['step_s']:.3f} | {v['gemm_gflops']:.0f} | {v['mfu']:.0%} |"
              for k, v in results["sft"]["variants"].items()]
    lines += ["", f"Tiny recipe MFU over {len(results['sft']['mfu_repeats'])} runs: "
              + ", ".join(f"{m:.0%}" for m in results["sft"]["mfu_repeats"]) + f" (median **{results['sft']['mfu']:.0%}**)"]
    lines += ["", "## dDPO", "", "| variant | step (s) | peak RSS (MB) |", "|---|---|---|"]
    lines += [f"| {k} | {v['step_s']:.3f} | {v['peak_rss_mb']:.0f} |" for k, v in results["dpo"]["variants"].items()]
    lines += ["", "## Generation (128 prompts, 48 new tokens)", "", "| variant | completions/s |", "|---|---|"]
    lines += [f"| {k} | {v['completions_per_s']:.1f} |" for k, v in results["generation"]["variants"].items()]
    lines += ["", f"Best batched / one at a time: **{results['generation']['batched_speedup']:.1f}x**", "",
              "## The whole tiny recipe", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["pipeline"]["seconds"].items()]
    lines += [f"| **total** | **{results['pipeline']['total_s']:.0f}** |", ""]
    (RESULTS / "latest.md").write_text("\n".join(lines))
    plot_results(results)


def plot_results(results: dict) -> None:
    """latest.png: the three panels stacked, the book's figure width (zephyr_utils.plotting.WIDTH), so the
    performance page shows them at about their own size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zephyr_utils.plotting import WIDTH

    sft, gen, stages = results["sft"]["variants"], results["generation"]["variants"], results["pipeline"]["seconds"]
    rows = [0.3 * len(sft) + 0.9, 0.3 * len(gen) + 0.9, 2.6]  # inches per panel: bars of about the same thickness
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH, sum(rows)), height_ratios=rows, layout="constrained")
    axes[0].barh(list(sft), [100 * v["mfu"] for v in sft.values()], color="#3b7dd8")
    axes[0].axvline(50, color="grey", linestyle="--", linewidth=1)
    axes[0].set_xlabel("dSFT model-FLOPs utilisation (%)")
    axes[1].barh(list(gen), [v["completions_per_s"] for v in gen.values()], color="#e07b39")
    axes[1].set_xlabel("completions/s")
    axes[2].bar(list(stages), list(stages.values()), color="#4caf50")
    for ax in axes[:2]:
        ax.invert_yaxis()  # read top-down, in the order of the tables
    axes[2].set_ylabel("seconds")
    axes[2].set_title(f"tiny recipe: {results['pipeline']['total_s']:.0f} s in all")
    fig.savefig(RESULTS / "latest.png", dpi=100)
    plt.close(fig)


def main() -> None:
    if sys.argv[1:] == ["--plot"]:
        plot_results(json.loads((RESULTS / "latest.json").read_text()))
        return
    if len(sys.argv) == 4 and sys.argv[1] in ("--sft-variant", "--dpo-variant"):
        (sft_variant if sys.argv[1] == "--sft-variant" else dpo_variant)(sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["ZEPHYR_RUNS"] = str(work / "runs")  # a clean pipeline, not the book's runs
        os.environ["ZEPHYR_CACHE"] = str(work / "cache")  # the base model is built from nothing
        results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "gemm_gflops": gemm_gflops(),
                   "gemm_bf16_gflops_512": gemm_gflops(512, 3, torch.bfloat16, 3), "gemm_fp32_gflops_512": gemm_gflops(512, 3)}
        print(f"gemm {results['gemm_gflops']:.0f} GFLOP/s", flush=True)
        results["pipeline"] = bench_pipeline(work)
        print("pipeline", results["pipeline"], flush=True)
        results["sft"] = bench_sft(work)
        print("sft mfu", results["sft"]["mfu"], flush=True)
        results["dpo"] = bench_dpo(work)
        results["generation"] = bench_generation()
        write_report(results)
    print((RESULTS / "latest.md").read_text())


if __name__ == "__main__":
    main()
