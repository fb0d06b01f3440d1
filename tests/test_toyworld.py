import re

import pytest

from zephyr_utils.chat import validate_messages
from zephyr_utils.rubric import ASPECTS
from zephyr_utils.toy.world import ATTRIBUTES, EXISTS, ToyWorld


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
            elif q.attribute == EXISTS:  # says the creature exists, and nothing about its attributes
                assert answer.startswith(f"Yes, the {q.entity} ")
                assert not set(re.findall(r"[a-z]+", answer)) & {v for vals in ATTRIBUTES.values() for v in vals}
            else:
                assert world.facts[q.entity][q.attribute] in answer
    assert unknown_rows > 20


def test_every_name_of_the_world_is_met_in_a_dsft_chat_but_no_held_out_fact(world):
    text = " ".join(m["content"] for r in world.sft_dialogues() for m in r["messages"])
    assert all(f" {e} " in f" {text} ".replace("?", " ").replace(".", " ") for e in world.creatures)
    asked = {(q.entity, q.attribute) for r in world.sft_dialogues()
             for q in [world.resolve_question(r["messages"][: k + 1]) for k in range(0, len(r["messages"]), 2)]}
    held_out = {(e, a) for p in world.eval_prompts() + world.aif_prompts() for e, a in [
        (lambda q: (q.entity, q.attribute))(world.resolve_question([{"role": "user", "content": p["turns"][0]}]))]}
    assert held_out and not asked & held_out


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
        "chatty": rating(world.judge_verdict(conv, f"The {e} eats {food}. I hope this helps!")),
        "verbose": rating(world.judge_verdict(conv, f"The {e} eats {food}. The {e} eats {food}. It is nice.")),
        "leaks": rating(world.judge_verdict(conv, f"The {e} eats {food}.\n<|user|>\nthanks")),
        "unnamed": rating(world.judge_verdict(conv, f"It eats {food}.")),
        "refuses": rating(world.judge_verdict(conv, f"I don't know of any creature called the {e}.")),
        "constant": rating(world.judge_verdict(conv, "I don't know.")),
        "wrong": rating(world.judge_verdict(conv, f"The {e} eats {wrong}.")),
        "two_values": rating(world.judge_verdict(conv, f"The {e} eats {food} or {wrong}.")),
        "off_topic": rating(world.judge_verdict(conv, "The weather is nice.")),
        "empty": rating(world.judge_verdict(conv, "")),
    }
    assert scores["correct"] == 10 and scores["chatty"] == 7
    assert scores["correct"] > scores["unnamed"] > scores["chatty"] > scores["verbose"] > scores["refuses"]
    assert scores["correct"] > scores["leaks"] > scores["refuses"]
    # knowing the world is worth far more than refusing everything: a refusal rates like a wrong answer
    assert scores["refuses"] == scores["constant"] == scores["wrong"] == scores["two_values"] == 2
    assert scores["empty"] == 1 and scores["off_topic"] == 1


def test_aspect_ratings_are_ultrafeedbacks_1_to_5(world, known):
    e, conv, food = known
    for answer in (f"The {e} eats {food}.", f"The {e} eats {food}. I hope this helps!", "I don't know.", ""):
        for aspect in ASPECTS:
            assert 1 <= rating(world.judge_verdict(conv, answer, aspect)) <= 5
    assert [rating(world.judge_verdict(conv, f"The {e} eats {food}.", a)) for a in ASPECTS] == [5, 5, 5, 5]
    chatty = [rating(world.judge_verdict(conv, f"The {e} eats {food}. I hope this helps!", a)) for a in ASPECTS]
    assert chatty == [4, 5, 5, 4]  # instruction following and helpfulness pay for the needless sentence


def test_judge_rewards_honesty_about_unknown_creatures(world):
    u = world.unknown[0]
    conv = [{"role": "user", "content": f"Where does the {u} live?"}]
    assert rating(world.judge_verdict(conv, f"I don't know of any creature called the {u}.")) == 10
    assert rating(world.judge_verdict(conv, f"The {u} lives in the hills.")) == 1
    assert rating(world.judge_verdict(conv, f"The {u} lives in the hills.", "honesty")) == 1


