"""Evaluation: MT-Bench-style grading, pairwise win rates, AlpacaEval-style (length-controlled) win
rates against a reference, paired bootstrap confidence intervals, and chat-template adherence.

    answers = answer_model(recipe, "dpo", prompts)                 # two turns per prompt, like MT-Bench
    grades  = grade_answers(judge, prompts, answers)               # 1-10 per turn, failures counted
    paired_bootstrap(grades_b.per_prompt, grades_a.per_prompt)     # mean difference and its 95% CI
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from . import registry, runs
from .benchmarks import run_benchmarks
from .chat import follows_template
from .generation import Completion, Sampler, generate
from .judges import check_failure_share, make_judge


def save_results(chapter: str, scale: str, preset: str = "", **results) -> None:
    """What a chapter measured, as runs/<scale>[-<preset>]/book/<chapter>.json: the file the tests read
    (not the printed prose), and a record a reader can compare across runs."""
    path = runs.scale_dir(scale, preset) / "book" / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def adheres(conversation: list[dict], completion: Completion, addresses=None) -> bool:
    """Did one answer follow the chat template (`chat.follows_template`: one finished turn, no role
    marker)? With `addresses(conversation, text)` (the toy judge's), it must also name what was asked
    about, so that a constant answer such as "I don't know." does not pass."""
    ok = follows_template(completion.text, completion.finished)
    return ok and (addresses is None or addresses(conversation, completion.text))


def template_adherence(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48, addresses=None,
                       **generate_kwargs) -> tuple[float, list[Completion]]:
    """Share of conversations the model answers in the chat template (see `adheres`), and the
    completions themselves (greedy unless a temperature is given)."""
    completions = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, **generate_kwargs)
    rate = sum(adheres(conv, c, addresses) for conv, c in zip(conversations, completions)) / len(completions)
    return rate, completions


def load_eval_prompts(source: str, split: str = "train", world_seed: int = 0) -> list[dict]:
    """Rows with prompt_id and `turns` (the user messages). A registered name ("toyworld": the held-out
    prompts of toy world `world_seed`), else a Hub id such as HuggingFaceH4/mt_bench_prompts, loaded at
    run time (never vendored)."""
    if source in registry.names("eval_prompts"):
        rows = registry.lookup("eval_prompts", source)(world_seed=world_seed)
        return [{"prompt_id": r["prompt_id"], "turns": r["turns"]} for r in rows]
    import datasets

    rows = []
    for i, row in enumerate(datasets.load_dataset(source, split=split)):
        turns = row.get("turns") or row.get("prompt")
        turns = [turns] if isinstance(turns, str) else turns
        if not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{source}: row {i} has no usable 'prompt'/'turns' (a string or a list of strings)")
        rows.append({"prompt_id": str(row.get("prompt_id", i)), "turns": list(turns), "category": row.get("category")})
    return rows


def sample_turns(sampler, prompts: list[dict], max_new_tokens: int = 64, temperature: float = 0.0,
                 progress: bool = True) -> list[list[Completion]]:
    """The answers to every turn of every prompt (greedy unless a temperature is given); turn k sees the
    model's own earlier answers. `sampler` is a `generation.Sampler` or anything called like one."""
    conversations = [[] for _ in prompts]
    answers: list[list[Completion]] = [[] for _ in prompts]
    for k in range(max(len(p["turns"]) for p in prompts)):
        active = [i for i, p in enumerate(prompts) if k < len(p["turns"])]
        for i in active:
            conversations[i].append({"role": "user", "content": prompts[i]["turns"][k]})
        outs = sampler([conversations[i] for i in active], max_new_tokens=max_new_tokens, temperature=temperature,
                       progress=progress, desc=f"answering turn {k + 1}")
        for i, out in zip(active, outs):
            answers[i].append(out)
            conversations[i].append({"role": "assistant", "content": out.text})
    return answers


def answer_model(recipe, name: str, prompts: list[dict], progress: bool = True) -> list[list[Completion]]:
    """Model `name`'s answers to every turn (a Hub id, a path, "base"/"sft"/"dpo" of the recipe's scale and
    preset, or a registered sampler such as the tiny scale's "teacher"), generated as the eval recipe says: its
    backend (vLLM on a GPU when installed), dtype, batch size, length and temperature. The model is freed
    before this returns."""
    if name in registry.names("sampler"):
        return sample_turns(registry.lookup("sampler", name)(recipe), prompts, recipe.max_new_tokens, recipe.temperature,
                            progress)
    path = runs.resolve(name, recipe.scale, recipe.preset, recipe.world_seed)
    with Sampler(path, recipe.generation_backend, recipe.batch_size, recipe.dtype) as sampler:
        return sample_turns(sampler, prompts, recipe.max_new_tokens, recipe.temperature, progress)


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
    def turns(self) -> int:
        return sum(len(turns) for turns in self.per_prompt)

    @property
    def failures(self) -> int:
        """Turns without a rating (the judge's verdict was unreadable or never came)."""
        return sum(r is None for turns in self.per_prompt for r in turns)

    @property
    def score(self) -> float:
        """MT-Bench score: the mean over all rated turns (see `failures` for how many are not)."""
        rated = [r for turns in self.per_prompt for r in turns if r is not None]
        return statistics.fmean(rated) if rated else float("nan")

    def turn_score(self, k: int) -> float:
        rated = [turns[k] for turns in self.per_prompt if len(turns) > k and turns[k] is not None]
        return statistics.fmean(rated) if rated else float("nan")


def grade_answers(judge, prompts: list[dict], answers: list[list[Completion]], progress: bool = True) -> Grades:
    """MT-Bench single-answer grading: the judge rates each turn 1-10 ("overall" aspect)."""
    check_same_prompts(prompts, answers=answers)
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


def check_same_prompts(prompts: list[dict], **answer_sets) -> None:
    """Every answer set answers every prompt, turn for turn; otherwise a ValueError naming the mismatch."""
    for name, answers in answer_sets.items():
        if len(answers) != len(prompts):
            raise ValueError(f"{name} has answers to {len(answers)} prompts, but there are {len(prompts)} prompts: "
                             "answer the same prompts, in the same order")
    for i, p in enumerate(prompts):
        counts = {name: len(answers[i]) for name, answers in answer_sets.items()}
        if len(set(counts.values())) > 1 or 0 in counts.values():
            found = ", ".join(f"{n} answered turns for {k}" for k, n in counts.items())
            raise ValueError(f"prompt {i} ({p.get('prompt_id', i)!r}) has {found}: every model must answer the same turns")


def compare_models(judge, prompts: list[dict], answers_a: list[list[Completion]], answers_b: list[list[Completion]],
                   progress: bool = True) -> PairwiseResult:
    """Pairwise comparison of model A against model B on every turn, in both answer orders."""
    check_same_prompts(prompts, answers_a=answers_a, answers_b=answers_b)
    items = []
    for p, a, b in zip(prompts, answers_a, answers_b):
        for k in range(len(a)):
            conv = conversation_upto(p, a, k)  # judged in A's conversation for the earlier turns
            items += [(conv, a[k].text, b[k].text), (conv, b[k].text, a[k].text)]
    choices = [c for c, _ in judge.compare_many(items, progress=progress)]
    counts = {"A": 0, "B": 0, "tie": 0, None: 0}
    consistent = 0
    for first, swapped in zip(choices[::2], choices[1::2]):
        counts[combine_orders(first, swapped)] += 1
        consistent += first is not None and first == {"A": "B", "B": "A", "tie": "tie", None: None}[swapped]
    return PairwiseResult(counts["A"], counts["B"], counts["tie"], counts[None], consistent)


def preferences_against_reference(judge, prompts, answers, reference_answers, progress: bool = True) -> list[float | None]:
    """AlpacaEval-style: per prompt's first turn, 1 if the model's answer beats the reference's, 0.5 tie,
    0 loss (both orders judged, as in `compare_models`); None where a verdict was unreadable. One entry
    per prompt, in order, so the list stays aligned with anything else measured per prompt."""
    check_same_prompts(prompts, answers=[a[:1] for a in answers], reference_answers=[r[:1] for r in reference_answers])
    items = []
    for p, a, r in zip(prompts, answers, reference_answers):
        conv = [{"role": "user", "content": p["turns"][0]}]
        items += [(conv, a[0].text, r[0].text), (conv, r[0].text, a[0].text)]
    choices = [c for c, _ in judge.compare_many(items, progress=progress)]
    value = {"A": 1.0, "tie": 0.5, "B": 0.0, None: None}
    return [value[combine_orders(f, s)] for f, s in zip(choices[::2], choices[1::2])]


def mean_and_standard_error(preferences: list[float]) -> tuple[float, float]:
    """AlpacaEval's win rate and its standard error sd / sqrt(N)."""
    if not preferences:
        raise ValueError("no preferences to average")
    n = len(preferences)
    mean = statistics.fmean(preferences)
    return mean, (statistics.stdev(preferences) / math.sqrt(n) if n > 1 else float("nan"))


def length_controlled_win_rate(preferences: list[float], model_lengths: list[float], reference_lengths: list[float],
                               iterations: int = 100) -> float:
    """AlpacaEval-2-style length-controlled win rate.

    Fits p(win) = sigmoid(theta + phi * tanh(d / sd(d))), d = model length - reference length (sd with
    N-1, as AlpacaEval), by maximum likelihood (Newton's method; a tie counts as 1/2 a win), and predicts
    at d = 0: sigmoid(theta). When all lengths are equal this is the raw win rate.

    Of AlpacaEval 2's GLM (`alpaca_eval.metrics.glm_winrate`, "length_controlled_v1") it keeps the model
    term, the length term tanh(d / sd(d)), preferences as probabilities, and the prediction at zero length
    difference; it is the same model as AlpacaEval's "length_controlled_minimal", and a test checks the two
    agree on the same annotations. It drops (1) the instruction-difficulty term: AlpacaEval's difficulties
    were fitted over many models on its own 805 instructions and do not exist for other prompts; (2) the
    regularisation towards AlpacaEval's "gamed" baseline annotations (weight 0.2), which come from its
    data files; (3) the L1 penalty with its cross-validated strength (here: a ridge of 1e-6, only to keep
    separable data finite). AlpacaEval measures length in characters: pass `count_tokens=len` to
    `alpaca_eval` to match it. (`pip install alpaca-eval` 0.6.6 needs setuptools < 81 to import, and
    downloads its data from the Hub at every call, so it is not a dependency here.)"""
    n = len(preferences)
    if len(model_lengths) != n or len(reference_lengths) != n:
        raise ValueError(f"length_controlled_win_rate: {n} preferences, {len(model_lengths)} model lengths and "
                         f"{len(reference_lengths)} reference lengths; they must be aligned, one per comparison")
    if n < 2:
        raise ValueError(f"length_controlled_win_rate needs at least 2 comparisons, got {n}")
    y = np.asarray(preferences, dtype=float)
    if not np.all((y >= 0) & (y <= 1)):  # also catches NaN
        i = int(np.flatnonzero(~((y >= 0) & (y <= 1)))[0])
        raise ValueError(f"length_controlled_win_rate: preference {i} is {preferences[i]!r}; expected 0, 0.5 or 1 "
                         "(drop unreadable ones first)")
    lengths = np.asarray([model_lengths, reference_lengths], dtype=float)
    if not np.all(np.isfinite(lengths) & (lengths >= 0)):
        raise ValueError("length_controlled_win_rate: lengths must be finite and non-negative")
    d = lengths[0] - lengths[1]
    sd = d.std(ddof=1)
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    features = np.stack([np.ones_like(x), x], axis=1) if sd > 0 else np.ones((len(y), 1))
    w = np.zeros(features.shape[1])
    ridge = 1e-6  # keeps Newton's steps finite when the data are separable
    for _ in range(iterations):
        p = sigmoid(features @ w)
        gradient = features.T @ (y - p) - ridge * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(sigmoid(w[0]))


def sigmoid(z):
    """1 / (1 + e^-z), written with tanh so that a large |z| (a model that loses every comparison) does not
    overflow."""
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def alpaca_eval(judge, prompts, answers, reference_answers, count_tokens, progress: bool = True,
                max_failure_share: float = 0.02) -> dict:
    """AlpacaEval-style summary of first answers against a reference: win rate with its standard error,
    and the length-controlled win rate, lengths measured by `count_tokens(text)`. Comparisons whose
    verdict was unreadable are dropped from the preferences and the lengths together, and counted
    (`unreadable`); more than `max_failure_share` of them raises instead of giving a win rate."""
    prefs = preferences_against_reference(judge, prompts, answers, reference_answers, progress=progress)
    keep = [i for i, p in enumerate(prefs) if p is not None]
    check_failure_share(len(prefs) - len(keep), len(prefs), max_failure_share, "AlpacaEval comparisons")
    win, se = mean_and_standard_error([prefs[i] for i in keep])
    lc = length_controlled_win_rate([prefs[i] for i in keep], [count_tokens(answers[i][0].text) for i in keep],
                                    [count_tokens(reference_answers[i][0].text) for i in keep])
    return {"win_rate": win, "standard_error": se, "length_controlled": lc, "n": len(keep), "unreadable": len(prefs) - len(keep)}


class Estimate(tuple):
    """(value, low, high): a statistic and its bootstrap interval. Unpacks as a 3-tuple, and also says
    how many turns it rests on (`rated`) and how many were left out for want of a rating (`unrated`)."""

    def __new__(cls, value: float, low: float, high: float, rated: int, unrated: int):
        self = super().__new__(cls, (value, low, high))
        self.rated, self.unrated = rated, unrated
        return self

    def __repr__(self) -> str:
        return f"{self[0]:.3f} [{self[1]:.3f}, {self[2]:.3f}] ({self.rated} turns rated, {self.unrated} unrated)"


def _ratings_of(per_prompt, name: str) -> np.ndarray:
    """Per prompt: (sum of rated turns, number of rated turns), as a (prompts, 2) array; checks every value."""
    rows = []
    for i, turns in enumerate(per_prompt):
        rated = []
        for k, r in enumerate(turns):
            if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)):
                raise ValueError(f"{name}: prompt {i}, turn {k} has rating {r!r}; expected a number or None (no rating)")
            if r is not None:
                rated.append(r)
        rows.append((sum(rated), len(rated)))
    return np.array(rows, dtype=float).reshape(-1, 2)


