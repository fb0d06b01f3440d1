"""AIF: AI feedback preference collection, as UltraFeedback did it for Zephyr.

    prompts -> completions from a pool of models (4 per prompt) -> a judge rates each on four aspects
            -> binarized pairs: chosen = highest mean rating, rejected = a random one of the others

    run_aif(load_recipe("aif", "tiny"))     # runs/tiny/aif/preferences/{train,test}.jsonl

Work is appended to `completions.jsonl` (keyed by prompt_id, model) and `ratings.jsonl` (keyed by
prompt_id, model, aspect and a hash of the completion's text) as it is done. Rerunning the same recipe
in the same directory (`zephyr aif` again) repairs any earlier run, and ends with the files an
uninterrupted run would have written, byte for byte:
- sampling: a pool member's batches are always cut from the full list of prompts assigned to it, in
  its fixed order, and each batch is seeded by its start index in that list. A rerun regenerates every
  batch that has a completion missing (the same prompts, the same seed: the same texts, on the same
  hardware and library versions) and appends only the missing ones. (Seeding each prompt on its own
  would also resume identically, but would change what an uninterrupted run samples: the batched
  samplers take one seed per call.) `sampling.json` records the settings that shape the batches; a
  rerun with other settings is refused rather than mixed;
- rating: a rating belongs to one completion text (a regenerated or edited completion is rated anew);
  a failed or unreadable rating is stored with its `error` and asked again on every rerun;
- a half-written last line (a kill mid-write) is dropped; the pairs and summary are written atomically.
`summary.json` lists what is still missing. A run with more failed ratings than the recipe's
`max_judge_failure_share` writes no pairs and stops with an error; fix the judge and rerun. (There is
no separate `--retry-failed`: every rerun retries the failed ratings, and samples nothing that is done.)
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import zlib
from pathlib import Path

from . import registry, runs
from .config import AIFRecipe
from .data import LOCAL_FORMATS, write_jsonl
from .generation import Sampler
from .judges import Judge, check_failure_share, make_judge
from .progress import bar as progress_bar
from .rubric import ASPECTS


class JsonlLog:
    """An append-only JSON-lines file keyed by some fields: `log.done(key)`, `log.append(records)`."""

    def __init__(self, path: str | Path, key_fields: tuple[str, ...]):
        self.path, self.key_fields = Path(path), key_fields
        self.records: dict[tuple, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1  # anything after the last newline is a write cut short by a kill
        if good < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good)
        for line_no, line in enumerate(data[:good].decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}: line {line_no} is not valid JSON ({err.msg}); delete that line to resume") from None
            self.records[self.key(record)] = record

    def key(self, record: dict) -> tuple:
        return tuple(record.get(f) for f in self.key_fields)  # a field missing (older files): never matches

    def done(self, key: tuple) -> bool:
        return key in self.records

    def append(self, records: list[dict], replace: bool = False) -> None:
        """Append records whose key is new (or every record, with `replace`: on reading, the last
        record of a key wins; a retried rating replaces its failure this way)."""
        new = [r for r in records if replace or not self.done(self.key(r))]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in new))
            f.flush()
        for r in new:
            self.records[self.key(r)] = r


def parse_pool_member(spec: str, default_temperature: float = 1.0) -> tuple[str, float]:
    """"sft@0.7" -> ("sft", 0.7); a member without "@" samples at `default_temperature`."""
    name, sep, temperature = spec.rpartition("@")
    if not sep:
        return spec, default_temperature
    try:
        return name, float(temperature)
    except ValueError:
        raise ValueError(f"pool member {spec!r}: expected 'model@temperature', e.g. 'sft@0.7'") from None


def load_prompts(recipe: AIFRecipe) -> list[dict]:
    """Rows with prompt, prompt_id and messages (the conversation to answer, ending with a user turn)."""
    if recipe.prompts in registry.names("prompts"):  # e.g. "toyworld"
        rows = registry.lookup("prompts", recipe.prompts)(recipe.prompt_split, world_seed=recipe.world_seed)
    else:
        import datasets

        path = Path(recipe.prompts)
        if path.suffix in LOCAL_FORMATS and path.is_file():
            ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(recipe.prompts, split=recipe.prompt_split)
        rows = []
        for i, row in enumerate(ds):
            if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{recipe.prompts}: row {i}, field 'prompt' must be a non-empty string")
            rows.append({"prompt": row["prompt"], "prompt_id": row.get("prompt_id") or str(i),
                         "messages": [{"role": "user", "content": row["prompt"]}]})
    if recipe.max_prompts is not None:
        rows = rows[: recipe.max_prompts]
    return rows


def assign_models(prompts: list[dict], pool: list[str], k: int, seed: int) -> dict[str, list[str]]:
    """Which `k` pool members answer each prompt (all of them if the pool has at most `k`)."""
    rng = random.Random(seed)
    return {p["prompt_id"]: (list(pool) if len(pool) <= k else rng.sample(pool, k)) for p in prompts}


SAMPLING_FIELDS = ("prompts", "prompt_split", "max_prompts", "pool", "completions_per_prompt", "max_new_tokens",
                   "temperature", "top_p", "batch_size", "seed", "teacher_chatty_share")


def check_sampling_settings(out: Path, recipe: AIFRecipe) -> None:
    """Refuse to resume sampling in `out` with settings other than those its completions were sampled
    with (they decide the batches and seeds, so mixing them would break resumable-identical sampling)."""
    settings = {f: getattr(recipe, f) for f in SAMPLING_FIELDS}
    path = out / "sampling.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = [f for f in SAMPLING_FIELDS if before.get(f) != settings[f]]
        if changed:
            was = ", ".join(f"{f}={before.get(f)!r}" for f in changed)
            now = ", ".join(f"{f}={settings[f]!r}" for f in changed)
            raise ValueError(f"{out}: its completions were sampled with {was}, but this recipe has {now}. Resuming would mix "
                             "two samplings: use another output_dir, or the settings of the first run.")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=1))


def sampling_batches(prompts: list[dict], member: str, assigned: dict[str, list[str]], batch_size: int) -> list[tuple[int, list[dict]]]:
    """(start, prompts) batches of a pool member: cut from the full list of prompts assigned to it, in
    order, whatever is already done; the batch at `start` is sampled with seed `recipe.seed + start`."""
    mine = [p for p in prompts if member in assigned[p["prompt_id"]]]
    return [(start, mine[start : start + batch_size]) for start in range(0, len(mine), batch_size)]


def pool_models(recipe: AIFRecipe) -> dict[str, str]:
    """{model name: its path or Hub id} of the pool's members that are models (not a registered sampler such
    as the teacher), each resolved once (`runs.resolve`: "sft" is the newest finished dSFT run)."""
    names = dict.fromkeys(parse_pool_member(m)[0] for m in recipe.pool)
    return {name: runs.resolve(name, recipe.scale, recipe.preset, recipe.world_seed)
            for name in names if name not in registry.names("sampler")}


def collect_completions(prompts: list[dict], recipe: AIFRecipe, log: JsonlLog, progress: bool = True) -> None:
    """Sample each pool member's answers to the prompts assigned to it, appending batch by batch. A batch
    with any completion missing is sampled again whole (same prompts, same seed) and only its missing
    completions are appended, so a resumed run writes what an uninterrupted one would have."""
    assigned = assign_models(prompts, recipe.pool, recipe.completions_per_prompt, recipe.seed)
    for member in recipe.pool:
        todo = [(start, chunk) for start, chunk in sampling_batches(prompts, member, assigned, recipe.batch_size)
                if not all(log.done((p["prompt_id"], member)) for p in chunk)]
        if not todo:
            continue
        name, temperature = parse_pool_member(member, recipe.temperature)
        # One pool member at a time: its model is freed (a vLLM engine shut down) before the next one loads.
        # A registered sampler name (the tiny scale's "teacher") is built from the recipe instead of a model.
        if name in registry.names("sampler"):
            sampler = registry.lookup("sampler", name)(recipe)
        else:
            sampler = Sampler(runs.resolve(name, recipe.scale, recipe.preset, recipe.world_seed),
                              recipe.generation_backend, recipe.batch_size, recipe.dtype)
        bar = progress_bar(total=sum(len(chunk) for _, chunk in todo), desc=f"sampling {member}", progress=progress)
        try:
            for start, chunk in todo:
                outs = sampler([p["messages"] for p in chunk], max_new_tokens=recipe.max_new_tokens, temperature=temperature,
                               top_p=recipe.top_p, seed=recipe.seed + start)
                log.append([{"prompt_id": p["prompt_id"], "model": member, "completion": o.text, "finished": o.finished,
                             "n_tokens": o.n_tokens} for p, o in zip(chunk, outs)])  # only the missing ones are written
                bar.update(len(chunk))
        finally:
            bar.close()
            if isinstance(sampler, Sampler):
                sampler.close()


def text_hash(text: str) -> str:
    """The key of a completion's text in `ratings.jsonl`."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


