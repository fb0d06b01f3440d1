import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from zephyr_utils.aif import (RATING_KEY, JsonlLog, assign_models, binarize, collect_ratings, mean_ratings, parse_pool_member,
                              text_hash)
from zephyr_utils.data import validate_preference_row
from zephyr_utils.judges import Judge
from zephyr_utils.rubric import ASPECTS, top_rating

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
    comps.update(completions_for("p2", {"a": "same", "b": "same", "c": "other", "e": "  "}))  # identical text scored lower
    scores = {("p0", "a"): 5.0, ("p0", "b"): 5.0, ("p0", "c"): 5.0,
              ("p1", "a"): 8.0, ("p1", "b"): 8.0, ("p1", "c"): 3.0, ("p1", "d"): None,
              ("p2", "a"): 9.0, ("p2", "b"): 7.0, ("p2", "c"): 2.0, ("p2", "e"): 10.0}  # an empty completion is never chosen, however rated
    tops = Counter()
    for seed in range(50):
        pairs, counts = binarize(PROMPTS, comps, scores, seed=seed)
        assert counts == {"prompts": 3, "pairs": 2, "all_tied": 1, "too_few_rated": 0, "unrated_completions": 1,
                          "empty_completions": 1}
        by_id = {p["prompt_id"]: p for p in pairs}
        assert by_id["p1"]["rejected"][-1]["content"] == "low"  # a tied top answer is never the rejected one
        tops[by_id["p1"]["chosen"][-1]["content"]] += 1
        assert by_id["p2"]["rejected"][-1]["content"] == "other"  # never the chosen text again
    assert set(tops) == {"top1", "top2"}  # ties at the top are broken at random


def completion_log(tmp_path, texts):
    log = JsonlLog(tmp_path / "c.jsonl", ("prompt_id", "model"))
    log.append([{"prompt_id": "p", "model": m, "completion": t} for m, t in texts.items()])
    return log


def rate(log, model, text, values):
    log.append([{"prompt_id": "p", "model": model, "aspect": a, "completion_sha256": text_hash(text), "rating": r}
                for a, r in zip(ASPECTS, values) if r != "skip"], replace=True)


def test_mean_ratings_need_all_four_aspects_of_the_same_text(tmp_path):
    completions = completion_log(tmp_path, {"a": "A", "b": "B", "c": "C", "d": "D"})
    log = JsonlLog(tmp_path / "r.jsonl", RATING_KEY)
    rate(log, "a", "A", [10, 8, 6, 4])
    rate(log, "b", "B", [10, None, 6, 4])  # one failed
    rate(log, "c", "C", ["skip", "skip", 9, "skip"])  # three missing
    rate(log, "d", "an older text of d", [9, 9, 9, 9])  # ratings of another text do not count for D
    assert mean_ratings(log, completions) == {("p", "a"): 7.0, ("p", "b"): None, ("p", "c"): None, ("p", "d"): None}
    rate(log, "b", "B", [10, 2, 6, 4])  # a retried rating replaces the failure, on disk too
    again = JsonlLog(tmp_path / "r.jsonl", RATING_KEY)
    assert mean_ratings(again, completions)[("p", "b")] == 5.5 and len(again.path.read_text().splitlines()) == 4 * 3 + 1 + 4


class ScriptedJudge(Judge):
    """Rates by the answer's length; the answers in `fail` get an unreadable verdict until `healthy`."""

    name = "scripted"

    def __init__(self, fail=()):
        self.fail, self.healthy, self.asked = set(fail), False, []

    def _verdict(self, conversation, response, aspect, attempt):
        self.asked.append((response, aspect))
        if response in self.fail and not self.healthy:
            return "I cannot rate this."
        return f"Fine.\nRating: [[{min(top_rating(aspect), len(response))}]]"  # aspects are rated 1-5


