import math
import random

import pytest

from zephyr_utils.evaluation import (Grades, combine_orders, compare_models, length_controlled_win_rate,
                                     mean_and_standard_error, paired_bootstrap, win_rate)
from zephyr_utils.generation import Completion


def test_win_rate_counts_ties_as_half():
    assert win_rate(3, 2, 10) == 0.4
    assert win_rate(0, 4, 4) == 0.5
    with pytest.raises(ValueError):
        win_rate(0, 0, 0)


@pytest.mark.parametrize("first, swapped, expected", [
    ("A", "B", "A"), ("B", "A", "B"), ("A", "A", "tie"), ("B", "B", "tie"), ("tie", "tie", "tie"),
    ("A", "tie", "tie"), (None, "A", None), ("A", None, None),
])
def test_both_orders_must_agree_for_a_win(first, swapped, expected):
    assert combine_orders(first, swapped) == expected


class ScriptedJudge:
    """compare() answers from a function of (answer shown first, answer shown second)."""

    def __init__(self, fn):
        self.fn = fn

    def compare_many(self, items, progress=True):
        return [(self.fn(a, b), "") for _, a, b in items]


def answers(texts):
    return [[Completion(t, True, 1)] for t in texts]


PROMPTS = [{"prompt_id": str(i), "turns": [f"q{i}"]} for i in range(4)]


def test_pairwise_with_an_order_consistent_judge():
    judge = ScriptedJudge(lambda a, b: "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")
    result = compare_models(judge, PROMPTS, answers(["long", "long", "x", "same"]), answers(["s", "s", "long", "same"]))
    assert (result.wins, result.losses, result.ties, result.failures) == (2, 1, 1, 0)
    assert result.win_rate == (2 + 0.5) / 4 and result.consistency == 1.0


def test_pairwise_with_a_position_biased_judge_is_all_ties():
    judge = ScriptedJudge(lambda a, b: "A")  # always prefers the first answer shown
    result = compare_models(judge, PROMPTS, answers(["a"] * 4), answers(["b"] * 4))
    assert (result.wins, result.ties, result.win_rate, result.consistency) == (0, 4, 0.5, 0.0)
    unreadable = compare_models(ScriptedJudge(lambda a, b: None), PROMPTS, answers(["a"] * 4), answers(["b"] * 4))
    assert unreadable.failures == 4 and unreadable.n == 0


def test_alpacaeval_mean_and_standard_error():
    mean, se = mean_and_standard_error([1, 0, 1, 0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 3) / 2)


def test_length_controlled_win_rate_equals_raw_when_lengths_are_equal():
    prefs = [1, 1, 0, 0.5, 1, 0, 1, 1]
    assert length_controlled_win_rate(prefs, [10] * 8, [10] * 8) == pytest.approx(sum(prefs) / 8, abs=1e-6)


def test_length_controlled_win_rate_discounts_wins_bought_with_length():
    # 80 comparisons where the model's answer is 40 tokens longer (it wins 70% of them) and 20 where it is
    # 40 tokens shorter (it wins 30%). The fitted logits are +-0.847 around theta = 0: at equal length the
    # model is a coin toss, although its raw win rate is 62%.
    prefs = [1.0] * 56 + [0.0] * 24 + [1.0] * 6 + [0.0] * 14
    lengths = [140] * 80 + [60] * 20
    assert sum(prefs) / 100 == 0.62
    assert length_controlled_win_rate(prefs, lengths, [100] * 100) == pytest.approx(0.5, abs=1e-6)


def test_paired_bootstrap_on_known_distributions():
    b = [[5.0, 6.0]] * 50
    assert paired_bootstrap([[6.0, 7.0]] * 50, b) == (1.0, 1.0, 1.0)
    rng = random.Random(1)
    diffs = [rng.gauss(0.5, 1.0) for _ in range(400)]
    mean, low, high = paired_bootstrap([[d] for d in diffs], [[0.0]] * 400, samples=2000)
    half_width = 1.96 / math.sqrt(400)  # the normal approximation for sd 1
    assert low < 0.5 < high and abs((high - low) / 2 - half_width) < 0.03


def test_paired_bootstrap_keeps_the_turns_of_a_prompt_together():
    # each prompt: +1 on turn 1, -1 on turn 2. Resampling prompts keeps every mean at 0 exactly;
    # resampling turns independently would not.
    mean, low, high = paired_bootstrap([[1.0, -1.0]] * 30, [[0.0, 0.0]] * 30)
    assert (mean, low, high) == (0.0, 0.0, 0.0)


def test_grades_count_failures_and_average_rated_turns():
    g = Grades([[8.0, None], [6.0, 4.0]])
    assert g.failures == 1 and g.score == 6.0 and g.turn_score(0) == 7.0 and g.turn_score(1) == 4.0
    with pytest.raises(ValueError, match="no prompt"):
        paired_bootstrap([[None]], [[1.0]])


def test_run_eval_writes_scores_cis_and_a_pairwise_comparison(tmp_path, tiny_base_path):
    import json

    from zephyr_utils.config import load_recipe
    from zephyr_utils.evaluation import run_eval

    out = run_eval(load_recipe("eval", "tiny", models=["base", "tiny"], output_dir=str(tmp_path / "eval"), bootstrap_samples=200))
    results = json.loads((out / "results.json").read_text())
    assert results["judge"] == "toy" and results["prompts"] >= 80
    for name in ("base", "tiny"):  # the same model under two names
        m = results["models"][name]
        assert m["ci95"][0] <= m["score"] <= m["ci95"][1] and m["grading_failures"] == 0 and m["template_adherence"] < 0.2
    pair = results["pairwise"]
    assert pair["wins"] == pair["losses"] == 0 and pair["win_rate"] == 0.5 and pair["score_difference"] == 0.0


def test_mt_bench_prompts_are_loaded_at_run_time(monkeypatch):
    import datasets

    from zephyr_utils.evaluation import load_eval_prompts

    rows = [{"prompt_id": 81, "category": "writing", "prompt": ["Write a poem.", "Now shorter."]},
            {"prompt_id": 82, "category": "math", "prompt": ["What is 2+2?", "And 3+3?"]}]
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or datasets.Dataset.from_list(rows))
    prompts = load_eval_prompts("HuggingFaceH4/mt_bench_prompts", "train")
    assert calls == [(("HuggingFaceH4/mt_bench_prompts",), {"split": "train"})]
    assert prompts[1] == {"prompt_id": "82", "turns": ["What is 2+2?", "And 3+3?"], "category": "math"}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list([{"prompt": [""]}]))
    with pytest.raises(ValueError, match="row 0 has no usable"):
        load_eval_prompts("x/y")


def test_alpaca_eval_summary_with_equal_lengths():
    from zephyr_utils.evaluation import alpaca_eval

    judge = ScriptedJudge(lambda a, b: "A" if a.startswith("good") else "B" if b.startswith("good") else "tie")
    model = answers(["good 1", "good 2", "bad 3", "tie 4"])
    reference = answers(["ref 1", "ref 2", "good 3", "tie 4"])
    r = alpaca_eval(judge, PROMPTS, model, reference, count_tokens=lambda text: 2, progress=False)
    assert r["win_rate"] == (2 + 0.5) / 4 and r["length_controlled"] == pytest.approx(r["win_rate"], abs=1e-6)
    assert r["standard_error"] == pytest.approx(mean_and_standard_error([1, 1, 0, 0.5])[1])