RATING_KEY = ("prompt_id", "model", "aspect", "completion_sha256")


def rating_of(ratings: JsonlLog, completion: dict, aspect: str) -> dict | None:
    """The rating record of this completion's text on `aspect` (None if there is none yet)."""
    return ratings.records.get((completion["prompt_id"], completion["model"], aspect, text_hash(completion["completion"])))


def collect_ratings(prompts: list[dict], completions: JsonlLog, judge: Judge, log: JsonlLog,
                    chunk_size: int = 256, progress: bool = True) -> None:
    """Rate every completion on the four aspects, appending chunk by chunk. Ratings that are missing or
    failed (no readable rating last time) are asked for; a `JudgeConfigError` stops the run."""
    by_id = {p["prompt_id"]: p for p in prompts}
    todo = [(c, a) for c in completions.records.values() if c["prompt_id"] in by_id for a in ASPECTS
            if (rating_of(log, c, a) or {}).get("rating") is None]
    bar = progress_bar(total=len(todo), desc=f"judging ({judge.name})", progress=progress)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        verdicts = judge.judge_many([(by_id[c["prompt_id"]]["messages"], c["completion"], a) for c, a in chunk], progress=False)
        log.append([{"prompt_id": c["prompt_id"], "model": c["model"], "aspect": a, "completion_sha256": text_hash(c["completion"]),
                     "rating": v.rating, "attempts": v.attempts, "verdict": v.text, "error": v.error}
                    for (c, a), v in zip(chunk, verdicts)], replace=True)
        bar.update(len(chunk))
    bar.close()