def test_failed_ratings_are_asked_again_and_edited_completions_are_rated_anew(tmp_path):
    prompts = [{"prompt_id": "p", "prompt": "Q?", "messages": [{"role": "user", "content": "Q?"}]}]
    completions = completion_log(tmp_path, {"a": "four", "b": "sixsix", "c": "x"})
    ratings = JsonlLog(tmp_path / "r.jsonl", RATING_KEY)
    judge = ScriptedJudge(fail={"x"})
    collect_ratings(prompts, completions, judge, ratings, progress=False)
    assert len(judge.asked) == 4 * 2 + 4 * 3  # "x" was asked three times per aspect, then recorded as failed
    failed = [r for r in ratings.records.values() if r["rating"] is None]
    assert len(failed) == 4 and all(r["error"].startswith("unreadable verdict") for r in failed)
    judge.asked.clear()
    collect_ratings(prompts, completions, judge, ratings, progress=False)  # still failing: asked again, still failed
    assert {r for r, _ in judge.asked} == {"x"}
    judge.healthy, judge.asked = True, []
    collect_ratings(prompts, JsonlLog(tmp_path / "c.jsonl", ("prompt_id", "model")), judge, JsonlLog(tmp_path / "r.jsonl", RATING_KEY),
                    progress=False)
    assert sorted(judge.asked) == sorted(("x", a) for a in ASPECTS)  # only the failed ones
    ratings = JsonlLog(tmp_path / "r.jsonl", RATING_KEY)
    assert mean_ratings(ratings, completions) == {("p", "a"): 4.0, ("p", "b"): 5.0, ("p", "c"): 1.0}
    # a completion regenerated with another text does not inherit the old text's ratings
    lines = completions.path.read_text().replace('"completion": "four"', '"completion": "fourfourfour"')
    completions.path.write_text(lines)
    completions = JsonlLog(tmp_path / "c.jsonl", ("prompt_id", "model"))
    assert mean_ratings(ratings, completions)[("p", "a")] is None
    judge.asked = []
    collect_ratings(prompts, completions, judge, ratings, progress=False)
    assert {r for r, _ in judge.asked} == {"fourfourfour"} and mean_ratings(ratings, completions)[("p", "a")] == 5.0


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
    assigned = assign_models(PROMPTS, pool, 4, seed=0)
    assert all(len(v) == 4 and len(set(v)) == 4 for v in assigned.values())
    assert assign_models(PROMPTS, ["a", "b"], 4, seed=0)["p0"] == ["a", "b"]


class FakeSampler:
    """Stands in for a model: like real batched sampling, each text depends on the batch's seed, its
    prompts and the position in the batch. Raises after `die_after` batches (a kill)."""

    calls = 0
    die_after = None

    def __init__(self, path, backend="auto", batch_size=64, dtype="auto"):
        self.path = path

    def __call__(self, conversations, max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0, progress=False):
        from zephyr_utils.generation import Completion

        FakeSampler.calls += 1
        if FakeSampler.die_after is not None and FakeSampler.calls > FakeSampler.die_after:
            raise KeyboardInterrupt("killed")
        rng = random.Random(f"{self.path}|{temperature}|{seed}|{[c[-1]['content'] for c in conversations]}")
        return [Completion(f"{c[-1]['content']} {rng.randrange(10**6)}", True, 5) for c in conversations]

    def close(self):
        pass


@pytest.fixture
def fake_pool(monkeypatch):
    import zephyr_utils.aif

    monkeypatch.setattr(zephyr_utils.aif, "Sampler", FakeSampler)
    FakeSampler.calls, FakeSampler.die_after = 0, None
    return FakeSampler


def aif_recipe(out, **kw):
    from zephyr_utils.config import load_recipe

    values = dict(output_dir=str(out), pool=["teacher", "m@1.0", "m@0.5", "n@1.0", "n@0.5"], completions_per_prompt=4,
                  max_prompts=40, batch_size=8)
    return load_recipe("aif", "tiny", **{**values, **kw})


