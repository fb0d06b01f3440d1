"""Evaluation: MT-Bench-style grading, pairwise win rates, AlpacaEval-style (length-controlled) win
rates against a reference, paired bootstrap confidence intervals, and chat-template adherence.

    answers = answer_turns(model, tokenizer, prompts)            # two turns per prompt, like MT-Bench
    grades  = grade_answers(judge, prompts, answers)               # 1-10 per turn, failures counted
    paired_bootstrap(grades_b.per_prompt, grades_a.per_prompt)     # mean difference and its 95% CI
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

from .chat import follows_template
from .generation import Completion, generate


def template_adherence(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48,
                       **generate_kwargs) -> tuple[float, list[Completion]]:
    """Share of conversations the model answers in the chat template (see `chat.follows_template`),
    and the completions themselves (greedy unless a temperature is given)."""
    completions = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, **generate_kwargs)
    rate = sum(follows_template(c.text, c.finished) for c in completions) / len(completions)
    return rate, completions


def load_eval_prompts(source: str = "toyworld", split: str = "train") -> list[dict]:
    """Rows with prompt_id and `turns` (the user messages). "toyworld" gives the held-out toy prompts;
    otherwise a Hub id such as HuggingFaceH4/mt_bench_prompts, loaded at run time (never vendored)."""
    if source == "toyworld":
        from .toyworld import ToyWorld

        return [{"prompt_id": r["prompt_id"], "turns": r["turns"]} for r in ToyWorld().eval_prompts()]
    import datasets

    rows = []
    for i, row in enumerate(datasets.load_dataset(source, split=split)):
        turns = row.get("turns") or row.get("prompt")
        turns = [turns] if isinstance(turns, str) else turns
        if not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{source}: row {i} has no usable 'prompt'/'turns' (a string or a list of strings)")
        rows.append({"prompt_id": str(row.get("prompt_id", i)), "turns": list(turns), "category": row.get("category")})
    return rows


def answer_turns(model, tokenizer, prompts: list[dict], max_new_tokens: int = 64, batch_size: int = 64,
                 progress: bool = True, temperature: float = 0.0) -> list[list[Completion]]:
    """The model's answers to every turn of every prompt (greedy unless a temperature is given); turn k
    sees the model's own earlier answers."""
    conversations = [[] for _ in prompts]
    answers: list[list[Completion]] = [[] for _ in prompts]
    for k in range(max(len(p["turns"]) for p in prompts)):
        active = [i for i, p in enumerate(prompts) if k < len(p["turns"])]
        for i in active:
            conversations[i].append({"role": "user", "content": prompts[i]["turns"][k]})
        outs = generate(model, tokenizer, [conversations[i] for i in active], max_new_tokens=max_new_tokens,
                        temperature=temperature, batch_size=batch_size, progress=progress, desc=f"answering turn {k + 1}")
        for i, out in zip(active, outs):
            answers[i].append(out)
            conversations[i].append({"role": "assistant", "content": out.text})
    return answers


def conversation_upto(prompt: dict, answers: list[Completion], k: int) -> list[dict]:
    """The conversation the judge sees for turn k: earlier turns with the model's answers, then turn k."""
    messages = []
    for j in range(k):
        messages += [{"role": "user", "content": prompt["turns"][j]}, {"role": "assistant", "content": answers[j].text}]
    return messages + [{"role": "user", "content": prompt["turns"][k]}]


@dataclass
class Grades:
    """Single-answer grades: `per_prompt[i]` holds the ratings of prompt i's turns (None: no rating)."""

    per_prompt: list[list[float | None]]
    verdicts: list[list[str]] = field(repr=False, default_factory=list)

    @property
    def failures(self) -> int:
        return sum(r is None for turns in self.per_prompt for r in turns)

    @property
    def score(self) -> float:
        """MT-Bench score: the mean over all rated turns."""
        rated = [r for turns in self.per_prompt for r in turns if r is not None]
        return statistics.fmean(rated) if rated else float("nan")

    def turn_score(self, k: int) -> float:
        rated = [turns[k] for turns in self.per_prompt if len(turns) > k and turns[k] is not None]
        return statistics.fmean(rated) if rated else float("nan")


