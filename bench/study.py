"""`make study`: the seed study. Does the tiny recipe's result hold on every seed, or was one run lucky?

For each world seed (a different generated world: data, teacher, judge and base model) and each
training seed, it runs the whole tiny pipeline after the base model (dSFT, AIF, dDPO, evaluation) and
the paper's ablations (Table 3: dDPO without dSFT, dSFT-2; section 5: dDPO per epoch), and grades
every model, plus a constant "I don't know." baseline, on the world's held-out prompts.

Writes bench/results/study.json (one record per run) and study.png. Usage:
    python bench/study.py                          # 2 worlds x 5 seeds (make study)
    python bench/study.py --worlds 0 --seeds 1     # one run, e.g. to try a recipe change
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results"


def one_run(world_seed: int, seed: int, root: Path, sets: dict | None = None, progress: bool = False) -> dict:
    """Every stage and ablation for one (world seed, training seed), in `root`; returns the record.
    `sets` = {stage: {field: value}} overrides recipe fields, as `zephyr <stage> --set` does."""
    from zephyr_utils.ablations import run_table3
    from zephyr_utils.aif import run_aif
    from zephyr_utils.config import load_recipe
    from zephyr_utils.dpo import train_dpo
    from zephyr_utils.evaluation import evaluate
    from zephyr_utils.sft import train_sft

    os.environ["ZEPHYR_RUNS"] = str(root)  # every stage of this run finds the others under root/tiny/
    sets = sets or {}
    seeds = {"seed": seed, "world_seed": world_seed}
    seconds, start = {}, time.perf_counter()

    def recipe(stage):
        return load_recipe(stage, "tiny", **seeds, **sets.get(stage, {}))

    def lap(name):
        nonlocal start
        seconds[name] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()

    sft = train_sft(recipe("sft"))
    lap("dsft")
    aif = run_aif(recipe("aif"), progress=progress)
    lap("aif")
    dpo = train_dpo(recipe("dpo"))
    lap("ddpo")
    evaluate(recipe("eval"), {"sft": str(sft), "dpo": str(dpo)}, compare=("dpo", "sft"), progress=progress)
    lap("eval")  # what `zephyr eval` costs; Table 3 below grades these two models again beside the others
    table3 = run_table3("tiny", progress=progress, sets=sets, **seeds)
    lap("ablations")
    return {"world_seed": world_seed, "seed": seed, "models": table3["models"], "dpo_vs_sft": table3["dpo_vs_sft"],
            "epochs": table3["epochs"], "aif": json.loads((aif / "summary.json").read_text()), "seconds": seconds}


def summarize(runs: list[dict]) -> dict:
    """The study's distribution: per model the median score, and how often each claim held."""
    from zephyr_utils.ablations import table3_order_holds

    def share(flags):
        return f"{sum(flags)}/{len(flags)}"

    d = [r["dpo_vs_sft"] for r in runs]
    s = {name: [r["models"][name]["score"] for r in runs] for name in runs[0]["models"]}
    order = [table3_order_holds(r["models"]) for r in runs]
    return {
        "runs": len(runs),
        "median_score": {name: statistics.median(v) for name, v in s.items()},
        "median_difference": statistics.median(x["difference"] for x in d),
        "difference_range": [min(x["difference"] for x in d), max(x["difference"] for x in d)],
        "ci_above_zero": share([x["ci95"][0] > 0 for x in d]),
        "more_wins_than_losses": share([x["wins"] > x["losses"] for x in d]),
        "median_win_rate": statistics.median(x["win_rate"] for x in d),
        "table3_order": share(order),
        "sft_minus_idk_min": min(r["models"]["sft"]["score"] - r["models"]["idk"]["score"] for r in runs),
        "min_adherence_sft": min(r["models"]["sft"]["adherence"] for r in runs),
        "max_adherence_base_or_dpo_only": max(max(r["models"]["base"]["adherence"], r["models"]["dpo_only"]["adherence"]) for r in runs),
        "max_pipeline_seconds": max(sum(r["seconds"][k] for k in ("dsft", "aif", "ddpo", "eval")) for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=RESULTS / "study.json")
    parser.add_argument("--keep", type=Path, help="keep every run's outputs here (default: a temporary directory)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                        help="override a recipe field of one stage in every run, e.g. --set dpo.beta=0.5")
    args = parser.parse_args()
    sets: dict[str, dict] = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        stage, _, name = key.partition(".")
        sets.setdefault(stage, {})[name] = yaml.safe_load(value)

    from tqdm.auto import tqdm

    from zephyr_utils.config import load_recipe
    from zephyr_utils.toy.base_model import build_tiny_base

    os.environ.setdefault("TQDM_DISABLE", "1")  # the stages' own bars; the study's bar below is forced on
    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="zephyr-study-"))
    runs, base_seconds = [], {}
    bar = tqdm(total=len(args.worlds) * len(args.seeds), desc="seed study", disable=False)
    for world_seed in args.worlds:
        t = time.perf_counter()
        build_tiny_base(load_recipe("base", "tiny", world_seed=world_seed), progress=False)
        base_seconds[world_seed] = round(time.perf_counter() - t, 1)
        for seed in args.seeds:
            root = work / f"world{world_seed}-seed{seed}"
            runs.append(one_run(world_seed, seed, root, sets))
            r = runs[-1]["dpo_vs_sft"]
            bar.set_postfix_str(f"w{world_seed} s{seed}: dDPO-dSFT {r['difference']:+.2f} [{r['ci95'][0]:+.2f}, "
                                f"{r['ci95'][1]:+.2f}] W/L {r['wins']}/{r['losses']}")
            bar.update()
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            write(args.out, runs, sets, base_seconds, started)
    bar.close()
    print(json.dumps(summarize(runs), indent=1))


def write(path: Path, runs: list[dict], sets: dict, base_seconds: dict, started: float) -> None:
    """study.json (rewritten after every run, so an interrupted study keeps what it measured) and its plot."""
    from zephyr_utils.runs import library_versions
    from zephyr_utils.plotting import plot_study

    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"summary": summarize(runs), "overrides": sets, "runs": runs, "base_build_seconds": base_seconds,
              "total_seconds": round(time.perf_counter() - started, 1), "versions": library_versions()}
    path.write_text(json.dumps(record, indent=1))
    plot_study(runs).savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