def _bootstrap(rows: np.ndarray, statistic, samples: int, seed: int, level: float) -> tuple[float, float, float]:
    """(value, low, high): `statistic` of the column totals of `rows` (one row per prompt), and its
    percentile interval over `samples` resamples of the rows with replacement. `statistic` maps an array of
    totals, one row per resample, to one value each (NaN where it is undefined)."""
    if samples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs samples >= 1 and 0 < level < 1, got {samples} and {level}")
    draws = np.random.default_rng(seed).integers(0, len(rows), size=(samples, len(rows)))  # row indices per resample
    stats = statistic(rows[draws].sum(axis=1))
    stats = stats[~np.isnan(stats)]
    if len(stats) < 0.99 * samples:
        raise ValueError(f"bootstrap: {samples - len(stats)} of {samples} resamples had no rated turn for a model; "
                         "too few rated turns to give an interval")
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(statistic(rows.sum(axis=0, keepdims=True))[0]), float(low), float(high)


def _mean_rating(totals: np.ndarray) -> np.ndarray:
    """Per row of totals (sum of ratings, rated turns): the mean rating, NaN with no rated turn."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals[:, 1] > 0, totals[:, 0] / totals[:, 1], np.nan)


def paired_bootstrap(scores_a: list[list[float | None]], scores_b: list[list[float | None]], samples: int = 2000,
                     seed: int = 0, level: float = 0.95) -> Estimate:
    """score(A) - score(B), each the mean over that model's rated turns (so it equals the difference of the
    two reported scores), with a percentile confidence interval from resampling *prompts*: both turns of a
    prompt stay together, and A and B stay paired. The two must hold the same prompts with the same number
    of turns, or a ValueError names the first mismatch. Returns (difference, low, high), with `.rated`
    (turns) and `.unrated` (turns missing a rating of either model)."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"paired_bootstrap: A has ratings for {len(scores_a)} prompts and B for {len(scores_b)}; "
                         "a paired comparison needs the same prompts, in the same order")
    for i, (a, b) in enumerate(zip(scores_a, scores_b)):
        if len(a) != len(b):
            raise ValueError(f"paired_bootstrap: prompt {i} has {len(a)} turns for A and {len(b)} for B; every prompt "
                             "needs one entry per turn for both (None for a turn without a rating)")
    rows = np.hstack([_ratings_of(scores_a, "A"), _ratings_of(scores_b, "B")])  # sum A, rated A, sum B, rated B
    rows = rows[(rows[:, 1] > 0) | (rows[:, 3] > 0)]
    for name, rated in (("A", rows[:, 1]), ("B", rows[:, 3])):
        if not rated.any():
            raise ValueError(f"paired_bootstrap: {name} has no rated turn")

    def difference(totals):  # NaN for a resample without a rated turn of one model (counted by `_bootstrap`)
        return _mean_rating(totals[:, :2]) - _mean_rating(totals[:, 2:])

    turns = sum(len(a) for a in scores_a)
    unrated = sum(x is None or y is None for a, b in zip(scores_a, scores_b) for x, y in zip(a, b))
    return Estimate(*_bootstrap(rows, difference, samples, seed, level), turns - unrated, unrated)


