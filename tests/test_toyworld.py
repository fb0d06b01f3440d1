import re

import pytest

from zephyr_utils.chat import validate_messages
from zephyr_utils.judges import ASPECTS
from zephyr_utils.toyworld import ATTRIBUTES, ToyWorld


def test_world_is_deterministic_for_a_seed(world):
    again = ToyWorld(seed=0)
    assert again.facts == world.facts and again.sft_dialogues() == world.sft_dialogues()
    assert ToyWorld(seed=1).facts != world.facts


def test_corpus_is_plain_text_about_every_creature(world):
    corpus = world.pretraining_corpus()
    text = " ".join(corpus)
    assert "<|" not in text and "</s>" not in text
    assert all(c in text for c in world.creatures)
    assert not any(u in text for u in world.unknown)  # made-up creatures never appear


def test_held_out_canonical_sentences_never_appear_in_the_corpus(world):
    text = " ".join(world.pretraining_corpus())
    probes = world.probe_facts(held_out=True)
    assert len(probes) > 50
    for prefix, answer, candidates in probes:
        assert f"{prefix} {answer}" not in text and answer in candidates


def test_sft_dialogues_have_the_ultrachat_schema_and_correct_answers(world):
    rows = world.sft_dialogues()
    assert len(rows) > 500 and any(len(r["messages"]) == 4 for r in rows)
    unknown_rows = 0
    for r in rows:
        assert set(r) == {"prompt", "prompt_id", "messages"} and r["messages"][0]["content"] == r["prompt"]
        validate_messages(r["messages"])
        for k in range(0, len(r["messages"]), 2):
            q = world.resolve_question(r["messages"][: k + 1])
            answer = r["messages"][k + 1]["content"]
            assert answer == world.answer(q)
            if q.entity in world.unknown:
                unknown_rows += 1
                assert "don't know" in answer
            else:
                assert world.facts[q.entity][q.attribute] in answer
    assert unknown_rows > 20


def test_held_out_prompts_do_not_overlap_training_prompts(world):
    sft = {r["prompt"] for r in world.sft_dialogues()}
    aif = {r["prompt"] for r in world.aif_prompts()}
    ev = {r["prompt"] for r in world.eval_prompts()}
    assert len(aif) >= 500 and len(ev) >= 80
    assert not sft & aif and not sft & ev and not aif & ev
    # nor do they ask about the same (creature, attribute) facts as the dSFT data
    def pairs(prompts):
        return {(q.entity, q.attribute) for p in prompts for q in [world.resolve_question([{"role": "user", "content": p}])]}
    assert not pairs(sft) & pairs(ev) and not pairs(sft) & pairs(aif)
    assert all(len(r["turns"]) == 2 for r in world.eval_prompts())


def rating(verdict):
    return int(re.findall(r"\[\[(\d+)\]\]", verdict)[-1])


@pytest.fixture(scope="module")
def known(world):
    e = world.creatures[0]
    return e, [{"role": "user", "content": f"What does the {e} eat?"}], world.facts[e]["food"]


def test_judge_prefers_correct_concise_answers(world, known):
    e, conv, food = known
    wrong = next(v for v in ATTRIBUTES["food"] if v != food)
    scores = {
        "correct": rating(world.judge_verdict(conv, f"The {e} eats {food}.")),
        "verbose": rating(world.judge_verdict(conv, f"The {e} eats {food}. The {e} eats {food}. It is nice.")),
        "leaks": rating(world.judge_verdict(conv, f"The {e} eats {food}.\n<|user|>\nthanks")),
        "refuses": rating(world.judge_verdict(conv, f"I don't know of any creature called the {e}.")),
        "wrong": rating(world.judge_verdict(conv, f"The {e} eats {wrong}.")),
        "off_topic": rating(world.judge_verdict(conv, "The weather is nice.")),
        "empty": rating(world.judge_verdict(conv, "")),
    }
    assert scores["correct"] == 10
    assert scores["correct"] > scores["verbose"] > scores["wrong"]
    assert scores["correct"] > scores["leaks"] and scores["correct"] > scores["refuses"] > scores["wrong"] - 1
    assert scores["empty"] == 1 and scores["off_topic"] <= 4


def test_judge_rewards_honesty_about_unknown_creatures(world):
    u = world.unknown[0]
    conv = [{"role": "user", "content": f"Where does the {u} live?"}]
    assert rating(world.judge_verdict(conv, f"I don't know of any creature called the {u}.")) == 10
    assert rating(world.judge_verdict(conv, f"The {u} lives in the hills.")) <= 3
    assert rating(world.judge_verdict(conv, f"The {u} lives in the hills.", "honesty")) == 1


def test_follow_up_questions_resolve_to_the_first_turns_creature(world):
    e = world.creatures[3]
    conv = [{"role": "user", "content": f"What color is the {e}?"}, {"role": "assistant", "content": "..."},
            {"role": "user", "content": "And how many legs does it have?"}]
    q = world.resolve_question(conv)
    assert (q.entity, q.attribute) == (e, "legs")
    assert rating(world.judge_verdict(conv, f"The {e} has {world.facts[e]['legs']} legs.")) == 10


def test_verdicts_are_written_like_an_llm_judges(world, known):
    e, conv, food = known
    overall = world.judge_verdict(conv, f"The {e} eats {food}.")
    assert overall.rstrip().endswith("Rating: [[10]]") and all(a.replace("_", " ") in overall for a in ASPECTS)
    for aspect in ASPECTS:
        v = world.judge_verdict(conv, f"The {e} eats {food}.", aspect)
        assert v.startswith("Rationale:") and re.search(r"Rating: \[\[\d+\]\]$", v)
    with pytest.raises(ValueError, match="unknown aspect"):
        world.judge_verdict(conv, "x", "style")
    with pytest.raises(ValueError, match="cannot tell what this question asks"):
        world.judge_verdict([{"role": "user", "content": "Hello there"}], "x")


def test_judge_penalises_answers_about_another_creature(world):
    e, other, u = world.creatures[0], world.creatures[1], world.unknown[0]
    conv = [{"role": "user", "content": f"What color is the {e}?"}]
    assert rating(world.judge_verdict(conv, f"The {other} is {world.facts[e]['color']}.")) <= 3
    conv = [{"role": "user", "content": f"What color is the {u}?"}]
    assert rating(world.judge_verdict(conv, f"I don't know of any creature called the {world.unknown[1]}.")) <= 3
