"""MT-Bench as FastChat's `llm_judge` defines it, with the book's own generation path.

    questions = load_questions("HuggingFaceH4/mt_bench_prompts")        # FastChat's question records
    answers = generate_answers(sampler, questions, "dpo")                 # per-category temperature, 2 turns
    write_answers(out / "model_answer" / "dpo.jsonl", answers)            # FastChat's answer file, re-judgeable
    judgments = judge_answers(judge, questions, {"dpo": answers}, judge_prompts)
    summary = summarize(judgments, questions)["dpo"]                      # score, per turn, per category

What comes from FastChat (`pip install 'zephyr-utils[eval]'`), never re-typed here: the sampling
temperature of each category (`temperature_config`), the categories graded against a reference answer
(`NEED_REF_CATS`: math, reasoning, coding), the four single-answer judges and which question each one
grades (`make_judge_single`, `make_match_single`: single-v1, single-math-v1 and their multi-turn
variants), the rating patterns ("[[N]]"), and the file formats. The judge prompts themselves are not in
FastChat's wheel: they are read at run time from FastChat's repository (`JUDGE_PROMPTS_URL`) or a local
copy of that file. The judge is any OpenAI-compatible endpoint (GPT-4 in the paper); FastChat's own
client is bypassed only because it needs openai<1 and accepts no judge but gpt-4/gpt-3.5/claude.
"""

from __future__ import annotations

import ast
import json
import re
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

from .data import _load

FASTCHAT_DATA = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"
JUDGE_PROMPTS_URL = f"{FASTCHAT_DATA}/judge_prompts.jsonl"
TURNS = 2
ERROR_SCORE = -1  # FastChat's score for a judgment without a readable rating (left out of every mean)


def fastchat():
    """FastChat's llm_judge modules (common, gen_judgment), or a clear error naming the extra."""
    try:
        from fastchat.llm_judge import common, gen_judgment
    except ImportError as err:
        raise ValueError(f"MT-Bench judging needs FastChat's llm_judge ({err}): pip install 'zephyr-utils[eval]'") from None
    return common, gen_judgment


def category_temperature(category: str) -> float:
    """The sampling temperature FastChat's gen_model_answer uses for a category (0.7 when unlisted)."""
    common, _ = fastchat()
    return common.temperature_config.get(category, 0.7)


def needs_reference(category: str) -> bool:
    common, _ = fastchat()
    return category in common.NEED_REF_CATS


def load_questions(source: str = "HuggingFaceH4/mt_bench_prompts", split: str = "train") -> list[dict]:
    """Questions as FastChat's records {question_id, category, turns, reference}, from the Hub dataset
    `HuggingFaceH4/mt_bench_prompts` (prompt, prompt_id, category, reference), a local file of that schema,
    or FastChat's own question.jsonl (question_id, category, turns, reference). Loaded at run time."""
    rows, where = _load(source, split, "mt_bench", 0)
    questions, seen = [], set()
    for i, row in enumerate(rows):
        turns = row.get("turns", row.get("prompt"))
        qid = row.get("question_id", row.get("prompt_id"))
        category = row.get("category")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{where}: row {i}: field 'prompt' (or 'turns') must be a list of non-empty strings, got {turns!r}")
        if not isinstance(category, str) or not category:
            raise ValueError(f"{where}: row {i}: field 'category' must be a non-empty string, got {category!r}")
        if qid is None or qid in seen:
            raise ValueError(f"{where}: row {i}: field 'prompt_id' (or 'question_id') is missing or repeated: {qid!r}")
        reference = row.get("reference") or []
        if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
            raise ValueError(f"{where}: row {i}: field 'reference' must be a list of strings, got {reference!r}")
        seen.add(qid)
        questions.append({"question_id": qid, "category": category, "turns": list(turns), "reference": reference})
    if not questions:
        raise ValueError(f"{where}: no questions")
    return questions