def score_ci(grades: Grades, samples: int = 2000, seed: int = 0, max_failure_share: float = 0.02) -> Estimate:
    """A model's MT-Bench score (mean over rated turns) with a 95% bootstrap interval (resampling
    prompts), and how many turns were rated and unrated. More than `max_failure_share` unrated turns
    raise `TooManyJudgeFailures` instead of giving a score."""
    check_failure_share(grades.failures, grades.turns, max_failure_share, "MT-Bench-style grading")
    rows = _ratings_of(grades.per_prompt, "grades")
    rows = rows[rows[:, 1] > 0]
    if not len(rows):
        raise ValueError("score_ci: no turn has a rating")
    return Estimate(*_bootstrap(rows, _mean_rating, samples, seed, 0.95), grades.turns - grades.failures, grades.failures)


def adherence_of(answers: list[list[Completion]], prompts: list[dict] | None = None, addresses=None) -> float:
    """Share of all answered turns that follow the chat template (see `adheres`; `addresses` needs the
    `prompts` the answers reply to)."""
    checks = [adheres(conversation_upto(p, a, k) if addresses else [], a[k], addresses)
              for p, a in zip(prompts or [None] * len(answers), answers) for k in range(len(a))]
    return sum(checks) / len(checks)


def constant_answers(prompts: list[dict], text: str = "I don't know.") -> list[list[Completion]]:
    """The same finished answer to every turn: a baseline that has learnt nothing but to stop."""
    return [[Completion(text, True, 0) for _ in p["turns"]] for p in prompts]