def test_resumed_sampling_writes_what_an_uninterrupted_run_writes(tmp_path, fake_pool):
    """Killed in the middle of a pool member's batches, with half a batch on disk and a torn line,
    the rerun's completions are those of an uninterrupted run: batches are cut from the member's full
    list of prompts and seeded by their place in it, not by what is left to do."""
    from zephyr_utils.aif import collect_completions, load_prompts

    recipe = aif_recipe(tmp_path / "whole")
    prompts = load_prompts(recipe)
    whole = JsonlLog(tmp_path / "whole.jsonl", ("prompt_id", "model"))
    collect_completions(prompts, recipe, whole, progress=False)
    assert len(whole.records) == 40 * 4

    fake_pool.calls, fake_pool.die_after = 0, 5  # dies in the second member ("m@0.5")
    log_path = tmp_path / "killed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        collect_completions(prompts, recipe, JsonlLog(log_path, ("prompt_id", "model")), progress=False)
    lines = log_path.read_text().splitlines()
    log_path.write_text("\n".join(lines[:-3]) + '\n{"prompt_id": "to')  # half a batch on disk, a torn last line
    fake_pool.die_after = None
    resumed = JsonlLog(log_path, ("prompt_id", "model"))
    assert 0 < len(resumed.records) < len(whole.records)
    collect_completions(prompts, recipe, resumed, progress=False)
    assert JsonlLog(log_path, ("prompt_id", "model")).records == whole.records


def test_a_rerun_with_other_sampling_settings_is_refused(tmp_path, fake_pool):
    from zephyr_utils.aif import run_aif

    run_aif(aif_recipe(tmp_path / "aif", max_prompts=10), judge=ScriptedJudge(), progress=False)
    with pytest.raises(ValueError, match=r"sampled with batch_size=8, but this recipe has batch_size=16"):
        run_aif(aif_recipe(tmp_path / "aif", max_prompts=10, batch_size=16), judge=ScriptedJudge(), progress=False)


