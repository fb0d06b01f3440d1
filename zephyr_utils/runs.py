"""Where runs live, and how one stage hands its outputs to the next.

Each stage writes its outputs into one directory (`stage_dir`: runs/<scale>[-<preset>]/<stage>, or the
recipe's `output_dir`) and, last of all, a `manifest.json` (`write_manifest`): its stage, scale, preset and
world seed, the resolved recipe, the library versions, its inputs, each with the digest of that input's
own manifest, and its outputs. A directory with a manifest is a finished run. Writing one also records
the run in runs/<scale>[-<preset>]/latest.json, so a run written elsewhere (`--set output_dir=...`) is
still found.

A later stage names its inputs as the recipes do, and `resolve` turns a name into a path:

    resolve("sft", "tiny")     # the newest finished dSFT run of the tiny scale (`find`), checked current
    resolve("base", "tiny")    # the model that dSFT run started from, as its manifest records it
    resolve("tiny", "tiny")    # a registered base model, built on first use
    resolve("runs/x", "tiny")  # a path or a Hub id, as given (a run directory is checked current)

An input is current when its world seed is the consumer's and every input its manifest recorded still
has the manifest it had (`check_current`); otherwise a `StaleRunError` names the command to rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import registry
from .config import looks_local, recipe_to_dict, runs_root

MANIFEST = "manifest.json"
INDEX = "latest.json"
# What each run name is, for messages; the names a recipe may give as a model or data set that `find` looks up.
RUN_NAMES = {"sft": "dSFT", "aif": "AIF", "dpo": "dDPO", "eval": "evaluation", "table3": "Table 3",
             "dpo_only": "dDPO-without-dSFT ablation", "sft2": "dSFT-2 ablation"}
ABLATIONS = ("dpo_only", "sft2", "table3")  # written by chapter 4's `ablations.run_table3`, not by a command


class RunNotFoundError(ValueError):
    """No finished run of a stage: the message names the command that makes one."""


class StaleRunError(ValueError):
    """A run made from inputs that have changed since, or for another toy world: the message names what to rerun."""


def scale_dir(scale: str, preset: str = "") -> Path:
    """runs/<scale>, or runs/<scale>-<preset> for a preset (so presets never resume each other's checkpoints)."""
    return runs_root() / (f"{scale}-{preset}" if preset else scale)


def stage_dir(recipe, stage: str) -> Path:
    """Where a stage writes its outputs: the recipe's `output_dir`, else runs/<scale>[-<preset>]/<stage>."""
    if recipe.output_dir:
        return Path(recipe.output_dir)
    return scale_dir(recipe.scale, getattr(recipe, "preset", "")) / stage


def display_path(path: str | os.PathLike) -> str:
    """A path as the book prints it: under the runs directory, as "runs/<the rest>" (e.g. runs/tiny/sft),
    so no page shows the directories of the machine that built it; any other path as it is."""
    path = Path(path)
    try:
        return str(Path("runs") / path.resolve().relative_to(runs_root().resolve()))
    except ValueError:
        return str(path)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on (saved beside every stage's outputs)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("zephyr-utils", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_run_info(output_dir: str | os.PathLike, recipe, log_history: list[dict]) -> None:
    """Save the resolved recipe, library versions and the trainer's log history beside a stage's outputs."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    (output_dir / "versions.json").write_text(json.dumps(library_versions(), indent=2))
    (output_dir / "log_history.json").write_text(json.dumps(log_history, indent=1))


def command(name: str, scale: str, preset: str = "") -> str:
    """What makes run `name` at a scale: `zephyr <stage> --scale ...`, or chapter 4's ablations."""
    if name in ABLATIONS:
        return f"ablations.run_table3({scale!r})"
    if name == "base" and scale == "tiny":
        return "zephyr tiny-base"
    return f"zephyr {name} --scale {scale}" + (f" --preset {preset}" if preset else "")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_of(path: str | os.PathLike) -> Path | None:
    """The finished run a local path belongs to: the path itself, or the run directory holding it (an AIF
    run's preferences/, or a file in them), whichever first has a manifest; None for anything else."""
    path = Path(path).expanduser()
    if not path.exists():  # a Hub id, or a path that is gone
        return None
    for directory in (path, path.parent, path.parent.parent):
        if (directory / MANIFEST).is_file():
            return directory
    return None


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """A run's manifest.json as a dict (a `RunNotFoundError` naming the file when it cannot be read)."""
    path = Path(run_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunNotFoundError(f"{display_path(path)}: no readable run manifest ({err}); rerun the stage that wrote "
                               f"{display_path(run_dir)}") from None


def manifest_digest(path: str | os.PathLike) -> str | None:
    """The digest of the manifest of the run `path` belongs to (see `run_of`), None if it has none.

    It hashes what the run was made of (stage, recipe, inputs with their digests, versions, outputs) and
    leaves out the date, so a run made again from the same recipe and inputs, like a tiny base model
    rebuilt after its cache was emptied, keeps the digest its consumers recorded."""
    run = run_of(path)
    if run is None:
        return None
    manifest = {k: v for k, v in read_manifest(run).items() if k != "date"}
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def write_manifest(output_dir: str | os.PathLike, stage: str, recipe, inputs: dict[str, str | None],
                   outputs: dict[str, str], name: str | None = None) -> Path:
    """Write `output_dir`/manifest.json, the mark of a finished run: call it after every output is saved.

    `inputs` = {role: the path or Hub id used} (None: not used); each is recorded with the digest of its
    run's manifest (None for a Hub id or a path made by no run). `outputs` = {role: path relative to
    `output_dir`}. `name` (default: the stage) is what later stages `find` the run by, e.g. "dpo_only" for
    a dDPO run that is an ablation. The run becomes the newest `name` of its scale in latest.json."""
    output_dir = Path(output_dir)
    name = name or stage
    preset = getattr(recipe, "preset", "")
    manifest = {
        "stage": stage,
        "name": name,
        "scale": recipe.scale,
        "preset": preset,
        "world_seed": recipe.world_seed,
        "recipe": recipe_to_dict(recipe),
        "versions": library_versions(),
        "inputs": {role: {"path": str(value), "digest": manifest_digest(value)}
                   for role, value in inputs.items() if value is not None},
        "outputs": outputs,
        "date": datetime.now(timezone.utc).isoformat(),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(output_dir / MANIFEST, json.dumps(manifest, indent=1, default=str))
    if name in RUN_NAMES:
        index_path = scale_dir(recipe.scale, preset) / INDEX
        index_path.parent.mkdir(parents=True, exist_ok=True)
        index = _read_index(index_path)
        index[name] = str(output_dir.absolute())
        _write_atomic(index_path, json.dumps(index, indent=1, sort_keys=True))
    return output_dir / MANIFEST


def begin(output_dir: str | os.PathLike) -> None:
    """Mark `output_dir` as holding a run in progress: an earlier run's manifest there is removed, so no
    later stage takes the half-rewritten outputs for a finished run (`write_manifest` marks the end)."""
    (Path(output_dir) / MANIFEST).unlink(missing_ok=True)


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def find(name: str, scale: str, preset: str = "") -> Path:
    """The directory of the newest finished run `name` (e.g. "sft") of a scale and preset: the one
    latest.json records or the default runs/<scale>[-<preset>]/<name>, whichever finished last. A
    `RunNotFoundError` naming the command that makes one when there is none."""
    root = scale_dir(scale, preset)
    default = root / name
    candidates = {default}
    recorded = _read_index(root / INDEX).get(name)
    if recorded:
        candidates.add(Path(recorded))
    finished = []
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            manifest = read_manifest(candidate)
            if manifest.get("name") == name:
                finished.append((manifest.get("date", ""), str(candidate)))
    if finished:
        return Path(max(finished)[1])
    label = RUN_NAMES.get(name, name)
    where = f"{scale} scale" + (f", preset {preset}," if preset else "")
    message = (f"no finished {label} run for {where} under {display_path(root)}: run `{command(name, scale, preset)}` "
               f"first, or pass a path")
    if default.is_dir():
        message += (f" ({display_path(default)} has no {MANIFEST}: that run did not finish, or was made before runs "
                    f"wrote manifests; run the command again)")
    raise RunNotFoundError(message)


def check_current(run_dir: str | os.PathLike, world_seed: int | None = None) -> dict:
    """The manifest of a finished run, after checking that it is current: made for toy world `world_seed`
    (when given), and from inputs that still have the manifests it recorded. A `StaleRunError` otherwise.
    An input no longer on disk is not checked (the run's own outputs still stand)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    rerun = command(manifest["name"], manifest["scale"], manifest["preset"])
    if manifest["recipe"].get("output_dir") and manifest["name"] not in ABLATIONS:
        rerun += f" --set output_dir={manifest['recipe']['output_dir']}"
    where = display_path(run_dir)
    if world_seed is not None and manifest.get("world_seed", world_seed) != world_seed:
        raise StaleRunError(f"{where} was made for toy world {manifest['world_seed']}, but this recipe has world_seed "
                            f"{world_seed}: run `{rerun} --set world_seed={world_seed}`, or set world_seed: "
                            f"{manifest['world_seed']}")
    for role, recorded in manifest.get("inputs", {}).items():
        current = manifest_digest(recorded["path"])  # None: the input is not a run (a Hub id, a deleted run)
        if recorded.get("digest") is None or current is None:
            continue
        if current != recorded["digest"]:
            raise StaleRunError(f"{where} is stale: its {role} input {display_path(recorded['path'])} has changed since "
                                f"it was made (its {MANIFEST} is not the one {where}/{MANIFEST} recorded); rerun "
                                f"`{rerun}` to make it from the current one")
    return manifest


def resolve(name: str, scale: str, preset: str = "", world_seed: int | None = 0) -> str:
    """A model or data set named in a recipe, as a path or Hub id that loads: a run name ("sft", "aif",
    "dpo", ...: the newest finished run, `find`), "base" (the model the newest dSFT run started from), a
    registered base model ("tiny": built for toy world `world_seed` on first use), else the name itself
    (a local path or a Hub id). A run, found or given as a path, is checked current (`check_current`)."""
    if name in registry.names("base_model"):
        return str(registry.lookup("base_model", name)(world_seed=world_seed or 0))
    if name == "base":
        sft = find("sft", scale, preset)
        start = check_current(sft, world_seed)["inputs"]["model"]["path"]
        if looks_local(start) and not Path(start).exists():
            raise RunNotFoundError(f"the base model {display_path(sft)} started from, {start}, no longer exists: "
                                   f"rerun `{command('sft', scale, preset)}`, or pass the base model's path or Hub id")
        if run_of(start) is not None:
            check_current(start, world_seed)
        return start
    if name in RUN_NAMES:
        path = find(name, scale, preset)
        check_current(path, world_seed)
        return str(path)
    run = run_of(name)
    if run is not None:
        check_current(run, world_seed)
    return name
