"""The `zephyr` command.

    zephyr tiny-base                                   # build (or reuse) the tiny base model
    zephyr sft --scale tiny --set learning_rate=1e-4   # run a stage in this process
    zephyr dpo --scale full                            # full scale: under `accelerate launch`, DeepSpeed ZeRO-3
    zephyr dpo --scale full --dry-run                  # print that launch command, run nothing
    zephyr sft --scale demo --preset 24gb              # one GPU of 24 GB+: Mistral-7B with QLoRA
    zephyr sft --set output_dir=/data/sft              # the next stages find it there (runs/<scale>/latest.json)

A recipe whose `launcher` is an accelerate config name (deepspeed_zero3, fsdp, multi_gpu) runs under
`accelerate launch --config_file <shipped config> --num_processes N`, which starts N copies of this
command with `--in-process`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from . import registry
from .aif import run_aif
from .benchmarks import describe_plan
from .config import LAUNCHERS, TrainRecipe, describe_batch, load_recipe
from .dpo import train_dpo
from .evaluation import run_eval
from .sft import train_sft

STAGES = ("sft", "aif", "dpo", "eval")
logger = logging.getLogger("zephyr_utils.cli")  # not __name__, which is "__main__" under `python -m`


class StdoutHandler(logging.StreamHandler):
    """Writes each record's message, alone, to `sys.stdout` as it is when the record comes (a notebook's or a
    test's captured stdout included), not as it was when the handler was made."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


def log_to_stdout() -> None:
    """Show this package's log records of level INFO and up (e.g. "resuming from runs/tiny/sft/checkpoint-100")
    on stdout, as the command's own output (`main` calls it; calling it again adds nothing)."""
    package = logging.getLogger("zephyr_utils")
    if not any(isinstance(h, StdoutHandler) for h in package.handlers):
        package.addHandler(StdoutHandler())
    package.setLevel(logging.INFO)


def parse_sets(pairs: list[str]) -> dict:
    """`["lr=1e-4", "use_peft=true"]` -> {"lr": 1e-4, "use_peft": True} (values parsed as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def accelerate_config(name: str) -> Path:
    """The shipped accelerate config file for a launcher name."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; expected in-process or one of {', '.join(LAUNCHERS)}")
    return Path(str(resources.files("zephyr_utils") / "accelerate" / f"{name}.yaml"))


def launch_command(stage: str, scale: str, launcher: str | None, num_processes: int, recipe_file: str | None = None,
                   sets: list[str] = (), cpu: bool = False, run_name: str | None = None) -> list[str]:
    """`accelerate launch ... -m zephyr_utils.cli <stage> --in-process ...` as an argument list.
    `launcher=None` uses accelerate's defaults; `cpu=True` gives DDP over gloo on the CPU."""
    command = ["accelerate", "launch"]
    if launcher is not None:
        command += ["--config_file", str(accelerate_config(launcher))]
    if cpu:
        # accelerate's `--cpu` starts a single process; its torchrun launcher starts N, and the trainer's
        # use_cpu=True (set when there is no GPU) joins them in a gloo process group: DDP on the CPU.
        command += ["--multi_gpu"]
    command += ["--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no" if cpu else "bf16",
                "--dynamo_backend", "no", "-m", "zephyr_utils.cli", stage, "--scale", scale, "--in-process"]
    if recipe_file:
        command += ["--recipe", str(recipe_file)]
    for pair in sets:
        command += ["--set", pair]
    if run_name:
        command += ["--run-name", run_name]
    return command


def run_in_process(stage: str, recipe, run_name: str | None = None) -> Path:
    """Run one stage of the recipe in this process; returns its output directory. `run_name` (default: the
    stage) is the name later stages find the run by (`runs.find`)."""
    run = {"sft": train_sft, "aif": run_aif, "dpo": train_dpo, "eval": run_eval}[stage]
    return run(recipe, run_name=run_name or stage)


def default_num_processes(recipe) -> int:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    return gpus or getattr(recipe, "num_processes", 1)