def mean_ratings(ratings: JsonlLog, completions: JsonlLog) -> dict[tuple[str, str], float | None]:
    """(prompt_id, model) -> mean of the four aspect ratings of that completion's text; None if any is
    missing or failed (ratings of another text of the same key, say an older completion, do not count)."""
    out = {}
    for key, c in completions.records.items():
        values = [(rating_of(ratings, c, a) or {}).get("rating") for a in ASPECTS]
        out[key] = None if None in values else statistics.fmean(values)
    return out


def missing_work(prompts: list[dict], recipe: AIFRecipe, completions: JsonlLog, ratings: JsonlLog) -> list[dict]:
    """What a rerun still has to do: completions not sampled, ratings missing or failed (with the error)."""
    assigned = assign_models(prompts, recipe.pool, recipe.completions_per_prompt, recipe.seed)
    missing = []
    for p in prompts:
        for member in assigned[p["prompt_id"]]:
            c = completions.records.get((p["prompt_id"], member))
            if c is None:
                missing.append({"prompt_id": p["prompt_id"], "model": member, "missing": "completion"})
                continue
            for a in ASPECTS:
                r = rating_of(ratings, c, a)
                if r is None or r["rating"] is None:
                    missing.append({"prompt_id": p["prompt_id"], "model": member, "aspect": a, "missing": "rating",
                                    "error": (r or {}).get("error") or ("not rated yet" if r is None else "no rating")})
    return missing


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def binarize(prompts: list[dict], completions: dict[tuple[str, str], dict], scores: dict[tuple[str, str], float | None],
             seed: int = 42) -> tuple[list[dict], dict]:
    """Pairs in the `ultrafeedback_binarized` schema, and counts of what was left out.

    Per prompt: candidates are the non-empty completions with a score. Chosen = the highest score (a tie for the
    top is broken at random). Rejected = a random one of the candidates scored *strictly lower* whose
    text differs from the chosen one, as in Zephyr (a random other, not the worst, so pairs stay hard).
    A prompt whose candidates all tie has no pair and is counted as `all_tied`."""
    rng = random.Random(seed)
    pairs, counts = [], {"prompts": len(prompts), "pairs": 0, "all_tied": 0, "too_few_rated": 0, "unrated_completions": 0,
                         "empty_completions": 0}
    by_prompt: dict[str, list[tuple[str, dict]]] = {}
    for (pid, model), c in completions.items():
        by_prompt.setdefault(pid, []).append((model, c))
    for p in prompts:
        pid, rated = p["prompt_id"], []
        for model, c in by_prompt.get(pid, []):
            if not c["completion"].strip():  # a model that stopped at once: nothing to train on
                counts["empty_completions"] += 1
            elif scores.get((pid, model)) is None:
                counts["unrated_completions"] += 1
            else:
                rated.append((scores[(pid, model)], model, c["completion"]))
        if len(rated) < 2:
            counts["too_few_rated"] += 1
            continue
        top = max(s for s, _, _ in rated)
        chosen = rng.choice(sorted(r for r in rated if r[0] == top))
        lower = sorted(r for r in rated if r[0] < top and r[2].strip() != chosen[2].strip())
        if not lower:
            counts["all_tied"] += 1
            continue
        rejected = rng.choice(lower)
        chosen_msgs = p["messages"] + [{"role": "assistant", "content": chosen[2]}]
        pairs.append({
            "prompt": p["prompt"], "prompt_id": p["prompt_id"],
            "chosen": chosen_msgs, "rejected": p["messages"] + [{"role": "assistant", "content": rejected[2]}],
            "messages": chosen_msgs, "score_chosen": chosen[0], "score_rejected": rejected[0],
            "chosen_model": chosen[1], "rejected_model": rejected[1],
        })
    counts["pairs"] = len(pairs)
    return pairs, counts


