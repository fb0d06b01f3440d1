"""AlpacaEval v1 and AlpacaEval 2 through the `alpaca-eval` package, with the book's own generation path.

    reference = load_reference_outputs("alpaca_eval")                  # 805 instructions, text-davinci-003's outputs
    rows = generate_outputs(sampler, reference, generator="dpo")       # the model's answers
    write_model_outputs(out / "model_outputs.json", rows)              # alpaca_eval's input format, re-judgeable
    metrics = evaluate("alpaca_eval", out / "model_outputs.json", reference, out, base_url=...)

The versions are alpaca_eval's own definitions: v1 (the paper's) is the win rate against
text-davinci-003 judged by the `alpaca_eval_gpt4` annotator; v2 is the length-controlled win rate against
GPT-4 Turbo judged by `weighted_alpaca_eval_gpt4_turbo`. The annotator's prompt, parser and decoding
settings are read from the installed package; only where its requests go (an OpenAI-compatible
`base_url`, the key from $OPENAI_API_KEY) and, for a local judge, the model name are set here.
AlpacaEval's data are CC BY-NC 4.0: they are downloaded at run time from `tatsu-lab/alpaca_eval`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

DATASET = "tatsu-lab/alpaca_eval"


@dataclass(frozen=True)
class Version:
    reference_file: str  # in the DATASET repository on the Hub
    baseline: str  # the generator of the reference outputs
    annotator: str  # an evaluators_configs name of alpaca_eval
    judge_model: str  # the model that annotator's config asks (for the plan; the run reads the config)
    metric: str  # a function of alpaca_eval.metrics
    score: str  # the key of the headline number in the metric's output
    instructions: int  # documented size of the evaluation set


VERSIONS = {
    "alpaca_eval": Version("alpaca_eval.json", "text_davinci_003", "alpaca_eval_gpt4", "gpt-4", "get_winrate", "win_rate", 805),
    "alpaca_eval_2": Version("alpaca_eval_gpt4_baseline.json", "gpt4_turbo", "weighted_alpaca_eval_gpt4_turbo",
                             "gpt-4-1106-preview", "get_length_controlled_winrate", "length_controlled_winrate", 805),
}
FIELDS = ("instruction", "output", "generator")  # what alpaca_eval reads from a model's outputs


def version(name: str) -> Version:
    if name not in VERSIONS:
        raise ValueError(f"unknown AlpacaEval version {name!r}; expected one of {', '.join(VERSIONS)}")
    return VERSIONS[name]


def load_reference_outputs(name: str, source: str | Path | None = None) -> list[dict]:
    """The reference outputs of an AlpacaEval version: downloaded from the Hub at run time, or read from a
    local JSON file of the same schema (a list of {instruction, output, generator, ...})."""
    if source is None:
        from huggingface_hub import hf_hub_download

        source = hf_hub_download(DATASET, version(name).reference_file, repo_type="dataset")
    path = Path(source)
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: could not be read as AlpacaEval outputs (a JSON list of records): {err}") from err
    check_outputs(rows, str(path))
    return rows


def check_outputs(rows, where: str) -> None:
    """A ValueError naming the row and field unless every row has the fields alpaca_eval reads."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: expected a non-empty JSON list of records with {', '.join(FIELDS)}")
    for i, row in enumerate(rows):
        for name in FIELDS:
            if not isinstance(row, dict) or not isinstance(row.get(name), str):
                raise ValueError(f"{where}: row {i}: field {name!r} must be a string"
                                 f"{'' if isinstance(row, dict) else ' (the row is not a record)'}")


def generate_outputs(sample, reference: list[dict], generator: str, max_new_tokens: int = 2048, temperature: float = 0.7,
                     top_p: float = 1.0, seed: int = 0) -> list[dict]:
    """The model's answer to each reference instruction (one user turn), in alpaca_eval's format. The
    defaults are those alpaca_eval's own zephyr-7b-beta config generated with."""
    conversations = [[{"role": "user", "content": r["instruction"]}] for r in reference]
    outs = sample(conversations, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    return [{"instruction": r["instruction"], "output": o.text, "generator": generator, "dataset": r.get("dataset", "")}
            for r, o in zip(reference, outs)]


def write_model_outputs(path: str | Path, rows: list[dict]) -> Path:
    """model_outputs.json as `alpaca_eval --model_outputs` reads it."""
    check_outputs(rows, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return path


def annotator_config(name: str, out_dir: str | Path, base_url: str = "", judge_model: str = "") -> Path:
    """A copy of alpaca_eval's own annotator config for `name`, whose requests go to `base_url` (and to
    `judge_model` when given). No key is written: the OpenAI client reads $OPENAI_API_KEY."""
    from alpaca_eval import constants

    annotator = version(name).annotator
    source = constants.EVALUATORS_CONFIG_DIR / annotator / "configs.yaml"
    config = yaml.safe_load(source.read_text())
    settings = config[annotator]
    settings["prompt_template"] = str(constants.EVALUATORS_CONFIG_DIR / settings["prompt_template"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clients = out_dir / "openai_clients.yaml"
    clients.write_text(yaml.safe_dump({"default": [{"base_url": base_url} if base_url else {}]}))
    settings["completions_kwargs"]["client_config_path"] = str(clients)
    if judge_model:
        settings["completions_kwargs"]["model_name"] = judge_model
    path = out_dir / "annotator" / annotator / "configs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def evaluate(name: str, model_outputs: str | Path, reference: list[dict], out_dir: str | Path, base_url: str = "",
             judge_model: str = "", max_instances: int | None = None) -> dict:
    """Run alpaca_eval's `evaluate` for one version: its annotator judges the model's outputs against the
    reference, and its metric gives the win rate (and, for v2, the length-controlled one), in percent.
    The annotations and leaderboard.csv are written to `out_dir`."""
    from alpaca_eval import main

    v = version(name)
    out_dir = Path(out_dir)
    config = annotator_config(name, out_dir, base_url, judge_model)
    metric_kwargs = {"save_weights_dir": str(out_dir / "glm_weights")} if v.metric == "get_length_controlled_winrate" else {}
    leaderboard, _ = main.evaluate(
        model_outputs=str(model_outputs), reference_outputs=reference, annotators_config=str(config),
        output_path=str(out_dir), precomputed_leaderboard=None, is_return_instead_of_print=True, fn_metric=v.metric,
        metric_kwargs=metric_kwargs, sort_by=v.score, max_instances=max_instances, is_overwrite_leaderboard=True,
        caching_path=str(out_dir / "annotations_cache.json"),
    )
    row = leaderboard.iloc[0].to_dict()
    keep = ("win_rate", "standard_error", "n_wins", "n_draws", "n_total", "length_controlled_winrate", "lc_standard_error")
    return {"version": name, "annotator": v.annotator, "baseline": v.baseline,
            **{k: float(row[k]) for k in keep if k in row and row[k] == row[k]}}
