"""AIF: AI feedback preference collection, as UltraFeedback did it for Zephyr.

    prompts -> completions from a pool of models (4 per prompt) -> a judge rates each on four aspects
            -> binarized pairs: chosen = highest mean rating, rejected = a random one of the others

    run_aif(load_recipe("aif", "tiny"))     # runs/tiny/aif/preferences/{train,test}.jsonl

Work is appended to `completions.jsonl` and `ratings.jsonl` as it is done, each record keyed by
(prompt_id, model[, aspect]). A run that is killed resumes where it stopped: records already on disk
are skipped, a half-written last line is discarded, and nothing is written twice.
"""

from __future__ import annotations

import json
import random
import statistics
import zlib
from pathlib import Path

from .config import AIFRecipe, stage_dir, write_run_info
from .data import write_jsonl
from .judges import ASPECTS, Judge, make_judge


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
        return tuple(record[f] for f in self.key_fields)

    def done(self, key: tuple) -> bool:
        return key in self.records

    def append(self, records: list[dict]) -> None:
        new = [r for r in records if not self.done(self.key(r))]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in new))
            f.flush()
        for r in new:
            self.records[self.key(r)] = r


class TeacherSampler:
    """The toy world's teacher as a pool member (tiny scale): UltraFeedback's pool also held the strong
    models (GPT-4, GPT-3.5) whose answers the student is distilled towards."""

    def __init__(self):
        from .toyworld import ToyWorld

        self.world = ToyWorld()

    def __call__(self, conversations, **_):
        from .generation import Completion

        answers = [self.world.answer(self.world.resolve_question(c), chatty=False) for c in conversations]
        return [Completion(a, True, 0) for a in answers]


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
    if recipe.prompts == "toyworld":
        from .toyworld import ToyWorld

        rows = ToyWorld().prompts(recipe.prompt_split)
    else:
        import datasets

        from .data import LOCAL_FORMATS

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


def collect_completions(prompts: list[dict], recipe: AIFRecipe, log: JsonlLog, progress: bool = True) -> None:
    """Sample each pool member's answers to the prompts assigned to it, appending batch by batch."""
    from tqdm.auto import tqdm

    from .generation import Sampler
    from .models import resolve_model_path

    assigned = assign_models(prompts, recipe.pool, recipe.completions_per_prompt, recipe.seed)
    for member in recipe.pool:
        todo = [p for p in prompts if member in assigned[p["prompt_id"]] and not log.done((p["prompt_id"], member))]
        if not todo:
            continue
        name, temperature = parse_pool_member(member, recipe.temperature)
        # One pool member at a time: its model is freed (a vLLM engine shut down) before the next one loads.
        sampler = TeacherSampler() if name == "teacher" else Sampler(
            resolve_model_path(name, recipe.scale, recipe.preset), recipe.generation_backend, recipe.batch_size, recipe.dtype)
        bar = tqdm(total=len(todo), desc=f"sampling {member}", disable=not progress)
        try:
            for start in range(0, len(todo), recipe.batch_size):
                chunk = todo[start : start + recipe.batch_size]
                outs = sampler([p["messages"] for p in chunk], max_new_tokens=recipe.max_new_tokens, temperature=temperature,
                               top_p=recipe.top_p, seed=recipe.seed + start)
                log.append([{"prompt_id": p["prompt_id"], "model": member, "completion": o.text, "finished": o.finished,
                             "n_tokens": o.n_tokens} for p, o in zip(chunk, outs)])
                bar.update(len(chunk))
        finally:
            bar.close()
            if isinstance(sampler, Sampler):
                sampler.close()


def collect_ratings(prompts: list[dict], completions: JsonlLog, judge: Judge, log: JsonlLog,
                    chunk_size: int = 256, progress: bool = True) -> None:
    """Rate every completion on the four aspects, appending chunk by chunk."""
    from tqdm.auto import tqdm

    by_id = {p["prompt_id"]: p for p in prompts}
    todo = [(c, a) for c in completions.records.values() if c["prompt_id"] in by_id
            for a in ASPECTS if not log.done((c["prompt_id"], c["model"], a))]
    bar = tqdm(total=len(todo), desc=f"judging ({judge.name})", disable=not progress)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        verdicts = judge.judge_many([(by_id[c["prompt_id"]]["messages"], c["completion"], a) for c, a in chunk], progress=False)
        log.append([{"prompt_id": c["prompt_id"], "model": c["model"], "aspect": a, "rating": v.rating,
                     "attempts": v.attempts, "verdict": v.text} for (c, a), v in zip(chunk, verdicts)])
        bar.update(len(chunk))
    bar.close()