def grade_answers(judge, prompts: list[dict], answers: list[list[Completion]], progress: bool = True) -> Grades:
    """MT-Bench single-answer grading: the judge rates each turn 1-10 ("overall" aspect)."""
    items, index = [], []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        for k in range(len(a)):
            items.append((conversation_upto(p, a, k), a[k].text, "overall"))
            index.append((i, k))
    verdicts = judge.judge_many(items, progress=progress, desc="grading")
    per_prompt = [[None] * len(a) for a in answers]
    texts = [[""] * len(a) for a in answers]
    for (i, k), v in zip(index, verdicts):
        per_prompt[i][k], texts[i][k] = v.rating, v.text
    return Grades(per_prompt, texts)


@dataclass
class PairwiseResult:
    wins: int
    losses: int
    ties: int
    failures: int  # comparisons where a verdict could not be read in either order
    consistent: int  # comparisons where both orders agreed

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float:
        return win_rate(self.wins, self.ties, self.n)

    @property
    def consistency(self) -> float:
        """Position consistency: the share of comparisons whose two orders agreed."""
        return self.consistent / max(1, self.n + self.failures)


def win_rate(wins: int, ties: int, n: int) -> float:
    """(W + T/2) / N."""
    if n <= 0:
        raise ValueError("win rate of zero comparisons")
    return (wins + ties / 2) / n


def combine_orders(first: str | None, swapped: str | None) -> str | None:
    """One comparison judged as (A=model, B=other) and again swapped. A win needs both orders to agree;
    any disagreement is a tie; None if either verdict is unreadable."""
    if first is None or swapped is None:
        return None
    swapped_back = {"A": "B", "B": "A", "tie": "tie"}[swapped]
    return first if first == swapped_back else "tie"


def compare_models(judge, prompts: list[dict], answers_a: list[list[Completion]], answers_b: list[list[Completion]],
                   progress: bool = True) -> PairwiseResult:
    """Pairwise comparison of model A against model B on every turn, in both answer orders."""
    items = []
    for p, a, b in zip(prompts, answers_a, answers_b):
        for k in range(min(len(a), len(b))):
            conv = conversation_upto(p, a, k)  # judged in A's conversation for the earlier turns
            items += [(conv, a[k].text, b[k].text), (conv, b[k].text, a[k].text)]
    choices = [c for c, _ in judge.compare_many(items, progress=progress)]
    counts = {"A": 0, "B": 0, "tie": 0, None: 0}
    consistent = 0
    for first, swapped in zip(choices[::2], choices[1::2]):
        counts[combine_orders(first, swapped)] += 1
        consistent += first is not None and first == {"A": "B", "B": "A", "tie": "tie", None: None}[swapped]
    return PairwiseResult(counts["A"], counts["B"], counts["tie"], counts[None], consistent)


def preferences_against_reference(judge, prompts, answers, reference_answers, progress: bool = True) -> list[float]:
    """AlpacaEval-style: per first turn, 1 if the model's answer beats the reference's, 0.5 tie, 0 loss
    (both orders judged, as in `compare_models`). Unreadable comparisons are left out."""
    items = []
    for p, a, r in zip(prompts, answers, reference_answers):
        conv = [{"role": "user", "content": p["turns"][0]}]
        items += [(conv, a[0].text, r[0].text), (conv, r[0].text, a[0].text)]
    choices = [c for c, _ in judge.compare_many(items, progress=progress)]
    value = {"A": 1.0, "tie": 0.5, "B": 0.0}
    return [value[o] for o in (combine_orders(f, s) for f, s in zip(choices[::2], choices[1::2])) if o is not None]


def mean_and_standard_error(preferences: list[float]) -> tuple[float, float]:
    """AlpacaEval's win rate and its standard error sd / sqrt(N)."""
    n = len(preferences)
    mean = statistics.fmean(preferences)
    return mean, (statistics.stdev(preferences) / math.sqrt(n) if n > 1 else float("nan"))


def length_controlled_win_rate(preferences: list[float], model_lengths: list[float], reference_lengths: list[float],
                               iterations: int = 100) -> float:
    """AlpacaEval-2-style length-controlled win rate.

    Fits p(win) = sigmoid(theta + phi * tanh(d / sd(d))), d = model length - reference length, by maximum
    likelihood (Newton's method; ties count as 1/2), and predicts at d = 0: sigmoid(theta). With one model
    against one reference the model term is the intercept theta. (AlpacaEval 2 also has an instruction
    difficulty term, which needs many models; it is left out.) When all lengths are equal, this is the raw
    win rate."""
    import numpy as np

    y = np.asarray(preferences, dtype=float)
    d = np.asarray(model_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    features = np.stack([np.ones_like(x), x], axis=1) if sd > 0 else np.ones((len(y), 1))
    w = np.zeros(features.shape[1])
    ridge = 1e-6  # keeps Newton's steps finite when the data are separable
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-features @ w))
        gradient = features.T @ (y - p) - ridge * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + np.exp(-w[0])))