def generate_answers(sample, questions: list[dict], model_id: str, max_new_tokens: int = 1024, seed: int = 0) -> list[dict]:
    """Answer every turn of every question as FastChat's gen_model_answer does: turn k sees the model's
    own earlier answers, and each question is sampled at its category's temperature (greedy at 0).
    `sample(conversations, max_new_tokens=, temperature=, seed=)` returns completions with `.text`
    (a `generation.Sampler`). Returns FastChat answer records."""
    conversations = [[] for _ in questions]
    texts: list[list[str]] = [[] for _ in questions]
    for k in range(max(len(q["turns"]) for q in questions)):
        by_temperature = defaultdict(list)
        for i, q in enumerate(questions):
            if k < len(q["turns"]):
                by_temperature[category_temperature(q["category"])].append(i)
        for temperature, index in sorted(by_temperature.items()):
            for i in index:
                conversations[i].append({"role": "user", "content": questions[i]["turns"][k]})
            outs = sample([conversations[i] for i in index], max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
            for i, out in zip(index, outs):
                texts[i].append(out.text)
                conversations[i].append({"role": "assistant", "content": out.text})
    now = time.time()
    return [{"question_id": q["question_id"], "answer_id": uuid.uuid4().hex, "model_id": model_id,
             "choices": [{"index": 0, "turns": t}], "tstamp": now} for q, t in zip(questions, texts)]


def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def write_answers(path: str | Path, answers: list[dict]) -> Path:
    """FastChat's model_answer/<model_id>.jsonl: `gen_judgment.py` or `judge_answers` can grade it again."""
    return write_jsonl(path, answers)


def load_answers(answer_dir: str | Path) -> dict:
    """{model_id: {question_id: answer}} read by FastChat's own loader from a model_answer/ directory."""
    common, _ = fastchat()
    return common.load_model_answers(str(answer_dir))


def reference_answers(questions: list[dict], judge_model: str, reference_file: str = "") -> dict:
    """FastChat's {judge_model: {question_id: answer record}} of reference answers: from a FastChat answer
    file (reference_answer/gpt-4.jsonl, keyed by FastChat's question ids) when given, else each question's
    own `reference` field."""
    if reference_file:
        records = [json.loads(line) for line in read_text(reference_file).splitlines() if line.strip()]
        by_id = {r["question_id"]: r for r in records}
    else:
        by_id = {q["question_id"]: {"question_id": q["question_id"], "model_id": "reference",
                                   "choices": [{"index": 0, "turns": q["reference"]}]}
                 for q in questions if any(r.strip() for r in q["reference"])}
    return {judge_model: by_id}


def check_references(questions: list[dict], references: dict, judge_model: str) -> None:
    """Every question of a reference-graded category has a reference for each of its turns, else a
    ValueError naming them (FastChat's own check, `check_data`, would stop on the first with an assert)."""
    common, _ = fastchat()
    by_id = references.get(judge_model, {})
    missing = []
    for q in questions:
        if q["category"] in common.NEED_REF_CATS:
            ref = by_id.get(q["question_id"])
            turns = ref["choices"][0]["turns"] if ref else []
            if len(turns) < len(q["turns"]) or not all(t.strip() for t in turns[: len(q["turns"])]):
                missing.append(f"{q['question_id']} ({q['category']})")
    if missing:
        raise ValueError(f"MT-Bench: {len(missing)} question(s) of the reference-graded categories "
                         f"({', '.join(common.NEED_REF_CATS)}) have no reference answer for every turn: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Set mt_bench_reference_answers to "
                         "FastChat's reference_answer/gpt-4.jsonl (with prompts set to FastChat's question.jsonl, which "
                         "shares its question ids), or give these rows a 'reference' list.")


def read_text(source: str) -> str:
    """A local file, or an http(s) URL read at run time."""
    if re.match(r"https?://", source):
        with urllib.request.urlopen(source, timeout=60) as reply:
            return reply.read().decode()
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"{source}: no such file (expected FastChat's judge prompts or answer file, or an http(s) URL)")
    return path.read_text()


def load_judge_prompts(source: str = JUDGE_PROMPTS_URL, cache: str | Path | None = None) -> dict:
    """FastChat's judge prompts by name (single-v1, single-math-v1, ...), read by FastChat's own loader.
    A URL is fetched once into `cache` (a file path) so a later run reads the same text."""
    common, _ = fastchat()
    path = Path(source)
    if re.match(r"https?://", source):
        path = Path(cache) if cache else Path.cwd() / "judge_prompts.jsonl"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(read_text(source))
    prompts = common.load_judge_prompts(str(path))
    needed = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")
    missing = [n for n in needed if n not in prompts]
    if missing:
        raise ValueError(f"{path}: FastChat judge prompts file lacks {', '.join(missing)}")
    return prompts


