"""The demo/full-scale benchmarks, offline: FastChat's MT-Bench rules on a local file of
`HuggingFaceH4/mt_bench_prompts`' schema, alpaca-eval's annotator against a fake OpenAI-compatible
endpoint on 127.0.0.1, lm-eval's task names and shots against Table 2, the dry-run plan, the radar plot."""

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from zephyr_utils import alpacaeval, benchmarks, open_llm_leaderboard

NO_FASTCHAT = "FastChat's llm_judge is not installed (pip install 'zephyr-utils[eval]'): MT-Bench rules not checked"
NO_ALPACA_EVAL = "alpaca-eval is not installed (pip install 'zephyr-utils[eval]'): its annotator is not driven"
NO_LM_EVAL = "lm-eval is not installed (pip install 'zephyr-utils[eval]'): task names not checked against its registry"


class FakeEndpoint:
    """An OpenAI-compatible /chat/completions server on 127.0.0.1 whose replies come from `script(messages)`.
    Every request body is kept in `requests`."""

    def __init__(self, script):
        self.script, self.requests = script, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                content = endpoint.script(body["messages"])
                reply = json.dumps({"id": "fake", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": content}}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()  # shutdown() waits a poll

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def offline_openai_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-for-a-fake-server")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ---------------------------------------------------------------- MT-Bench

# Hand-written questions in HuggingFaceH4/mt_bench_prompts' schema (prompt, prompt_id, category, reference).
QUESTIONS = [
    {"prompt": ["Write a two-line poem about rain.", "Now make it rhyme."], "prompt_id": 11, "category": "writing", "reference": []},
    {"prompt": ["What is 17 + 25?", "And times 2?"], "prompt_id": 12, "category": "math", "reference": ["42", "84"]},
    {"prompt": ["Why is the sky blue?", "Explain it to a child."], "prompt_id": 13, "category": "stem", "reference": []},
    {"prompt": ["Tom is taller than Ann; Ann than Bo. Who is shortest?", "Who is tallest?"], "prompt_id": 14,
     "category": "reasoning", "reference": ["Bo", "Tom"]},
    {"prompt": ["Pretend to be a pirate greeting me.", "Now say goodbye."], "prompt_id": 15, "category": "roleplay", "reference": []},
    {"prompt": ["Write a Python function that reverses a list.", "Make it in place."], "prompt_id": 16, "category": "coding",
     "reference": ["def rev(x): return x[::-1]", "x.reverse()"]},
]
# The temperatures FastChat's gen_model_answer documents for MT-Bench's categories.
DOCUMENTED_TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "math": 0.0, "coding": 0.0, "reasoning": 0.0, "stem": 0.1}
REFERENCE_GRADED = {"math", "reasoning", "coding"}

# A judge prompts file in FastChat's schema (name, type, system_prompt, prompt_template, output_format), with
# our own short wording: the real file is read from FastChat's repository at run time.
JUDGE_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "SYS single-v1", "output_format": "[[rating]]",
     "prompt_template": "GENERAL\nQ: {question}\nA: {answer}"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "SYS single-math-v1", "output_format": "[[rating]]",
     "prompt_template": "REFERENCE-GUIDED\nQ: {question}\nREF: {ref_answer_1}\nA: {answer}"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "SYS single-v1-multi-turn", "output_format": "[[rating]]",
     "prompt_template": "GENERAL-2\nQ1: {question_1}\nA1: {answer_1}\nQ2: {question_2}\nA2: {answer_2}"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "SYS single-math-v1-multi-turn",
     "output_format": "[[rating]]",
     "prompt_template": "REFERENCE-GUIDED-2\nQ1: {question_1}\nREF1: {ref_answer_1}\nA1: {answer_1}\n"
                        "Q2: {question_2}\nREF2: {ref_answer_2}\nA2: {answer_2}"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def questions_file(tmp_path):
    return write_jsonl(tmp_path / "mt_bench_prompts.jsonl", QUESTIONS)


@pytest.fixture
def judge_prompts_file(tmp_path):
    return write_jsonl(tmp_path / "judge_prompts.jsonl", JUDGE_PROMPTS)


class RecordingSampler:
    """Answers "<category> turn <k>" and records (temperature, conversations) of every call."""

    def __init__(self, questions):
        self.category = {q["turns"][0]: q["category"] for q in questions}
        self.calls = []

    def __call__(self, conversations, max_new_tokens=64, temperature=0.0, seed=0, **kwargs):
        self.calls.append((temperature, [list(c) for c in conversations]))
        return [SimpleNamespace(text=f"{self.category[c[0]['content']]} turn {(len(c) + 1) // 2}") for c in conversations]


def test_mt_bench_questions_are_read_from_the_hub_schema_and_bad_rows_are_named(questions_file, tmp_path):
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    from zephyr_utils import mt_bench

    questions = mt_bench.load_questions(str(questions_file))
    assert [q["question_id"] for q in questions] == [11, 12, 13, 14, 15, 16]
    assert questions[1]["turns"] == ["What is 17 + 25?", "And times 2?"] and questions[1]["reference"] == ["42", "84"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [QUESTIONS[0], {**QUESTIONS[1], "category": None}])
    with pytest.raises(ValueError, match=r"bad.jsonl: row 1: field 'category'"):
        mt_bench.load_questions(str(bad))


def test_mt_bench_answers_use_each_category_temperature_and_the_model_own_first_answer(questions_file):
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    from zephyr_utils import mt_bench

    questions = mt_bench.load_questions(str(questions_file))
    sampler = RecordingSampler(questions)
    answers = mt_bench.generate_answers(sampler, questions, "dpo", max_new_tokens=16)
    sampled_at = {}  # (category, turn) -> temperature
    for temperature, conversations in sampler.calls:
        for conv in conversations:
            sampled_at[(sampler.category[conv[0]["content"]], (len(conv) + 1) // 2)] = temperature
            if len(conv) == 3:  # turn 2 sees the model's own turn-1 answer
                assert conv[1] == {"role": "assistant", "content": f"{sampler.category[conv[0]['content']]} turn 1"}
    assert sampled_at == {(c, t): DOCUMENTED_TEMPERATURES[c] for c in DOCUMENTED_TEMPERATURES for t in (1, 2)}
    assert answers[1]["choices"][0]["turns"] == ["math turn 1", "math turn 2"] and answers[1]["model_id"] == "dpo"


def test_mt_bench_answers_are_in_fastchat_format(questions_file, tmp_path):
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    from fastchat.llm_judge.common import check_data, load_model_answers

    from zephyr_utils import mt_bench

    questions = mt_bench.load_questions(str(questions_file))
    answers = mt_bench.generate_answers(RecordingSampler(questions), questions, "sft")
    mt_bench.write_answers(tmp_path / "model_answer" / "sft.jsonl", answers)
    loaded = load_model_answers(str(tmp_path / "model_answer"))  # FastChat's own loader and check
    check_data(questions, loaded, {}, ["sft"], {})
    assert loaded["sft"][14]["choices"][0]["turns"] == ["reasoning turn 1", "reasoning turn 2"]


def test_mt_bench_judging_selects_reference_guided_prompts_and_scores_as_fastchat(questions_file, judge_prompts_file,
                                                                                    offline_openai_env):
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    from zephyr_utils import mt_bench
    from zephyr_utils.judges import EndpointJudge

    questions = mt_bench.load_questions(str(questions_file))
    answers = {"dpo": {a["question_id"]: a for a in mt_bench.generate_answers(RecordingSampler(questions), questions, "dpo")}}
    # scripted verdicts: a rating per (question, turn); the stem question's second turn gets no readable rating
    ratings = {("Why is the sky blue?", 2): None, ("What is 17 + 25?", 1): 3, ("What is 17 + 25?", 2): 5}

    def script(messages):
        user = messages[-1]["content"]
        turn = 2 if "Q2:" in user else 1
        question = re.search(r"Q1?: (.*)", user).group(1)
        rating = ratings.get((question, turn), 8)
        return "I cannot decide." if rating is None else f"Short explanation. Rating: [[{rating}]]"

    server = FakeEndpoint(script)
    try:
        judge = EndpointJudge("gpt-4", base_url=server.url, max_retries=0)
        prompts = mt_bench.load_judge_prompts(str(judge_prompts_file))
        judgments = mt_bench.judge_answers(judge, questions, answers, prompts, progress=False)
    finally:
        server.close()

    assert len(judgments) == len(server.requests) == 2 * len(QUESTIONS)
    category = {q["question_id"]: q["category"] for q in questions}
    for j in judgments:
        graded_with_reference = category[j["question_id"]] in REFERENCE_GRADED
        expected = ("single-math-v1" if graded_with_reference else "single-v1") + ("-multi-turn" if j["turn"] == 2 else "")
        assert j["judge"] == ["gpt-4", expected]
        assert ("REF" in j["user_prompt"]) == graded_with_reference
    math_turn_2 = next(j for j in judgments if j["question_id"] == 12 and j["turn"] == 2)
    assert "REF1: 42" in math_turn_2["user_prompt"] and "REF2: 84" in math_turn_2["user_prompt"]
    assert "A2: math turn 2" in math_turn_2["user_prompt"]
    for body in server.requests:  # FastChat's request: the template's system prompt, temperature 0, 2048 tokens
        first_line = body["messages"][-1]["content"].split("\n")[0]
        name = next(p["name"] for p in JUDGE_PROMPTS if p["prompt_template"].split("\n")[0] == first_line)
        assert body["messages"][0] == {"role": "system", "content": f"SYS {name}"}
        assert body["temperature"] == 0 and body["max_tokens"] == 2048 and body["model"] == "gpt-4"

    summary = mt_bench.summarize(judgments, questions)["dpo"]
    rated = [3, 5] + [8] * (2 * len(QUESTIONS) - 3)  # by hand: 11 rated turns, one failure left out
    assert summary["failures"] == 1 and summary["judgments"] == 12
    assert summary["score"] == pytest.approx(sum(rated) / len(rated))
    assert summary["categories"]["math"] == 4.0 and summary["categories"]["stem"] == 8.0
    assert summary["turn_scores"] == pytest.approx([(3 + 8 * 5) / 6, (5 + 8 * 4) / 5])


def test_a_reference_graded_question_without_reference_is_named_before_anything_runs(tmp_path):
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    from zephyr_utils import mt_bench

    rows = [QUESTIONS[0], {**QUESTIONS[5], "reference": []}]
    questions = mt_bench.load_questions(str(write_jsonl(tmp_path / "q.jsonl", rows)))
    with pytest.raises(ValueError, match=r"16 \(coding\).*mt_bench_reference_answers"):
        mt_bench.check_references(questions, mt_bench.reference_answers(questions, "gpt-4"), "gpt-4")
    # a FastChat reference-answer file fills it
    ref = write_jsonl(tmp_path / "gpt-4.jsonl", [{"question_id": 16, "model_id": "gpt-4",
                                                   "choices": [{"index": 0, "turns": ["a", "b"]}]}])
    mt_bench.check_references(questions, mt_bench.reference_answers(questions, "gpt-4", str(ref)), "gpt-4")


# ---------------------------------------------------------------- AlpacaEval

# A tiny hand-written reference set in AlpacaEval's schema (the real data are CC BY-NC: never vendored).
REFERENCE = [{"instruction": f"Name a colour, number {i}.", "output": f"Blue {i}.", "generator": "text_davinci_003",
              "dataset": "handwritten"} for i in range(5)]


def test_model_outputs_are_written_in_alpaca_eval_format(tmp_path):
    rows = alpacaeval.generate_outputs(lambda convs, **kw: [SimpleNamespace(text="Red.") for _ in convs], REFERENCE, "dpo")
    path = alpacaeval.write_model_outputs(tmp_path / "model_outputs.json", rows)
    try:
        from alpaca_eval.utils import load_or_convert_to_dataframe
    except ImportError:  # the documented schema: a JSON list of {instruction, output, generator}
        records = json.loads(path.read_text())
        assert all({"instruction", "output", "generator"} <= set(r) for r in records)
    else:
        frame = load_or_convert_to_dataframe(path)  # alpaca_eval's own loader
        assert {"instruction", "output", "generator"} <= set(frame.columns) and set(frame["generator"]) == {"dpo"}
        assert list(frame["instruction"]) == [r["instruction"] for r in REFERENCE]
    with pytest.raises(ValueError, match=r"row 1: field 'output'"):
        alpacaeval.write_model_outputs(tmp_path / "bad.json", [rows[0], {**rows[1], "output": None}])


def test_the_versions_name_alpaca_eval_own_annotators_and_judges():
    pytest.importorskip("alpaca_eval", reason=NO_ALPACA_EVAL)
    import yaml
    from alpaca_eval import constants

    assert (constants.ANNOTATOR_CONFIG_AE1, constants.ANNOTATOR_CONFIG_AE2) == ("alpaca_eval_gpt4", "weighted_alpaca_eval_gpt4_turbo")
    for name, v in alpacaeval.VERSIONS.items():
        config = yaml.safe_load((constants.EVALUATORS_CONFIG_DIR / v.annotator / "configs.yaml").read_text())
        assert config[v.annotator]["completions_kwargs"]["model_name"] == v.judge_model, name


def test_alpaca_eval_v1_annotator_end_to_end_against_a_fake_endpoint(tmp_path, offline_openai_env):
    pytest.importorskip("alpaca_eval", reason=NO_ALPACA_EVAL)
    # the model's answer wins on instructions 0, 2 and 3 (by hand: 3 of 5, a 60% win rate)
    answers = {r["instruction"]: ("Crimson, a deep red." if i in (0, 2, 3) else "no") for i, r in enumerate(REFERENCE)}
    model_wins = {r["instruction"]: i in (0, 2, 3) for i, r in enumerate(REFERENCE)}

    def script(messages):  # read the annotator's prompt: which of model_1/model_2 shows the model's answer?
        user = messages[-1]["content"]
        instruction = re.search(r'"instruction": """(.*?)"""', user, re.S).group(1)
        first = re.search(r'"model": "model_1",\s*"answer": """(.*?)"""', user, re.S).group(1)
        model_is_first = first == answers[instruction]
        best = "model_1" if model_is_first == model_wins[instruction] else "model_2"
        other = "model_2" if best == "model_1" else "model_1"
        return f"[{{'model': '{best}', 'rank': 1}}, {{'model': '{other}', 'rank': 2}}]"

    rows = [{"instruction": r["instruction"], "output": answers[r["instruction"]], "generator": "dpo"} for r in REFERENCE]
    outputs = alpacaeval.write_model_outputs(tmp_path / "model_outputs.json", rows)
    server = FakeEndpoint(script)
    try:
        metrics = alpacaeval.evaluate("alpaca_eval", outputs, REFERENCE, tmp_path / "ae", base_url=server.url)
    finally:
        server.close()

    wins = [1.0, 0.0, 1.0, 1.0, 0.0]
    mean = sum(wins) / 5
    sd = math.sqrt(sum((w - mean) ** 2 for w in wins) / 4)
    assert metrics["win_rate"] == pytest.approx(100 * mean)
    assert metrics["standard_error"] == pytest.approx(100 * sd / math.sqrt(5))
    assert metrics["n_total"] == 5 and metrics["annotator"] == "alpaca_eval_gpt4"
    assert len(server.requests) == 5  # the annotator's own settings drove every request
    assert all(b["model"] == "gpt-4" and b["temperature"] == 0 and b["max_tokens"] == 100 for b in server.requests)
    assert (tmp_path / "ae" / "annotations.json").is_file()  # kept beside the outputs, to re-read or re-judge
    assert "test-key" not in (tmp_path / "ae" / "openai_clients.yaml").read_text()


def test_bad_alpaca_eval_reference_file_is_named(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps([REFERENCE[0], {"instruction": "x"}]))
    with pytest.raises(ValueError, match=r"ref.json: row 1: field 'output'"):
        alpacaeval.load_reference_outputs("alpaca_eval", path)


# ---------------------------------------------------------------- Table 2 with lm-eval

# The Open LLM Leaderboard (v1) setup behind the paper's Table 2: task, shots, metric.
TABLE_2 = {"ARC": ("arc_challenge", 25, "acc_norm"), "HellaSwag": ("hellaswag", 10, "acc_norm"),
           "MMLU": ("mmlu", 5, "acc"), "TruthfulQA": ("truthfulqa_mc2", 0, "acc")}


def test_lm_eval_tasks_and_shots_are_table_2s():
    assert {t.column: (t.task, t.num_fewshot, t.metric) for t in open_llm_leaderboard.TASKS} == TABLE_2
    for t in open_llm_leaderboard.TASKS:
        command = open_llm_leaderboard.lm_eval_command("my/model", t, "out")
        assert command[command.index("--tasks") + 1] == t.task
        assert command[command.index("--num_fewshot") + 1] == str(t.num_fewshot)


def test_lm_eval_knows_each_task_and_reports_its_metric():
    pytest.importorskip("lm_eval", reason=NO_LM_EVAL)
    from lm_eval import tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    # lm-eval's own index, of the folders that hold the four tasks (indexing all of its tasks takes ~15 s)
    folders = [Path(tasks.__file__).parent / name for name in ("arc", "hellaswag", "mmlu", "truthfulqa")]
    index = tasks.TaskManager(include_path=folders, include_defaults=False).task_index
    for column, (task, _, metric) in TABLE_2.items():
        entry = index[task]
        if task == "mmlu":  # a group of 57 subjects
            config = load_yaml(entry.yaml_path, resolve_func=False)
            assert entry.kind.name == "GROUP" and config["aggregate_metric_list"][0]["metric"] == metric
        else:
            assert metric in [m["metric"] for m in entry.cfg["metric_list"]], column


def test_table_2_scores_are_read_from_lm_eval_results(tmp_path):
    subjects = {"mmlu_stem": ["mmlu_algebra", "mmlu_physics"], "mmlu_humanities": ["mmlu_law"]}
    per_task = {"arc_challenge": {"acc,none": 0.5, "acc_norm,none": 0.62}, "hellaswag": {"acc_norm,none": 0.845},
                "truthfulqa_mc2": {"acc,none": 0.574},
                "mmlu_algebra": {"acc,none": 0.3}, "mmlu_physics": {"acc,none": 0.6}, "mmlu_law": {"acc,none": 0.9},
                "mmlu": {"acc,none": 0.8}}  # lm-eval's size-weighted group number: not the leaderboard's
    for task in ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2"):
        (tmp_path / task / "model").mkdir(parents=True)
        results = {"results": per_task, "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_humanities"], **subjects}}
        (tmp_path / task / "model" / "results_2026-01-01.json").write_text(json.dumps(results))
    scores = open_llm_leaderboard.read_scores(tmp_path)
    assert scores == pytest.approx({"ARC": 62.0, "HellaSwag": 84.5, "MMLU": 100 * (0.3 + 0.6 + 0.9) / 3, "TruthfulQA": 57.4})


# ---------------------------------------------------------------- plan, table, figure

def test_full_scale_dry_run_prints_models_tasks_judge_calls_and_cost(capsys):
    from zephyr_utils.cli import main

    main(["eval", "--scale", "full", "--dry-run"])
    text = capsys.readouterr().out
    assert "base: mistralai/Mistral-7B-v0.1" in text and "sft: " in text and "dpo: " in text
    for task, shots, _ in TABLE_2.values():
        assert f"--tasks {task} --num_fewshot {shots}" in text
    assert "alpaca_eval_gpt4" in text and "text_davinci_003" in text and "weighted_alpaca_eval_gpt4_turbo" in text
    # by hand: 3 models; MT-Bench 80 x 2 turns to gpt-4; AlpacaEval v1 805 to gpt-4, v2 805 to gpt-4-1106-preview
    calls = 3 * 80 * 2 + 3 * 805 + 3 * 805
    usd = (240 * (700 * 30 + 250 * 60) + 240 * (1400 * 30 + 250 * 60) + 2415 * (700 * 30 + 40 * 60)
           + 2415 * (1100 * 10 + 1 * 30)) / 1e6
    assert f"total: {calls} judge calls, estimated ${usd:.2f}" in text


def test_tiny_scale_keeps_the_toy_judge():
    from zephyr_utils.config import load_recipe

    recipe = load_recipe("eval", "tiny")
    assert recipe.benchmarks == [] and recipe.judge == "toy"
    with pytest.raises(ValueError, match="unknown benchmarks"):
        benchmarks.check_benchmarks(["mt_bench", "mt-bench"])


def test_results_table_sets_the_run_beside_the_paper():
    results = {"models": {"dpo": {"mt_bench": {"score": 6.5}, "alpaca_eval": {"win_rate": 80.25},
                                  "open_llm_leaderboard": {"ARC": 55.0, "HellaSwag": 80.0, "MMLU": 58.126, "TruthfulQA": 50.0}}}}
    lines = benchmarks.results_table(results).splitlines()
    assert lines[0].startswith("| model | MT-Bench | AlpacaEval v1 (%) |")
    assert "| Zephyr-7B (paper: dSFT + dDPO) | 7.34 | 90.60 | – | 62.03 | 84.52 | 61.44 | 57.44 |" in lines
    assert "| dpo (this run) | 6.50 | 80.25 | – | 55.00 | 80.00 | 58.13 | 50.00 |" in lines


def test_mt_bench_radar_draws_one_closed_polygon_per_model():
    import matplotlib

    matplotlib.use("Agg")
    from zephyr_utils.plotting import plot_mt_bench_radar

    scores = {"sft": {"writing": 6.0, "math": 2.0, "coding": 3.0}, "dpo": {"coding": 3.5, "writing": 8.0, "math": 2.5}}
    ax = plot_mt_bench_radar(scores)
    assert ax.name == "polar" and [t.get_text() for t in ax.get_xticklabels()] == ["Writing", "Math", "Coding"]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["sft", "dpo"]
    assert list(lines[1].get_ydata()) == [8.0, 2.5, 3.5, 8.0]  # in the first model's category order, closed
    with pytest.raises(ValueError, match="'dpo' has no score for math"):
        plot_mt_bench_radar({"sft": {"math": 1.0}, "dpo": {"writing": 1.0}})


def test_run_benchmarks_writes_each_tool_files_and_one_table(tmp_path, questions_file, judge_prompts_file, monkeypatch,
                                                             offline_openai_env):
    """The wiring of `zephyr eval` at scale, with a fake sampler in place of a GPU model and a fake judge."""
    pytest.importorskip("fastchat.llm_judge.common", reason=NO_FASTCHAT)
    pytest.importorskip("alpaca_eval", reason=NO_ALPACA_EVAL)
    from zephyr_utils.config import load_recipe
    from zephyr_utils.evaluation import run_eval

    class FakeSampler:  # "good" answers from dpo, short ones from sft
        def __init__(self, path, **kwargs):
            self.path = path

        def __call__(self, conversations, **kwargs):
            return [SimpleNamespace(text="a careful and complete answer" if self.path == "dpo-path" else "ok") for _ in conversations]

    def script(messages):
        user = messages[-1]["content"]
        if '"instruction"' in user:  # AlpacaEval: the reference ("Blue ...") loses to the careful answer only
            first = re.search(r'"model": "model_1",\s*"answer": """(.*?)"""', user, re.S).group(1)
            careful_first = first.startswith("a careful")
            careful_present = "a careful" in user
            best = ("model_1" if careful_first else "model_2") if careful_present else ("model_1" if first.startswith("Blue") else "model_2")
            return f"[{{'model': '{best}', 'rank': 1}}, {{'model': '{'model_2' if best == 'model_1' else 'model_1'}', 'rank': 2}}]"
        return "Rating: [[9]]" if "a careful" in user.split("A2:" if "A2:" in user else "A:")[-1] else "Rating: [[4]]"

    server = FakeEndpoint(script)
    monkeypatch.setattr(benchmarks, "Sampler", FakeSampler)
    monkeypatch.setattr(benchmarks, "model_paths", lambda recipe: {"sft": "sft-path", "dpo": "dpo-path"})
    monkeypatch.setattr(alpacaeval, "load_reference_outputs", lambda name, source=None: REFERENCE)
    recipe = load_recipe("eval", "demo", benchmarks=["mt_bench", "alpaca_eval"], prompts=str(questions_file),
                         judge_base_url=server.url, mt_bench_judge_prompts=str(judge_prompts_file), output_dir=str(tmp_path / "eval"))
    try:
        out = run_eval(recipe)
    finally:
        server.close()

    results = json.loads((out / "results.json").read_text())["models"]
    assert results["dpo"]["mt_bench"]["score"] == 9.0 and results["sft"]["mt_bench"]["score"] == 4.0
    assert results["dpo"]["alpaca_eval"]["win_rate"] == 100.0 and results["sft"]["alpaca_eval"]["win_rate"] == 0.0
    assert set(results["dpo"]["mt_bench"]["categories"]) == {q["category"] for q in QUESTIONS}
    assert (out / "mt_bench" / "model_answer" / "dpo.jsonl").is_file() and (out / "alpaca_eval" / "sft" / "model_outputs.json").is_file()
    assert (out / "mt_bench" / "model_judgment" / "gpt-4_single.jsonl").read_text().count("\n") == 2 * 2 * len(QUESTIONS)
    assert "| dpo (this run) | 9.00 | 100.00 |" in (out / "results.md").read_text()