def run_aif(recipe: AIFRecipe, judge: Judge | None = None, progress: bool = True, test_share: float = 0.1,
            run_name: str = "aif") -> Path:
    """Collect, rate and binarize; returns the output directory. Rerun it after a kill or a judge
    failure: it finishes or repairs the work on disk (see the module's docstring). Later stages find the
    run by `run_name` (see `runs.find`)."""
    out = runs.stage_dir(recipe, run_name)
    prompts = load_prompts(recipe)
    if not recipe.pool:
        raise ValueError("the AIF recipe has an empty pool: list the models that answer, e.g. ['sft@0.7', 'sft@1.2']")
    models = pool_models(recipe)  # a member not trained yet fails here, before any sampling
    check_sampling_settings(out, recipe)
    runs.begin(out)
    completions = JsonlLog(out / "completions.jsonl", ("prompt_id", "model"))
    collect_completions(prompts, recipe, completions, progress)
    ratings = JsonlLog(out / "ratings.jsonl", RATING_KEY)
    judge = judge or make_judge(recipe.judge, recipe.judge_base_url, world_seed=recipe.world_seed)
    collect_ratings(prompts, completions, judge, ratings, progress=progress)

    for stale in (out / "preferences").glob("*.tmp"):  # a write cut short by a kill
        stale.unlink()
    missing = missing_work(prompts, recipe, completions, ratings)
    failed = sum(m["missing"] == "rating" for m in missing)
    ids = {p["prompt_id"] for p in prompts}
    n_ratings = len(ASPECTS) * sum(c["prompt_id"] in ids for c in completions.records.values())
    pairs, counts = binarize(prompts, completions.records, mean_ratings(ratings, completions), recipe.seed)
    counts.update(ratings=n_ratings, missing_ratings=failed, missing_completions=len(missing) - failed)
    try:
        check_failure_share(failed, max(n_ratings, 1), recipe.max_judge_failure_share, f"AIF ratings in {out}")
        if len(missing) > failed:
            raise ValueError(f"{out}: {len(missing) - failed} completions are missing; rerun `zephyr aif` to sample them")
    except ValueError as err:
        for name in ("train.jsonl", "test.jsonl"):  # never leave pairs that disagree with the logs
            (out / "preferences" / name).unlink(missing_ok=True)
        counts.update(pairs=0, status="failed", error=str(err), missing=missing[:100], missing_not_listed=max(0, len(missing) - 100))
        write_text_atomic(out / "summary.json", json.dumps(counts, indent=2))
        raise type(err)(f"{err}\nEverything done so far is kept in {out}; rerunning `zephyr aif` with the same recipe "
                         "asks the judge again for every failed rating. summary.json lists what is missing.") from None
    is_test = [zlib.crc32(p["prompt_id"].encode()) % 1000 < 1000 * test_share for p in pairs]  # stable split
    write_jsonl([p for p, t in zip(pairs, is_test) if not t], out / "preferences" / "train.jsonl")
    write_jsonl([p for p, t in zip(pairs, is_test) if t], out / "preferences" / "test.jsonl")
    counts.update(train_pairs=is_test.count(False), test_pairs=is_test.count(True), status="complete" if not missing else "partial",
                  missing=missing[:100], missing_not_listed=max(0, len(missing) - 100))
    write_text_atomic(out / "summary.json", json.dumps(counts, indent=2))
    runs.write_run_info(out, recipe, [])
    runs.write_manifest(out, "aif", recipe, {"prompts": recipe.prompts, **{f"pool:{n}": p for n, p in models.items()}},
                        {"train": "preferences/train.jsonl", "test": "preferences/test.jsonl", "summary": "summary.json"},
                        run_name)
    return out