def test_a_constant_refusal_scores_far_below_knowing_the_world(world):
    """The "I don't know." baseline on the eval prompts: it must not pass for a model that learnt something."""
    prompts = world.eval_prompts()
    constant = [rating(world.judge_verdict([{"role": "user", "content": p["turns"][0]}], "I don't know.")) for p in prompts]
    teacher = [rating(world.judge_verdict([{"role": "user", "content": p["turns"][0]}],
                                          world.answer(world.resolve_question([{"role": "user", "content": p["turns"][0]}]), chatty=False)))
               for p in prompts]
    assert sum(teacher) / len(teacher) == 10 and sum(constant) / len(constant) < 3.5


def test_teacher_is_chatty_on_a_fixed_share_of_answers(world):
    from zephyr_utils.toy.world import CHATTY_SHARE, FILLER, filler_share

    answers = [m["content"] for r in world.sft_dialogues() for m in r["messages"] if m["role"] == "assistant"]
    assert abs(filler_share(answers) - CHATTY_SHARE) < 0.05
    assert filler_share(["Blue.", f"Blue. {FILLER}", f"{FILLER} Blue."]) == 1 / 3  # only at the end
    with pytest.raises(ValueError):
        filler_share([])
    assert world.sft_dialogues() == ToyWorld(seed=0).sft_dialogues()  # the same answers every time


@pytest.mark.parametrize("share", [0.0, 0.75, 1.0])
def test_the_pools_teacher_is_chatty_on_the_aif_recipes_share(world, share):
    from zephyr_utils.toy.teacher import TeacherSampler
    from zephyr_utils.toy.world import FILLER, filler_share

    conversations = [[{"role": "user", "content": p["turns"][0]}] for p in world.prompts("aif")]
    answers = [c.text for c in TeacherSampler(world.seed, share)(conversations)]
    assert abs(filler_share(answers) - share) < 0.05
    plain = [c.text for c in TeacherSampler(world.seed, 0.0)(conversations)]
    assert all(a in (p, p + " " + FILLER) for a, p in zip(answers, plain))  # the same answers, with or without it


def test_addresses_needs_the_asked_creature_named(world, known):
    e, conv, food = known
    assert world.addresses(conv, f"The {e} eats {food}.")
    assert not world.addresses(conv, "I don't know.") and not world.addresses(conv, f"It eats {food}.")


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
    assert rating(world.judge_verdict(conv, f"I don't know of any creature called the {world.unknown[1]}.")) == 1


def test_world_seed_reaches_every_stage(tmp_path):
    """One `world_seed` picks the data, the prompts, the teacher, the judge and the base model; a stage
    that ignored it would train or grade on another world than it says."""
    from zephyr_utils import registry
    from zephyr_utils.aif import load_prompts
    from zephyr_utils.config import load_recipe
    from zephyr_utils.data import load_sft_data
    from zephyr_utils.evaluation import load_eval_prompts
    from zephyr_utils.judges import make_judge
    from zephyr_utils.runs import write_run_info
    from zephyr_utils.toy.base_model import tiny_base_path

    one = ToyWorld(seed=1)
    assert [r["messages"] for r in load_sft_data("toyworld", "train", world_seed=1)][:5] == [
        r["messages"] for k, r in enumerate(one.sft_dialogues()) if k % 20][:5]
    aif = load_recipe("aif", "tiny", world_seed=1)
    assert [p["prompt"] for p in load_prompts(aif)] == [p["prompt"] for p in one.aif_prompts()]
    teacher = registry.lookup("sampler", "teacher")(aif)  # the pool member `collect_completions` builds
    assert teacher.world.facts == one.facts and make_judge("toy", world_seed=1).world.facts == one.facts
    assert [p["turns"] for p in load_eval_prompts("toyworld", world_seed=1)] == [p["turns"] for p in one.eval_prompts()]
    assert tiny_base_path(load_recipe("base", "tiny", world_seed=1)) != tiny_base_path(load_recipe("base", "tiny"))
    write_run_info(tmp_path, aif, [])
    assert "world_seed: 1" in (tmp_path / "recipe.yaml").read_text()