def grade_model(judge, prompts: list[dict], answers: list[list[Completion]], samples: int = 2000, seed: int = 0,
                max_failure_share: float = 0.02, progress: bool = True) -> dict:
    """One model's results: score with its 95% bootstrap CI and how many turns were rated, per-turn
    scores, template adherence (with the judge's `addresses` check where it has one) and the ratings.
    More than `max_failure_share` unrated turns raise `TooManyJudgeFailures`."""
    grades = grade_answers(judge, prompts, answers, progress=progress)
    score = score_ci(grades, samples, seed, max_failure_share)
    return {"score": score[0], "ci95": list(score[1:3]), "rated_turns": score.rated, "unrated_turns": score.unrated,
            "turn_scores": [grades.turn_score(k) for k in range(2)], "grading_failures": grades.failures,
            "adherence": adherence_of(answers, prompts, getattr(judge, "addresses", None)),
            "ratings": grades.per_prompt}


def head_to_head(judge, prompts: list[dict], answers_a, answers_b, ratings_a, ratings_b, samples: int = 2000,
                 seed: int = 0, max_failure_share: float = 0.02, progress: bool = True) -> dict:
    """Model A against model B: the judged score difference A - B with its paired 95% CI, and the
    pairwise comparison of every turn in both answer orders (wins, losses, ties, win rate)."""
    pair = compare_models(judge, prompts, answers_a, answers_b, progress=progress)
    check_failure_share(pair.failures, pair.n + pair.failures, max_failure_share, "pairwise comparisons")
    difference = paired_bootstrap(ratings_a, ratings_b, samples, seed)
    return {"difference": difference[0], "ci95": list(difference[1:3]), "unrated_turns": difference.unrated, "wins": pair.wins, "losses": pair.losses, "ties": pair.ties,
            "failures": pair.failures, "win_rate": pair.win_rate, "position_consistency": pair.consistency}