def cmd_stage(args) -> None:
    if args.preset:
        args.set = [*args.set, f"preset={args.preset}"]  # so the launched processes get it too
    def load(cpu: bool | None):
        return load_recipe(args.command, args.scale, args.recipe, cpu=cpu, **parse_sets(args.set))

    launched = args.in_process or "LOCAL_RANK" in os.environ  # a process `accelerate launch` started: it trains
    # Otherwise the recipe is checked as if on a CPU (`load_recipe`'s `cpu`), so that a process that only launches
    # others holds no GPU; it is built for this machine below if it runs here after all.
    recipe = load(cpu=None if launched else True)
    if args.dry_run and getattr(recipe, "benchmarks", None):
        print(describe_plan(recipe))
        return
    launcher = args.launcher or getattr(recipe, "launcher", "in-process")
    in_process = launched or launcher == "in-process"
    n = 1 if in_process else args.num_processes or default_num_processes(recipe)
    if isinstance(recipe, TrainRecipe) and "LOCAL_RANK" not in os.environ:  # once, not once per launched process
        logger.info("%s: %s", args.command, describe_batch(recipe, n))
    if in_process:
        if args.dry_run:
            print(f"{args.command} would run in this process (launcher: in-process)")
            return
        if not launched:
            recipe = load(cpu=None)  # for this machine
        print(f"{args.command} output: {run_in_process(args.command, recipe, args.run_name)}")
        return
    command = launch_command(args.command, recipe.scale, launcher, n, args.recipe, args.set, run_name=args.run_name)
    print(shlex.join(command), flush=True)
    if not args.dry_run:
        raise SystemExit(subprocess.call([accelerate_executable()] + command[1:]))


def accelerate_executable() -> str:
    """The `accelerate` command of this Python environment (also when its bin/ is not on PATH)."""
    beside = Path(sys.executable).parent / "accelerate"
    return str(beside) if beside.exists() else (shutil.which("accelerate") or "accelerate")


def run_stage(stage: str, scale: str, *sets: str, recipe_file: str | None = None, run_name: str | None = None) -> None:
    """Run `zephyr <stage>` as a subprocess and stream its output (how notebooks launch full-scale stages)."""
    command = [sys.executable, "-m", "zephyr_utils.cli", stage, "--scale", scale]
    command += ["--recipe", recipe_file] if recipe_file else []
    command += ["--run-name", run_name] if run_name else []
    for pair in sets:
        command += ["--set", pair]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
    if process.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed with exit code {process.returncode}")


def cmd_tiny_base(args) -> None:
    recipe = load_recipe("base", "tiny", args.recipe, **parse_sets(args.set))
    print(f"tiny base model: {registry.lookup('base_model', 'tiny')(recipe, force=args.force)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zephyr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-base", help="build (or reuse) the tiny base model")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--recipe", help="a YAML recipe replacing the shipped one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe field")
    p.set_defaults(func=cmd_tiny_base)

    about = {"sft": "dSFT: fine-tune on teacher dialogues", "aif": "AIF: collect and binarize AI-feedback preferences",
             "dpo": "dDPO: preference-tune the dSFT model", "eval": "evaluate the models with the judge"}
    for stage in STAGES:
        p = sub.add_parser(stage, help=about[stage])
        p.add_argument("--scale", default=None, help="tiny, demo or full (default: $ZEPHYR_SCALE or tiny)")
        p.add_argument("--recipe", help="a YAML recipe replacing the shipped one")
        p.add_argument("--preset", help="a recipe set of the scale (demo: 24gb); default $ZEPHYR_PRESET or none")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe field")
        p.add_argument("--launcher", choices=("in-process",) + LAUNCHERS, help="override the recipe's launcher")
        p.add_argument("--num-processes", type=int,
                       help="processes to launch (default: the GPUs here, else the recipe's); the global batch stays the same")
        p.add_argument("--run-name", help=f"the name the next stages find this run by (default: {stage}); give an "
                       f"experiment its own, so that `{stage}` still means the main run")
        p.add_argument("--dry-run", action="store_true", help="print the launch command and exit")
        p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(func=cmd_stage)

    args = parser.parse_args(argv)
    log_to_stdout()
    try:
        args.func(args)
    except ValueError as err:  # a RecipeError among them: one line naming the file, the field and what to do
        print(f"zephyr: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