def mean_ratings(ratings: JsonlLog) -> dict[tuple[str, str], float | None]:
    """(prompt_id, model) -> mean of the four aspect ratings; None if any aspect has no rating."""
    per: dict[tuple[str, str], list] = {}
    for r in ratings.records.values():
        per.setdefault((r["prompt_id"], r["model"]), []).append(r["rating"])
    return {k: (None if len(v) < len(ASPECTS) or None in v else statistics.fmean(v)) for k, v in per.items()}


def binarize(prompts: list[dict], completions: dict[tuple[str, str], dict], scores: dict[tuple[str, str], float | None],
             seed: int = 42) -> tuple[list[dict], dict]:
    """Pairs in the `ultrafeedback_binarized` schema, and counts of what was left out.

    Per prompt: candidates are the completions with a score. Chosen = the highest score (a tie for the
    top is broken at random). Rejected = a random one of the candidates scored *strictly lower* whose
    text differs from the chosen one, as in Zephyr (a random other, not the worst, so pairs stay hard).
    A prompt whose candidates all tie has no pair and is counted as `all_tied`."""
    rng = random.Random(seed)
    pairs, counts = [], {"prompts": len(prompts), "pairs": 0, "all_tied": 0, "too_few_rated": 0, "unrated_completions": 0}
    by_prompt: dict[str, list[tuple[str, dict]]] = {}
    for (pid, model), c in completions.items():
        by_prompt.setdefault(pid, []).append((model, c))
    for p in prompts:
        pid, rated = p["prompt_id"], []
        for model, c in by_prompt.get(pid, []):
            if scores.get((pid, model)) is None:
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


def run_aif(recipe: AIFRecipe, judge: Judge | None = None, progress: bool = True, test_share: float = 0.1) -> Path:
    """Collect, rate and binarize; returns the output directory (resumable: rerun after a kill)."""
    out = stage_dir(recipe, "aif")
    prompts = load_prompts(recipe)
    if not recipe.pool:
        raise ValueError("the AIF recipe has an empty pool: list the models that answer, e.g. ['sft@0.7', 'sft@1.2']")
    completions = JsonlLog(out / "completions.jsonl", ("prompt_id", "model"))
    collect_completions(prompts, recipe, completions, progress)
    ratings = JsonlLog(out / "ratings.jsonl", ("prompt_id", "model", "aspect"))
    collect_ratings(prompts, completions, judge or make_judge(recipe.judge, recipe.judge_base_url), ratings, progress=progress)
    pairs, counts = binarize(prompts, completions.records, mean_ratings(ratings), recipe.seed)
    counts["missing_ratings"] = sum(r["rating"] is None for r in ratings.records.values())
    is_test = [zlib.crc32(p["prompt_id"].encode()) % 1000 < 1000 * test_share for p in pairs]  # stable split
    write_jsonl([p for p, t in zip(pairs, is_test) if not t], out / "preferences" / "train.jsonl")
    write_jsonl([p for p, t in zip(pairs, is_test) if t], out / "preferences" / "test.jsonl")
    counts.update(train_pairs=is_test.count(False), test_pairs=is_test.count(True))
    (out / "summary.json").write_text(json.dumps(counts, indent=2))
    write_run_info(out, recipe, [])
    return out



def scores_by_model(out_dir: str | Path) -> dict[str, list[float]]:
    """Pool member -> the mean ratings of its completions (unrated ones left out), from a run's files."""
    scores: dict[str, list[float]] = {}
    for (_, model), score in mean_ratings(JsonlLog(Path(out_dir) / "ratings.jsonl", ("prompt_id", "model", "aspect"))).items():
        if score is not None:
            scores.setdefault(model, []).append(score)
    return scores