CONSTANT = "constant:"  # a model spec "constant:<text>" answers every turn with <text>


def evaluate(recipe, models: dict[str, str], compare: tuple[str, str] | None = None, progress: bool = True,
             answered: dict[str, list[list[Completion]]] | None = None) -> tuple[dict, dict]:
    """Answer the recipe's eval prompts with each model (name -> path, Hub id, or "constant:<text>"),
    grade every turn, and compare `compare = (a, b)` head to head. Returns (results, answers). `answered`:
    answers an earlier `evaluate` of this recipe already made, by model name; those models are not asked again."""
    prompts = load_eval_prompts(recipe.prompts, world_seed=recipe.world_seed)
    answered = answered or {}
    check_same_prompts(prompts, **answered)

    def answer(name: str, source: str) -> list[list[Completion]]:
        if name in answered:
            return answered[name]
        if source.startswith(CONSTANT):
            return constant_answers(prompts, source[len(CONSTANT):])
        return answer_model(recipe, source, prompts, progress)

    answers = {name: answer(name, source) for name, source in models.items()}  # one model at a time
    judge = make_judge(recipe.judge, recipe.judge_base_url, world_seed=recipe.world_seed)  # after: a local judge gets the GPU
    results = {"judge": judge.name, "prompts": len(prompts), "world_seed": recipe.world_seed, "models": {}}
    for name in models:
        results["models"][name] = grade_model(judge, prompts, answers[name], recipe.bootstrap_samples, recipe.seed,
                                              recipe.max_judge_failure_share, progress)
    if compare:
        a, b = compare
        results["pairwise"] = {"a": a, "b": b, **head_to_head(judge, prompts, answers[a], answers[b],
                                                              results["models"][a]["ratings"], results["models"][b]["ratings"],
                                                              recipe.bootstrap_samples, recipe.seed,
                                                              recipe.max_judge_failure_share, progress)}
    if recipe.reference:
        results["alpaca_eval"] = against_reference(recipe, judge, prompts, answers, progress)
    return results, answers