def make_matches(questions: list[dict], answers: dict, judge_model: str, judge_prompts: dict, references: dict) -> list:
    """FastChat's single-answer matches, built as its gen_judgment does: general questions with single-v1,
    math/reasoning/coding with the reference-guided single-math-v1, then both again for turn 2."""
    common, gen = fastchat()
    judges = gen.make_judge_single(judge_model, judge_prompts)
    models = list(answers)
    math = [q for q in questions if q["category"] in common.NEED_REF_CATS]
    default = [q for q in questions if q["category"] not in common.NEED_REF_CATS]
    check_references(questions, references, judge_model)
    matches = []
    for multi_turn, suffix in ((False, ""), (True, "-mt")):
        matches += gen.make_match_single(default, models, answers, judges["default" + suffix], multi_turn=multi_turn)
        matches += gen.make_match_single(math, models, answers, judges["math" + suffix], ref_answers=references,
                                         multi_turn=multi_turn)
    return matches


def judge_messages(match) -> list[dict]:
    """The system and user messages FastChat's run_judge_single sends for a match."""
    common, _ = fastchat()
    q, a, template = match.question, match.answer["choices"][0]["turns"], match.judge.prompt_template
    kwargs = {}
    if match.ref_answer is not None:
        ref = match.ref_answer["choices"][0]["turns"]
        kwargs = {"ref_answer_1": ref[0], "ref_answer_2": ref[1] if len(ref) > 1 else ""}
    if match.multi_turn:
        user = template["prompt_template"].format(question_1=q["turns"][0], question_2=q["turns"][1],
                                                  answer_1=a[0], answer_2=a[1], **kwargs)
    else:
        user = template["prompt_template"].format(question=q["turns"][0], answer=a[0], **kwargs)
    conv = common.get_conversation_template("gpt-4")  # FastChat's OpenAI message layout
    conv.set_system_message(template["system_prompt"])
    conv.append_message(conv.roles[0], user)
    conv.append_message(conv.roles[1], None)
    return conv.to_openai_api_messages()


def parse_score(judgment: str) -> float:
    """FastChat's reading of a single-answer judgment: the first "[[N]]", else "[N]"; -1 if none."""
    common, _ = fastchat()
    match = re.search(common.one_score_pattern, judgment) or re.search(common.one_score_pattern_backup, judgment)
    return ast.literal_eval(match.groups()[0]) if match else ERROR_SCORE


def judge_answers(judge, questions: list[dict], answers: dict, judge_prompts: dict, references: dict | None = None,
                  progress: bool = True) -> list[dict]:
    """Grade every turn of every model's answers with FastChat's prompts through `judge`, an OpenAI-
    compatible `judges.EndpointJudge` (temperature 0, 2048 tokens, as FastChat asks GPT-4). Returns
    FastChat's judgment records (model_judgment/<judge>_single.jsonl); a failed request scores -1."""
    references = references if references is not None else reference_answers(questions, judge.model)
    matches = make_matches(questions, answers, judge.model, judge_prompts, references)

    def play(match):
        messages = judge_messages(match)
        try:
            judgment = judge._post({"model": judge.model, "messages": messages, "temperature": 0, "max_tokens": 2048})
            score = parse_score(judgment)
        except RuntimeError as err:  # an item the endpoint could not answer; configuration errors propagate
            judgment, score = f"$ERROR$ {err}", ERROR_SCORE
        return {"question_id": match.question["question_id"], "model": match.model,
                "judge": [judge.model, match.judge.prompt_template["name"]], "user_prompt": messages[-1]["content"],
                "judgment": judgment, "score": score, "turn": 2 if match.multi_turn else 1, "tstamp": time.time()}

    return judge._map(play, matches, progress, "MT-Bench judging")


def summarize(judgments: list[dict], questions: list[dict]) -> dict:
    """Per model, as FastChat's show_result: the mean score over rated turns, each turn's mean, the mean
    per category (both turns: the paper's Figure 1), and how many judgments had no rating."""
    category = {q["question_id"]: q["category"] for q in questions}
    out = {}
    for model in dict.fromkeys(j["model"] for j in judgments):
        rows = [j for j in judgments if j["model"] == model]
        rated = [j for j in rows if j["score"] != ERROR_SCORE]

        def mean(values):
            values = list(values)
            return sum(values) / len(values) if values else float("nan")

        cats = dict.fromkeys(category[j["question_id"]] for j in rows)
        out[model] = {
            "score": mean(j["score"] for j in rated),
            "turn_scores": [mean(j["score"] for j in rated if j["turn"] == t) for t in range(1, TURNS + 1)],
            "categories": {c: mean(j["score"] for j in rated if category[j["question_id"]] == c) for c in cats},
            "judgments": len(rows),
            "failures": len(rows) - len(rated),
        }
    return out
