"""The `zephyr` command: `zephyr tiny-base`, `zephyr sft|aif|dpo --scale tiny --set learning_rate=1e-4`."""

from __future__ import annotations

import argparse
import sys
import yaml


def parse_sets(pairs: list[str]) -> dict:
    """`["lr=1e-4", "use_lora=true"]` -> {"lr": 1e-4, "use_lora": True} (values parsed as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_tiny_base(args) -> None:
    from .config import load_recipe
    from .tiny import build_tiny_base

    recipe = load_recipe("base", "tiny", args.recipe, **parse_sets(args.set))
    path = build_tiny_base(recipe, force=args.force)
    print(f"tiny base model: {path}")


def cmd_stage(args) -> None:
    """Run one stage of the recipe in this process."""
    from .config import load_recipe

    recipe = load_recipe(args.command, args.scale, args.recipe, **parse_sets(args.set))
    if args.command == "sft":
        from .sft import train_sft as run
    elif args.command == "aif":
        from .aif import run_aif as run
    else:
        from .dpo import train_dpo as run
    print(f"{args.command} output: {run(recipe)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zephyr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-base", help="build (or reuse) the tiny base model")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--recipe", help="a YAML recipe replacing the shipped one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe field")
    p.set_defaults(func=cmd_tiny_base)

    for stage, about in (("sft", "dSFT: fine-tune on teacher dialogues"), ("aif", "AIF: collect and binarize AI-feedback preferences"),
                         ("dpo", "dDPO: preference-tune the dSFT model")):
        p = sub.add_parser(stage, help=about)
        p.add_argument("--scale", default=None, help="tiny, demo or full (default: $ZEPHYR_SCALE or tiny)")
        p.add_argument("--recipe", help="a YAML recipe replacing the shipped one")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe field")
        p.set_defaults(func=cmd_stage)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
