"""`zephyr sft` beside TRL's own `trl sft` command: the same tiny model, data and recipe, timed in one run.

    python bench/trl_cli.py [steps] [repeats]     # default 45 steps, 3 repeats each, alternating

The tiny dSFT recipe is TRL's configuration, so TRL's command runs it as it is: its SFTConfig and ModelConfig
fields are written to a config file for `trl sft --config`, with a copy of the tiny base whose tokenizer has the
Zephyr chat template and the toy dialogues' `messages` column as local paths (what `zephyr sft` sets and selects). Both commands train `steps` steps; each run's wall time (process start to
exit, imports included) and the trainer's own `train_runtime` are written to bench/results/trl_cli.json.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"


def commands(work: Path, steps: int) -> dict[str, list[str]]:
    """The two commands, for one output directory each under `work`."""
    from zephyr_utils import registry
    from zephyr_utils.config import load_recipe
    from zephyr_utils.data import load_sft_data
    from zephyr_utils.models import load_tokenizer

    recipe = load_recipe("sft", "tiny", max_steps=steps)
    base = Path(registry.lookup("base_model", "tiny")(world_seed=recipe.world_seed))
    model_dir, data_dir = work / "base", work / "data"
    if not model_dir.is_dir():  # the base model with the Zephyr template on its tokenizer, as `zephyr sft` sets it
        shutil.copytree(base, model_dir)
        load_tokenizer(str(base)).save_pretrained(model_dir)
        data_dir.mkdir()
        for split in (recipe.train_split, recipe.eval_split):  # the `messages` column, as `zephyr sft` selects it
            rows = load_sft_data(recipe.dataset, split, recipe.world_seed).select_columns(["messages"])
            rows.to_json(data_dir / f"{split}.jsonl")  # JSON lines
    config = {**recipe.given, "model_name_or_path": str(model_dir), "dtype": recipe.dtype,
              "attn_implementation": recipe.attn_implementation, "use_cpu": True, "dataset_name": str(data_dir),
              "dataset_train_split": recipe.train_split, "dataset_test_split": recipe.eval_split, "report_to": "none"}
    (work / "trl.yaml").write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent
    return {"zephyr sft": [str(bin_dir / "zephyr"), "sft", "--scale", "tiny", "--set", f"max_steps={steps}",
                           "--set", f"output_dir={work / 'zephyr'}"],
            "trl sft": [str(bin_dir / "trl"), "sft", "--config", str(work / "trl.yaml"), "--output_dir", str(work / "trl")]}


def timed(command: list[str], output_dir: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ZEPHYR_PROGRESS": "0"})
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    runtime = re.findall(r"""['"]?train_runtime['"]?: '?([0-9.]+)""", done.stdout + done.stderr)
    if (output_dir / "log_history.json").is_file():  # zephyr sft's
        runtime = [h["train_runtime"] for h in json.loads((output_dir / "log_history.json").read_text()) if "train_runtime" in h]
    return {"wall_s": wall, "train_runtime_s": float(runtime[-1])}


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 45
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    runs = {"zephyr sft": [], "trl sft": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for k in range(repeats):
            for name, command in commands(work, steps).items():
                out = work / ("zephyr" if name == "zephyr sft" else "trl")
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(timed(command, out))
                print(name, k, json.dumps(runs[name][-1]), flush=True)
    median = {name: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "train_runtime_s")} for name, rs in runs.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "steps": steps, "runs": runs, "median": median,
              "train_runtime_ratio_zephyr_over_trl": median["zephyr sft"]["train_runtime_s"] / median["trl sft"]["train_runtime_s"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "trl_cli.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(median), f"ratio {result['train_runtime_ratio_zephyr_over_trl']:.2f}")


if __name__ == "__main__":
    main()
