"""The paper's Table 2: the Open LLM Leaderboard (v1) tasks, run with EleutherAI's lm-evaluation-harness.

    for task in TASKS:
        subprocess.run(lm_eval_command(model_path, task, out / task.task))   # one lm-eval run per task
    scores = read_scores(out)                                                  # {"ARC": 62.0, ...} in percent

The leaderboard (v1, the one the paper quotes) ran lm-eval with these shots and metrics: ARC-Challenge
25-shot acc_norm, HellaSwag 10-shot acc_norm, MMLU 5-shot acc (the plain mean over its 57 subjects),
TruthfulQA 0-shot mc2 (which lm-eval's `truthfulqa_mc2` task reports as `acc`). Prompts are the raw
few-shot prompts, without a chat template. Each task is its own lm-eval process, so its GPU memory is
freed when it ends.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LeaderboardTask:
    column: str  # Table 2's column
    task: str  # lm-eval's task (or group) name
    num_fewshot: int
    metric: str  # lm-eval's metric name


TASKS = (
    LeaderboardTask("ARC", "arc_challenge", 25, "acc_norm"),
    LeaderboardTask("HellaSwag", "hellaswag", 10, "acc_norm"),
    LeaderboardTask("MMLU", "mmlu", 5, "acc"),
    LeaderboardTask("TruthfulQA", "truthfulqa_mc2", 0, "acc"),
)


def lm_eval_executable() -> str:
    beside = Path(sys.executable).parent / "lm-eval"
    return str(beside) if beside.exists() else (shutil.which("lm-eval") or "lm-eval")


def lm_eval_command(model_path: str, task: LeaderboardTask, output_dir: str | Path, backend: str = "hf",
                    batch_size: str = "auto", dtype: str = "bfloat16") -> list[str]:
    """The `lm-eval run` command for one task of Table 2 (backend "hf" or "vllm")."""
    if backend not in ("hf", "vllm"):
        raise ValueError(f"unknown lm-eval backend {backend!r}; use hf or vllm")
    return [lm_eval_executable(), "run", "--model", backend, "--model_args", f"pretrained={model_path},dtype={dtype}",
            "--tasks", task.task, "--num_fewshot", str(task.num_fewshot), "--batch_size", str(batch_size),
            "--output_path", str(output_dir)]


def latest_results(output_dir: str | Path) -> dict:
    """The newest results_*.json lm-eval wrote under `output_dir`."""
    files = sorted(Path(output_dir).rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"{output_dir}: no lm-eval results_*.json; did the lm-eval run fail?")
    return json.loads(files[-1].read_text())


def leaves(group: str, group_subtasks: dict) -> list[str]:
    """The tasks under a group, through its subgroups (MMLU: 4 categories, 57 subjects)."""
    out = []
    for name in group_subtasks.get(group, []):
        out += leaves(name, group_subtasks) if name in group_subtasks else [name]
    return out


def score(results: dict, task: LeaderboardTask) -> float:
    """A task's Table 2 number in percent from lm-eval's results. For a group (MMLU) it is the unweighted
    mean over its subjects, as the leaderboard averaged them (lm-eval's own group number weights them by
    size)."""
    key = f"{task.metric},none"
    per_task = results.get("results", {})
    names = leaves(task.task, results.get("group_subtasks", {})) or [task.task]
    try:
        values = [per_task[name][key] for name in names]
    except KeyError as err:
        raise ValueError(f"lm-eval results lack {key!r} for {err} (task {task.task}); was it run with lm-eval's {task.task}?") from None
    return 100 * sum(values) / len(values)


def read_scores(output_dir: str | Path) -> dict[str, float]:
    """{Table 2 column: score in percent} from the per-task directories `run` writes."""
    return {t.column: score(latest_results(Path(output_dir) / t.task), t) for t in TASKS}


def run(model_path: str, output_dir: str | Path, backend: str = "hf", batch_size: str = "auto") -> dict[str, float]:
    """Run the four tasks with lm-eval, one process each, and read their scores."""
    import subprocess

    for task in TASKS:
        command = lm_eval_command(model_path, task, Path(output_dir) / task.task, backend, batch_size)
        if subprocess.call(command):
            raise RuntimeError(f"lm-eval failed on {task.task}: {' '.join(command)}")
    return read_scores(output_dir)