def scores_by_model(out_dir: str | Path) -> dict[str, list[float]]:
    """Pool member -> the mean ratings of its completions (unrated ones left out), from a run's files."""
    out_dir = Path(out_dir)
    completions = JsonlLog(out_dir / "completions.jsonl", ("prompt_id", "model"))
    scores: dict[str, list[float]] = {}
    for (_, model), score in mean_ratings(JsonlLog(out_dir / "ratings.jsonl", RATING_KEY), completions).items():
        if score is not None:
            scores.setdefault(model, []).append(score)
    return scores


def rated_completions(out_dir: str | Path, prompt_id: str) -> list[dict]:
    """One prompt's completions as a run wrote them, each with its four aspect ratings and the judge's
    verdicts: [{"model", "completion", "ratings": {aspect: rating}, "verdicts": {aspect: text}, "mean"}]."""
    out_dir = Path(out_dir)
    completions = JsonlLog(out_dir / "completions.jsonl", ("prompt_id", "model"))
    ratings = JsonlLog(out_dir / "ratings.jsonl", RATING_KEY)
    rows = []
    for (pid, model), c in completions.records.items():
        if pid != prompt_id:
            continue
        found = {a: rating_of(ratings, c, a) or {} for a in ASPECTS}
        values = {a: r.get("rating") for a, r in found.items()}
        rows.append({"model": model, "completion": c["completion"], "ratings": values,
                     "verdicts": {a: r.get("verdict", "") for a, r in found.items()},
                     "mean": None if None in values.values() else statistics.fmean(values.values())})
    if not rows:
        raise KeyError(f"{out_dir / 'completions.jsonl'}: no completions for prompt_id {prompt_id!r}")
    return rows