def alpaca_eval(judge, prompts, answers, reference_answers, count_tokens, progress: bool = True) -> dict:
    """AlpacaEval-style summary of first answers against a reference: win rate with its standard error,
    and the length-controlled win rate, lengths measured by `count_tokens(text)`."""
    prefs = preferences_against_reference(judge, prompts, answers, reference_answers, progress=progress)
    win, se = mean_and_standard_error(prefs)
    lc = length_controlled_win_rate(prefs, [count_tokens(a[0].text) for a in answers],
                                    [count_tokens(r[0].text) for r in reference_answers])
    return {"win_rate": win, "standard_error": se, "length_controlled": lc}


def paired_bootstrap(scores_a: list[list[float | None]], scores_b: list[list[float | None]], samples: int = 2000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of (A - B) over rated turns, with a percentile confidence interval from resampling *prompts*
    (both turns of a prompt stay together, and A and B stay paired). Returns (difference, low, high)."""
    per_prompt = []
    for a, b in zip(scores_a, scores_b):
        diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
        if diffs:
            per_prompt.append((sum(diffs), len(diffs)))
    if not per_prompt:
        raise ValueError("no prompt has a rated turn for both models")

    def mean(rows):
        return sum(s for s, _ in rows) / sum(n for _, n in rows)

    rng = random.Random(seed)
    stats = sorted(mean([per_prompt[rng.randrange(len(per_prompt))] for _ in per_prompt]) for _ in range(samples))
    tail = (1 - level) / 2
    return mean(per_prompt), stats[int(tail * samples)], stats[min(samples - 1, int((1 - tail) * samples))]


def score_ci(grades: Grades, samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """A model's MT-Bench score with a 95% bootstrap interval (resampling prompts)."""
    zeros = [[0.0 if r is not None else None for r in turns] for turns in grades.per_prompt]
    return paired_bootstrap(grades.per_prompt, zeros, samples, seed)


def adherence_of(answers: list[list[Completion]]) -> float:
    """Share of all answered turns that follow the chat template."""
    turns = [c for a in answers for c in a]
    return sum(follows_template(c.text, c.finished) for c in turns) / len(turns)


def run_eval(recipe):
    """`zephyr eval`: answer the eval prompts with each of `recipe.models`, grade every turn, compare the
    last model with the one before it pairwise, and write `results.json` in runs/<scale>/eval/. A recipe
    with `benchmarks` (demo/full) runs those instead: see `benchmarks.run_benchmarks`."""
    import json

    if recipe.benchmarks:
        from .benchmarks import run_benchmarks

        return run_benchmarks(recipe)

    from .config import stage_dir, write_run_info
    from .generation import load_model
    from .judges import make_judge
    from .models import resolve_model_path

    out = stage_dir(recipe, "eval")
    prompts = load_eval_prompts(recipe.prompts)
    judge = make_judge(recipe.judge, recipe.judge_base_url)
    answers, results = {}, {"judge": judge.name, "prompts": len(prompts), "models": {}}
    for name in recipe.models:
        model, tokenizer = load_model(resolve_model_path(name, recipe.scale))
        answers[name] = answer_turns(model, tokenizer, prompts, recipe.max_new_tokens, recipe.batch_size,
                                     temperature=recipe.temperature)
        grades = grade_answers(judge, prompts, answers[name])
        score, low, high = score_ci(grades, recipe.bootstrap_samples, recipe.seed)
        results["models"][name] = {"score": score, "ci95": [low, high], "turn_scores": [grades.turn_score(k) for k in range(2)],
                                   "grading_failures": grades.failures, "template_adherence": adherence_of(answers[name]),
                                   "ratings": grades.per_prompt}
    if len(recipe.models) >= 2:
        a, b = recipe.models[-1], recipe.models[-2]
        pair = compare_models(judge, prompts, answers[a], answers[b])
        diff = paired_bootstrap(results["models"][a]["ratings"], results["models"][b]["ratings"], recipe.bootstrap_samples, recipe.seed)
        results["pairwise"] = {"a": a, "b": b, "wins": pair.wins, "losses": pair.losses, "ties": pair.ties,
                               "failures": pair.failures, "win_rate": pair.win_rate, "position_consistency": pair.consistency,
                               "score_difference": diff[0], "difference_ci95": list(diff[1:])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_run_info(out, recipe, [])
    return out
