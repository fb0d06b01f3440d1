import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from zephyr_utils.aif import JsonlLog, assign_models, binarize, mean_ratings, parse_pool_member
from zephyr_utils.data import validate_preference_row

PROMPTS = [{"prompt": f"Q{i}?", "prompt_id": f"p{i}", "messages": [{"role": "user", "content": f"Q{i}?"}]} for i in range(3)]


def completions_for(prompt_id, texts):
    return {(prompt_id, m): {"prompt_id": prompt_id, "model": m, "completion": t} for m, t in texts.items()}


def test_chosen_is_best_and_rejected_is_a_random_lower_one():
    comps = completions_for("p0", {"a": "best", "b": "mid", "c": "low", "d": "worst"})
    scores = {("p0", "a"): 9.0, ("p0", "b"): 6.0, ("p0", "c"): 4.0, ("p0", "d"): 1.0}
    rejected = Counter()
    for seed in range(200):
        pairs, counts = binarize(PROMPTS[:1], comps, scores, seed=seed)
        (pair,) = pairs
        assert pair["chosen"][-1]["content"] == "best" and pair["score_chosen"] == 9.0
        rejected[pair["rejected"][-1]["content"]] += 1
        validate_preference_row(pair, 0, "binarized")
        assert pair["messages"] == pair["chosen"] and pair["prompt"] == "Q0?"
    assert set(rejected) == {"mid", "low", "worst"} and min(rejected.values()) > 40  # random, not the worst
    assert binarize(PROMPTS[:1], comps, scores, seed=7) == binarize(PROMPTS[:1], comps, scores, seed=7)


def test_ties_missing_ratings_and_identical_texts():
    comps = {}
    comps.update(completions_for("p0", {"a": "x", "b": "y", "c": "z"}))  # all tied
    comps.update(completions_for("p1", {"a": "top1", "b": "top2", "c": "low", "d": "unrated"}))  # tie at the top
    comps.update(completions_for("p2", {"a": "same", "b": "same", "c": "other"}))  # identical text scored lower
    scores = {("p0", "a"): 5.0, ("p0", "b"): 5.0, ("p0", "c"): 5.0,
              ("p1", "a"): 8.0, ("p1", "b"): 8.0, ("p1", "c"): 3.0, ("p1", "d"): None,
              ("p2", "a"): 9.0, ("p2", "b"): 7.0, ("p2", "c"): 2.0}
    tops = Counter()
    for seed in range(50):
        pairs, counts = binarize(PROMPTS, comps, scores, seed=seed)
        assert counts == {"prompts": 3, "pairs": 2, "all_tied": 1, "too_few_rated": 0, "unrated_completions": 1}
        by_id = {p["prompt_id"]: p for p in pairs}
        assert by_id["p1"]["rejected"][-1]["content"] == "low"  # a tied top answer is never the rejected one
        tops[by_id["p1"]["chosen"][-1]["content"]] += 1
        assert by_id["p2"]["rejected"][-1]["content"] == "other"  # never the chosen text again
    assert set(tops) == {"top1", "top2"}  # ties at the top are broken at random


def test_mean_ratings_need_all_four_aspects(tmp_path):
    log = JsonlLog(tmp_path / "r.jsonl", ("prompt_id", "model", "aspect"))
    aspects = ["instruction_following", "truthfulness", "honesty", "helpfulness"]
    log.append([{"prompt_id": "p", "model": "a", "aspect": a, "rating": r} for a, r in zip(aspects, [10, 8, 6, 4])])
    log.append([{"prompt_id": "p", "model": "b", "aspect": a, "rating": r} for a, r in zip(aspects, [10, None, 6, 4])])
    log.append([{"prompt_id": "p", "model": "c", "aspect": "honesty", "rating": 9}])
    assert mean_ratings(log) == {("p", "a"): 7.0, ("p", "b"): None, ("p", "c"): None}


def test_jsonl_log_resumes_without_duplicates_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "c.jsonl"
    log = JsonlLog(path, ("prompt_id", "model"))
    log.append([{"prompt_id": "p1", "model": "a", "x": 1}, {"prompt_id": "p2", "model": "a", "x": 2}])
    log.append([{"prompt_id": "p1", "model": "a", "x": 99}])  # already there: not written again
    with path.open("a") as f:
        f.write('{"prompt_id": "p3", "mod')  # a write cut short by SIGKILL
    again = JsonlLog(path, ("prompt_id", "model"))
    assert set(again.records) == {("p1", "a"), ("p2", "a")} and again.records[("p1", "a")]["x"] == 1
    again.append([{"prompt_id": "p3", "model": "a", "x": 3}])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    path.write_text('{"prompt_id": "p1", "model": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"c\.jsonl: line 2 is not valid JSON"):
        JsonlLog(path, ("prompt_id", "model"))


def test_pool_members_and_assignment():
    assert parse_pool_member("sft@0.7") == ("sft", 0.7)
    assert parse_pool_member("org/model", 0.9) == ("org/model", 0.9)
    with pytest.raises(ValueError, match="model@temperature"):
        parse_pool_member("sft@hot")
    pool = [f"m{i}" for i in range(17)]
    assigned = assign_models(PROMPTS * 1, pool, 4, seed=0)
    assert all(len(v) == 4 and len(set(v)) == 4 for v in assigned.values())
    assert assign_models(PROMPTS, ["a", "b"], 4, seed=0)["p0"] == ["a", "b"]


def test_killed_collection_resumes_with_no_record_lost_or_duplicated(tmp_path, tiny_base_path):
    out = tmp_path / "aif"
    cmd = [sys.executable, "-m", "zephyr_utils.cli", "aif", "--scale", "tiny", "--set", f"output_dir={out}",
           "--set", "pool=[base@1.0, base@0.3]", "--set", "batch_size=16", "--set", "max_prompts=160"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log_path, deadline = out / "completions.jsonl", time.time() + 240
    while not (log_path.is_file() and log_path.read_text().count("\n") >= 48):
        assert first.poll() is None, "collection finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = log_path.read_text().count("\n")
    assert 48 <= before < 320 and not (out / "summary.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [(r["prompt_id"], r["model"]) for r in map(json.loads, log_path.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 320  # 160 prompts x 2 pool members, each exactly once
    ratings = [json.loads(line) for line in (out / "ratings.jsonl").read_text().splitlines()]
    assert len(ratings) == 320 * 4 and all(r["rating"] is not None for r in ratings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == 160 and summary["missing_ratings"] == 0
    print(f"\nkilled after {before} of 320 completions; resumed and finished: {summary}")
