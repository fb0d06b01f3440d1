"""Named plug-ins: what a recipe names that is neither a Hub id nor a path.

A recipe may say `dataset: toyworld`, `judge: toy`, a pool member `teacher` or `model_name_or_path: tiny`.
The core modules look such a name up here by kind and call what is registered under it:

    lookup("judge", "toy")(world_seed=0)        # the toy world's oracle judge

A plug-in package registers its factories when it is imported; the packages in `PLUGINS` are imported
on the first `lookup` or `names`, so no core module imports a plug-in, and the toy world of the tiny
scale (`zephyr_utils.toy`) plugs in through the same calls a real dataset, model or judge goes through.

| kind           | called as                                      | returns                                   |
|----------------|------------------------------------------------|-------------------------------------------|
| `dataset`      | `factory(world_seed=...)`                      | a directory of files `data` loads (sft/)  |
| `prompts`      | `factory(split, world_seed=...)`               | AIF prompt rows (prompt, prompt_id, messages) |
| `eval_prompts` | `factory(world_seed=...)`                      | eval rows (prompt_id, turns)              |
| `judge`        | `factory(world_seed=...)`                      | a `judges.Judge`                          |
| `sampler`      | `factory(aif_or_eval_recipe)`                  | a model called like `generation.Sampler` (a pool member, an eval reference) |
| `base_model`   | `factory(recipe=None, world_seed=..., force=False)` | a directory `from_pretrained` loads  |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

PLUGINS = ("zephyr_utils.toy",)
KINDS = ("dataset", "prompts", "eval_prompts", "judge", "sampler", "base_model")

_factories: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}
_plugins_loaded = False


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown plug-in kind {kind!r}; expected one of {', '.join(KINDS)}")


def register(kind: str, name: str, factory: Callable) -> None:
    """Make `factory` what `lookup(kind, name)` returns. Registering the same factory again is a no-op;
    another factory under a name already taken is an error (two plug-ins would claim one recipe value)."""
    _check_kind(kind)
    taken = _factories[kind].get(name)
    if taken is not None and taken is not factory:
        raise ValueError(f"{kind} {name!r} is already registered (by {taken.__module__}); pick another name")
    _factories[kind][name] = factory


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        for module in PLUGINS:
            importlib.import_module(module)  # registers its factories
        _plugins_loaded = True


def names(kind: str) -> tuple[str, ...]:
    """The names registered for `kind`, sorted (plug-ins loaded first)."""
    _check_kind(kind)
    _load_plugins()
    return tuple(sorted(_factories[kind]))


def lookup(kind: str, name: str) -> Callable:
    """The factory registered as `name` for `kind` (plug-ins loaded first); a ValueError naming the
    registered ones when there is none."""
    known = names(kind)
    if name not in known:
        raise ValueError(f"no {kind} named {name!r} is registered; registered: {', '.join(known) or 'none'}")
    return _factories[kind][name]