def against_reference(recipe, judge, prompts: list[dict], answers: dict, progress: bool = True) -> dict:
    """AlpacaEval-style (`alpaca_eval`): each model's first answers against those of `recipe.reference`, win rate
    and length-controlled win rate, lengths in characters as AlpacaEval measures them."""
    first_turns = [{**p, "turns": p["turns"][:1]} for p in prompts]
    reference = answer_model(recipe, recipe.reference, first_turns, progress)
    return {"reference": recipe.reference, "models": {
        name: alpaca_eval(judge, prompts, model_answers, reference, len, progress, recipe.max_judge_failure_share)
        for name, model_answers in answers.items()}}


def run_eval(recipe, run_name: str = "eval"):
    """`zephyr eval`: answer the eval prompts with each of `recipe.models`, grade every turn, compare the
    last model with the one before it (score difference and pairwise), and write `results.json` in
    runs/<scale>/eval/. A recipe with `benchmarks` (demo/full) runs those instead: see
    `benchmarks.run_benchmarks`."""
    if recipe.benchmarks:
        return run_benchmarks(recipe, run_name)

    out = runs.stage_dir(recipe, run_name)
    models = {name: name if name.startswith(CONSTANT) else runs.resolve(name, recipe.scale, recipe.preset, recipe.world_seed)
              for name in recipe.models}
    runs.begin(out)
    compare = (recipe.models[-1], recipe.models[-2]) if len(recipe.models) >= 2 else None
    results, _ = evaluate(recipe, models, compare)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    runs.write_run_info(out, recipe, [])
    runs.write_manifest(out, "eval", recipe, {n: p for n, p in models.items() if not n.startswith(CONSTANT)},
                        {"results": "results.json"}, run_name)
    return out