def test_summary_lists_what_is_missing_and_too_many_failures_write_no_pairs(tmp_path, fake_pool):
    from zephyr_utils.aif import run_aif
    from zephyr_utils.judges import TooManyJudgeFailures

    out = tmp_path / "aif"
    run_aif(aif_recipe(out, max_prompts=20), judge=ScriptedJudge(), progress=False)
    assert (out / "preferences" / "train.jsonl").is_file()
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    bad = {c["completion"] for c in completions[:1]}  # 4 of 320 ratings fail: 1.25%, under the 2% allowed
    (out / "ratings.jsonl").unlink()
    run_aif(aif_recipe(out, max_prompts=20), judge=ScriptedJudge(fail=bad), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["missing_ratings"] == 4 and summary["ratings"] == 320
    assert {(m["prompt_id"], m["aspect"]) for m in summary["missing"]} == {(completions[0]["prompt_id"], a) for a in ASPECTS}
    assert all(m["error"].startswith("unreadable verdict") for m in summary["missing"])

    bad = {c["completion"] for c in completions[:2]}  # 8 of 320: 2.5%
    (out / "ratings.jsonl").unlink()
    with pytest.raises(TooManyJudgeFailures, match=r"(?s)8 of 320 judgements \(2.5%\).*rerunning `zephyr aif`"):
        run_aif(aif_recipe(out, max_prompts=20), judge=ScriptedJudge(fail=bad), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and len(summary["missing"]) == 8 and summary["pairs"] == 0
    assert not (out / "preferences" / "train.jsonl").exists()  # no pairs that disagree with the logs
    run_aif(aif_recipe(out, max_prompts=20, max_judge_failure_share=0.05), judge=ScriptedJudge(fail=bad), progress=False)
    assert json.loads((out / "summary.json").read_text())["status"] == "partial"


# A pool of the toy teacher and the tiny base model sampled at three temperatures, as in the review.
POOL = "pool=[teacher, tiny@1.0, tiny@0.3, tiny@1.5]"

KILLER = r"""
import json, os, signal, sys
from zephyr_utils import aif

point, nth, calls = sys.argv[1], int(sys.argv[2]), []


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point in ("sampling", "judging"):  # the nth append: half of it written, then a torn line, then SIGKILL
    name, append = ("completions.jsonl" if point == "sampling" else "ratings.jsonl"), aif.JsonlLog.append

    def cut_append(self, records, replace=False):
        if self.path.name == name:
            calls.append(1)
            if len(calls) == nth:
                append(self, records[: len(records) // 2], replace)
                with self.path.open("a") as f:
                    f.write('{"prompt_id": "to')
                die()
        append(self, records, replace)

    aif.JsonlLog.append = cut_append
else:  # writing the pairs: the nth file half written, then SIGKILL
    write_jsonl = aif.write_jsonl

    def cut_write(rows, path):
        calls.append(1)
        if len(calls) == nth:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows[: len(rows) // 2]) + '{"prompt')
            die()
        return write_jsonl(rows, path)

    aif.write_jsonl = cut_write
from zephyr_utils.cli import main

main(sys.argv[3:])
"""


def test_sigkilled_aif_reruns_to_the_uninterrupted_runs_pairs(tmp_path, tiny_base_path, monkeypatch):
    """`zephyr aif --scale tiny` killed with SIGKILL while sampling (mid-member, half a batch on disk),
    while judging and while writing the pairs; each time rerun. The end: the pairs, completions, ratings
    and summary of an uninterrupted run, byte for byte. (The killed runs have a process each; the
    uninterrupted run and the last rerun run in this one.)"""
    from zephyr_utils.cli import main

    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path / "runs"))

    def args(out):
        return ["aif", "--scale", "tiny", "--set", f"output_dir={out}", "--set", POOL, "--set", "batch_size=16",
                "--set", "max_prompts=32"]

    def killed_aif(out, *kill):
        done = subprocess.run([sys.executable, "-c", KILLER, *kill, *args(out)], env=dict(os.environ), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == -9, done.stderr[-3000:]

    main(args(tmp_path / "whole"))
    out = tmp_path / "killed"
    killed_aif(out, "sampling", "4")  # teacher: 2 batches of 16; tiny@1.0: its second batch is cut in half
    lines = (out / "completions.jsonl").read_text().split("\n")
    assert 3 * 16 < len(lines) < 4 * 16 and lines[-1] == '{"prompt_id": "to' and not (out / "ratings.jsonl").exists()
    killed_aif(out, "judging", "2")  # resumes sampling, then dies in the second (last) chunk of 256 ratings
    assert len((out / "completions.jsonl").read_text().splitlines()) == 4 * 32
    assert 256 < len((out / "ratings.jsonl").read_text().split("\n")) < 512 and not (out / "summary.json").exists()
    killed_aif(out, "writing", "2")  # train.jsonl written, test.jsonl cut short
    assert (out / "preferences" / "train.jsonl").is_file() and not (out / "preferences" / "test.jsonl").exists()
    assert not (out / "manifest.json").exists()  # a killed run is never a finished one
    main(args(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "aif" and manifest["inputs"]["pool:tiny"]["path"] == str(tiny_base_path)
    whole = tmp_path / "whole"
    for name in ("preferences/train.jsonl", "preferences/test.jsonl", "summary.json"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert not list((out / "preferences").glob("*.tmp"))
    for name, key in (("completions.jsonl", ("prompt_id", "model")), ("ratings.jsonl", RATING_KEY)):
        assert JsonlLog(out / name, key).records == JsonlLog(whole / name, key).records, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] > 26 and summary["missing_ratings"] == 0 and summary["status"] == "complete"


class ToyJudgeServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 whose judge is the toy world's: it reads the
    conversation, answer and aspect back out of the fenced judge prompt. With `fail_every=10`, one
    request in ten (chosen by a hash of its content, so its retries fail too) gets an HTTP 500 or a
    garbled body."""

    def __init__(self, fail_every=0):
        from zephyr_utils.toy.world import ToyWorld

        self.world, self.fail_every, self.requests, self.failed = ToyWorld(seed=0), fail_every, 0, 0
        lock, server = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
                h = zlib.crc32(prompt.encode())
                with lock:
                    server.requests += 1
                    failing = server.fail_every and h % server.fail_every == 0
                    server.failed += bool(failing)
                if failing and h % 2:
                    self.send_response(500)
                    self.end_headers()
                    return
                body = "<html>bad gateway</html>" if failing else json.dumps(
                    {"choices": [{"message": {"content": server.verdict(prompt)}}]})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body.encode())

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()  # shutdown() waits a poll

    def verdict(self, prompt):
        code = re.search(r"carry the code (#[0-9a-f]{10})", prompt).group(1)
        aspect = re.search(r"^Aspect: (\w+)\.", prompt, re.M).group(1)
        history = prompt.split(f"<<conversation {code}>>\n", 1)[1].split(f"\n<<end of conversation {code}>>", 1)[0]
        answer = prompt.split(f"<<answer {code}>>\n", 1)[1].rsplit(f"\n<<end of answer {code}>>", 1)[0]
        messages = [{"role": role.lower(), "content": text} for role, text in
                    re.findall(r"^\[(User|Assistant)\]\n(.*?)(?=\n\[(?:User|Assistant)\]\n|\Z)", history, re.S | re.M)]
        return self.world.judge_verdict(messages, answer, aspect)

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def test_a_flaky_endpoint_is_repaired_by_a_rerun(tmp_path, tiny_base_path, monkeypatch):
    """30 prompts x 4 completions x 4 aspects = 480 ratings from a local endpoint that fails one request in
    ten: the run stops without pairs (too many failures) and says what is missing; the rerun against a
    healthy endpoint asks only for the failed ratings, and its pairs are those of a healthy run."""
    from zephyr_utils.aif import run_aif
    from zephyr_utils.config import load_recipe
    from zephyr_utils.judges import EndpointJudge, TooManyJudgeFailures

    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path / "runs"))
    servers = [ToyJudgeServer(fail_every=10), ToyJudgeServer(), ToyJudgeServer()]
    flaky, healthy, fresh = servers
    try:
        def run(out, server):
            recipe = load_recipe("aif", "tiny", output_dir=str(out), pool=["teacher", "tiny@1.0", "tiny@0.3", "tiny@1.5"],
                                 max_prompts=30, batch_size=16, judge="openai:toy-judge", judge_base_url=server.url)
            return run_aif(recipe, judge=EndpointJudge("toy-judge", server.url, backoff=0.001, max_retries=2), progress=False)

        out = tmp_path / "aif"
        with pytest.raises(TooManyJudgeFailures, match=r"AIF ratings .*: \d+ of 480 judgements"):
            run(out, flaky)
        summary = json.loads((out / "summary.json").read_text())
        failed = summary["missing_ratings"]
        # every failed rating was asked 3 times (two retries), and failed each time (two pool members can
        # write the same text, so a failing judge prompt can stand for more than one rating)
        assert flaky.failed == 3 * failed and 24 < failed < 96 and summary["status"] == "failed"
        assert len(summary["missing"]) == min(failed, 100) and all("gave up after 3 attempts" in m["error"] for m in summary["missing"])
        assert not (out / "preferences" / "train.jsonl").exists()

        # a healthy run from the flaky run's completions, copied before the rerun touches them (that a rerun samples
        # the same completions is the SIGKILL test's)
        (tmp_path / "healthy").mkdir()
        shutil.copy(out / "completions.jsonl", tmp_path / "healthy" / "completions.jsonl")
        run(out, healthy)
        assert healthy.requests == failed  # only the failed ratings were asked again
        run(tmp_path / "healthy", fresh)
        assert fresh.requests == 480
        for name in ("preferences/train.jsonl", "preferences/test.jsonl", "summary.json"):
            assert (out / name).read_bytes() == (tmp_path / "healthy" / name).read_bytes(), name
        summary = json.loads((out / "summary.json").read_text())
        assert summary["missing_ratings"] == 0 and summary["missing"] == [] and summary["pairs"] >= 27
    finally:
        for s in servers:
            s.close()


def test_rated_completions_shows_one_prompts_pool_with_every_aspect(tmp_path):
    from zephyr_utils.aif import rated_completions

    completions = JsonlLog(tmp_path / "completions.jsonl", ("prompt_id", "model"))
    completions.append([{"prompt_id": "p", "model": m, "completion": t} for m, t in (("a", "Blue."), ("b", "Red. I hope this helps!"))])
    ratings = JsonlLog(tmp_path / "ratings.jsonl", RATING_KEY)
    rate(ratings, "a", "Blue.", [5, 5, 5, 5])
    rate(ratings, "b", "Red. I hope this helps!", [4, 1, 5, "skip"])
    rate(ratings, "b", "an older text of b", [5, 5, 5, 5])  # not b's completion: never shown as its rating
    rows = {r["model"]: r for r in rated_completions(tmp_path, "p")}
    assert rows["a"]["mean"] == 5.0 and rows["a"]["completion"] == "Blue."
    assert rows["b"]["ratings"] == {"instruction_following": 4, "truthfulness": 1, "honesty": 5, "helpfulness": None}
    assert rows["b"]["mean"] is None
    with pytest.raises(KeyError, match="no completions for prompt_id 'q'"):
        rated_completions(tmp_path, "q")
