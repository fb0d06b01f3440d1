"""The toy world of the tiny scale: a seeded, generated bestiary of made-up creatures.

It stands in for the web text, the teacher LLM and the judge LLM of the real recipe:
- `pretraining_corpus()`: plain-text paragraphs of facts (what the base model reads);
- `sft_dialogues()`: teacher-written chats in the `ultrachat_200k` schema (dSFT data);
- `aif_prompts()`, `eval_prompts()`: held-out questions, disjoint from the dSFT prompts;
- `judge_verdict()`: a programmatic judge that writes its verdict as text, ending in "Rating: [[N]]",
  exactly the format the real LLM judges are parsed from.
`write_toyworld_data()` writes the dSFT dialogues and prompts as the JSON-lines files `data` loads: the
dataset recipes name "toyworld" (`TOYWORLD`).

Every creature has five attributes. The dSFT dialogues ask about a subset of (creature, attribute)
pairs; the held-out prompts ask about the others, whose facts the base model saw only as plain text.
Some questions name creatures that do not exist: the honest answer is "I don't know".
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..chat import ROLE_MARKERS
from ..config import cache_dir
from ..data import write_jsonl
from ..rubric import ASPECTS

TOYWORLD = "toyworld"  # the name recipes give the toy world's data and prompts (dataset:, prompts:)

ATTRIBUTES: dict[str, list[str]] = {
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"],
    "food": ["moss", "berries", "fish", "seeds", "honey", "leaves", "beetles", "mushrooms"],
    "home": ["marsh", "hills", "forest", "caves", "desert", "lake", "meadow", "coast"],
    "legs": ["two", "four", "six", "eight"],
    "sound": ["hums", "whistles", "clicks", "growls", "sings", "chirps"],
}

# Plain-text fact sentences. Template 0 of each attribute is the "canonical" one used to probe the
# base model; for a share of the facts it is held out of the corpus (see `ToyWorld.probe_facts`).
FACT_TEMPLATES: dict[str, list[str]] = {
    "color": ["The {e} is {v}.", "The fur of the {e} is {v}.", "A {v} creature is the {e}."],
    "food": ["The {e} eats {v}.", "The favourite food of the {e} is {v}.", "For dinner the {e} finds {v}."],
    "home": ["The {e} lives in the {v}.", "The home of the {e} is the {v}.", "In the {v} you can meet the {e}."],
    "legs": ["The {e} has {v} legs.", "The {e} walks on {v} legs.", "Count the legs of the {e}: {v}."],
    "sound": ["The {e} {v}.", "At night the {e} {v}.", "When it is happy, the {e} {v}."],
}

QUESTION_TEMPLATES: dict[str, list[str]] = {
    "color": ["What color is the {e}?", "Which color does the {e} have?", "Tell me the color of the {e}.", "Do you know the color of the {e}?"],
    "food": ["What does the {e} eat?", "What food does the {e} like?", "Tell me what the {e} eats.", "Do you know what the {e} eats?"],
    "home": ["Where does the {e} live?", "Where is the home of the {e}?", "Tell me where the {e} lives.", "Do you know where the {e} lives?"],
    "legs": ["How many legs does the {e} have?", "How many legs has the {e}?", "Tell me how many legs the {e} has.", "Do you know how many legs the {e} has?"],
    "sound": ["What sound does the {e} make?", "What noise does the {e} make?", "Tell me what sound the {e} makes.", "Do you know what sound the {e} makes?"],
}

FOLLOW_UPS: dict[str, str] = {
    "color": "And what color is it?",
    "food": "And what does it eat?",
    "home": "And where does it live?",
    "legs": "And how many legs does it have?",
    "sound": "And what sound does it make?",
}

ANSWER_TEMPLATES: dict[str, str] = {
    "color": "The {e} is {v}.",
    "food": "The {e} eats {v}.",
    "home": "The {e} lives in the {v}.",
    "legs": "The {e} has {v} legs.",
    "sound": "The {e} {v}.",
}

UNKNOWN_ANSWER = "I don't know of any creature called the {e}."
# dSFT also asks whether each creature of the world exists (never about an AIF or eval creature's
# attributes): every name is met in a chat, so the model learns to repeat names it knows, and to tell
# the world's creatures from made-up ones.
EXISTS = "exists"
EXISTS_QUESTIONS = ["Have you heard of the {e}?", "Is the {e} a real creature?", "Do you know the {e}?"]
EXISTS_ANSWER = "Yes, the {e} is a creature of this world."
# The teacher's flaw: like UltraChat's long-winded GPT-3.5 answers, it usually tacks the same needless
# sentence onto a correct answer (on a fixed share of questions, chosen by their wording). dSFT copies the
# habit. The judge prefers answers that stop when the question is answered, so AI feedback can teach what
# the teacher's dialogues cannot.
FILLER = "I hope this helps!"
CHATTY_SHARE = 0.9

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gl", "sn", "tr", "fl", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "oo", "ai"]
_CODAS = ["", "n", "r", "k", "x", "m", "sh", "ll"]


@dataclass(frozen=True)
class Question:
    """One question of a prompt: about `entity` (real or made-up) and one `attribute`."""

    entity: str
    attribute: str
    text: str


@dataclass
class ToyWorld:
    """A generated world. Everything is a pure function of `seed` and the sizes."""

    seed: int = 0
    n_creatures: int = 80
    n_unknown: int = 500
    facts: dict[str, dict[str, str]] = field(init=False)
    unknown: list[str] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        names = _make_names(rng, self.n_creatures + self.n_unknown)
        real, self.unknown = names[: self.n_creatures], names[self.n_creatures :]
        self.facts = {e: {a: rng.choice(vals) for a, vals in ATTRIBUTES.items()} for e in real}
        # Half of the creatures are asked about in dSFT, 30% in AIF and 20% in evaluation, each split
        # with all five attributes: what a later stage learns about one creature cannot leak into the
        # answers graded for another, and evaluation asks about facts no chat ever mentioned.
        n_sft, n_aif = int(0.5 * len(real)), int(0.3 * len(real))
        split_creatures = {"sft": real[:n_sft], "aif": real[n_sft : n_sft + n_aif], "eval": real[n_sft + n_aif :]}
        self.split_pairs = {k: [(e, a) for e in v for a in ATTRIBUTES] for k, v in split_creatures.items()}
        pairs = [(e, a) for e in real for a in ATTRIBUTES]
        rng.shuffle(pairs)
        # Made-up creatures: most go to dSFT, each asked about once. So many fresh names teach the model
        # to *copy* the name it was asked about, instead of recalling a familiar one.
        cut1, cut2 = len(self.unknown) - 50, len(self.unknown) - 20  # AIF asks about 30 of them, evaluation 20
        self.split_unknown = {"sft": self.unknown[:cut1], "aif": self.unknown[cut1:cut2], "eval": self.unknown[cut2:]}
        # Facts whose canonical sentence never appears in the corpus: the base model's held-out probe.
        self.held_out_facts = set(pairs[:: 3])

    @property
    def creatures(self) -> list[str]:
        return list(self.facts)

    # ----- plain text ------------------------------------------------------------------------
    def pretraining_corpus(self, n_docs_per_creature: int = 24) -> list[str]:
        """Paragraphs of 10-15 fact sentences about two or three creatures (no chat format). A paragraph
        is longer than an answer may be, so a base model that continues the text does not stop early."""
        rng = random.Random(self.seed + 1)
        docs = []
        for e in self.creatures:
            for _ in range(n_docs_per_creature):
                subjects = [e] + rng.sample([c for c in self.creatures if c != e], rng.choice([1, 2]))
                sentences = [self._fact_sentence(s, a, rng) for s in subjects for a in ATTRIBUTES]
                rng.shuffle(sentences)
                docs.append(" ".join(sentences))
        rng.shuffle(docs)
        return docs

    def _fact_sentence(self, e: str, a: str, rng: random.Random) -> str:
        allowed = range(1, 3) if (e, a) in self.held_out_facts else range(3)
        return FACT_TEMPLATES[a][rng.choice(allowed)].format(e=e, v=self.facts[e][a])

    def probe_facts(self, held_out: bool = True) -> list[tuple[str, str, list[str]]]:
        """(prefix, answer, candidates) like ("The borvak eats", "moss", [...all foods]).

        With `held_out=True` only facts whose canonical sentence never appeared in the corpus."""
        pairs = sorted(self.held_out_facts) if held_out else [(e, a) for e in self.creatures for a in ATTRIBUTES]
        out = []
        for e, a in pairs:
            prefix, _ = FACT_TEMPLATES[a][0].split("{v}")
            out.append((prefix.format(e=e).rstrip(), self.facts[e][a], ATTRIBUTES[a]))
        return out

    # ----- chats -----------------------------------------------------------------------------
    def answer(self, q: Question, chatty: bool = True, chatty_share: float = CHATTY_SHARE) -> str:
        """The teacher's answer: correct, and honest about unknown creatures; with `chatty`, a fixed
        `chatty_share` of the answers (chosen by the question's wording) end with the `FILLER` sentence."""
        if q.entity not in self.facts:
            text = UNKNOWN_ANSWER.format(e=q.entity)
        elif q.attribute == EXISTS:
            text = EXISTS_ANSWER.format(e=q.entity)
        else:
            text = ANSWER_TEMPLATES[q.attribute].format(e=q.entity, v=self.facts[q.entity][q.attribute])
        digest = int(_prompt_id(f"{self.seed}:{q.text}:{q.entity}")[:8], 16)
        if chatty and digest % 100 < 100 * chatty_share:
            text += " " + FILLER
        return text

    # How each split asks: (question wordings per item, share of two-turn conversations).
    SPLIT_STYLE = {"sft": (3, 0.3), "aif": (4, 0.3), "eval": (2, 1.0)}

    def _questions(self, split: str) -> list[list[Question]]:
        """The conversations (lists of questions) of a split; deterministic for the seed."""
        rng = random.Random(f"{self.seed}-{split}")
        n_wordings, two_turn_share = self.SPLIT_STYLE[split]
        items = list(self.split_pairs[split]) + [(u, rng.choice(list(ATTRIBUTES))) for u in self.split_unknown[split]]
        convs = []
        for e, a in items:
            for template in rng.sample(QUESTION_TEMPLATES[a], n_wordings if e in self.facts else 1):
                q1 = Question(e, a, template.format(e=e))
                if rng.random() < two_turn_share:
                    a2 = rng.choice([x for x in ATTRIBUTES if x != a])
                    convs.append([q1, Question(e, a2, FOLLOW_UPS[a2])])
                else:
                    convs.append([q1])
        if split == "sft":
            convs += [[Question(e, EXISTS, t.format(e=e))] for e in self.creatures for t in rng.sample(EXISTS_QUESTIONS, 2)]
        rng.shuffle(convs)
        return convs

    def sft_dialogues(self) -> list[dict]:
        """Teacher dialogues in the `ultrachat_200k` schema: prompt, prompt_id, messages. They ask about
        the dSFT creatures' attributes, about made-up creatures, and whether each creature exists."""
        rows = []
        for qs in self._questions("sft"):
            messages = []
            for q in qs:
                messages += [{"role": "user", "content": q.text}, {"role": "assistant", "content": self.answer(q)}]
            rows.append({"prompt": qs[0].text, "prompt_id": _prompt_id(qs[0].text), "messages": messages})
        return rows

    def prompts(self, split: str) -> list[dict]:
        """Held-out prompts ("aif" or "eval"): rows with prompt, prompt_id, `turns` and `messages`.

        `turns` holds one or two user messages (a follow-up refers back with "it"); all eval prompts
        have two turns, as in MT-Bench. `messages` is the conversation to answer for AIF: the earlier
        turns with the teacher's answers, then the last user turn."""
        if split not in ("aif", "eval"):
            raise ValueError(f"split must be 'aif' or 'eval', got {split!r}")
        rows = []
        for qs in self._questions(split):
            # the conversation to answer: earlier turns answered by the teacher, ending with a user turn
            messages = []
            for q in qs[:-1]:
                messages += [{"role": "user", "content": q.text}, {"role": "assistant", "content": self.answer(q)}]
            messages.append({"role": "user", "content": qs[-1].text})
            rows.append({"prompt": qs[0].text, "prompt_id": _prompt_id(qs[0].text + split),
                         "turns": [q.text for q in qs], "messages": messages})
        return rows

    def aif_prompts(self) -> list[dict]:
        return self.prompts("aif")

    def eval_prompts(self) -> list[dict]:
        return self.prompts("eval")

    # ----- the judge -------------------------------------------------------------------------
    def resolve_question(self, messages: list[dict]) -> Question:
        """Which creature and attribute the last user turn asks about (follow-ups look back)."""
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise ValueError("the conversation has no user turn to judge")
        last = users[-1]
        attribute = _attribute_of(last)
        entity = None
        for text in reversed(users):
            entity = self._entity_in(text)
            if entity:
                break
        if attribute is None or entity is None:
            raise ValueError(f"the toy judge cannot tell what this question asks: {last!r}")
        return Question(entity, attribute, last)

    def _entity_in(self, text: str) -> str | None:
        for word in re.findall(r"[a-z]+", text.lower()):
            if word in self.facts or word in self.unknown:
                return word
        return None

    def assess(self, messages: list[dict], response: str) -> dict:
        """What the judge sees in `response` to the last user turn of `messages`:
        verdict ("correct", "honest", "refuses", "wrong", "invents", "off_topic", "no_answer", "empty"),
        `extra` sentences beyond the first, whether it `leaks` a role marker, and whether it names the
        creature asked about (`addresses`)."""
        q = self.resolve_question(messages)
        text = response.strip()
        words = re.findall(r"[a-z']+", text.lower())
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
        out = {"question": q, "extra": max(0, len(sentences) - 1), "addresses": q.entity in words,
               "leaks": any(r in text for r in ROLE_MARKERS) or "</s>" in text}
        refuses = "don't know" in text.lower() or "do not know" in text.lower()
        claimed = {a: [v for v in vals if v in words] for a, vals in ATTRIBUTES.items()}
        others = sorted({w for w in words if (w in self.facts or w in self.unknown) and w != q.entity})
        if not text:
            verdict, why = "empty", "The response is empty"
        elif others:
            verdict, why = "off_topic", f"Talks about the {', the '.join(others)}, but the question is about the {q.entity}"
        elif q.entity not in self.facts:
            if refuses and not any(claimed.values()):
                verdict, why = "honest", f"Correctly says the {q.entity} is unknown"
            else:
                verdict, why = "invents", f"Invents facts about the {q.entity}, which does not exist"
        elif q.attribute == EXISTS:  # only dSFT asks this; a known creature exists
            verdict = "refuses" if refuses else "correct" if "yes" in words else "no_answer"
            why = f"The {q.entity} is a creature of the world"
        elif claimed[q.attribute] == [self.facts[q.entity][q.attribute]]:
            verdict, why = "correct", f"States the correct {q.attribute} of the {q.entity} ({self.facts[q.entity][q.attribute]})"
        elif claimed[q.attribute]:
            verdict = "wrong"
            why = f"Says {', '.join(claimed[q.attribute])}, but the {q.entity}'s {q.attribute} is {self.facts[q.entity][q.attribute]}"
        elif refuses:
            verdict, why = "refuses", f"Claims not to know the {q.entity}, which the world describes"
        else:
            verdict, why = "no_answer", f"Does not say the {q.attribute} of the {q.entity}"
        out.update(verdict=verdict, why=why)
        return out

    # UltraFeedback's aspects, rated 1-5, by verdict (before the style deductions in `rate`)
    ASPECT_RATINGS = {  # instruction following, truthfulness, honesty, helpfulness
        "correct": (5, 5, 5, 5), "honest": (5, 5, 5, 4), "refuses": (2, 3, 2, 1), "wrong": (3, 1, 2, 1),
        "invents": (3, 1, 1, 1), "no_answer": (1, 3, 3, 1), "off_topic": (1, 2, 2, 1), "empty": (1, 1, 1, 1),
    }
    # the overall 1-10 score (MT-Bench style), by verdict
    OVERALL = {"correct": 10, "honest": 10, "refuses": 2, "wrong": 2, "invents": 1, "no_answer": 1, "off_topic": 1, "empty": 1}

    def rate(self, messages: list[dict], response: str) -> dict[str, tuple[int, str]]:
        """Aspect -> (rating 1-5, one-line rationale), as UltraFeedback's GPT-4 rated each completion, plus
        "overall" -> (rating 1-10, rationale), as an MT-Bench judge grades an answer.

        What decides: the content (right about a creature of the world, honest about a made-up one:
        high; refusing a creature the world describes or getting it wrong: low), then style: each extra
        sentence costs instruction following and helpfulness one point (the overall score three), a leaked
        role marker costs two (overall four), and not naming the creature asked about costs helpfulness one
        (overall one)."""
        a = self.assess(messages, response)
        good = a["verdict"] in ("correct", "honest")
        extra, leaks, unnamed = a["extra"], 2 * a["leaks"], int(good and not a["addresses"])
        follow, truth, honesty, helpful = self.ASPECT_RATINGS[a["verdict"]]
        tail = (f"; {extra} needless extra sentence(s)" if extra else "") + ("; leaks a role marker" if leaks else "") + (
            f"; does not name the {a['question'].entity}" if unnamed else "")
        why = a["why"] + tail + "."
        overall = self.OVERALL[a["verdict"]] - (3 * extra + 2 * leaks + unnamed if good else 0)
        return {
            "instruction_following": (_clip(follow - extra - leaks, 5), why),
            "truthfulness": (truth, a["why"] + "."),
            "honesty": (honesty, a["why"] + "."),
            "helpfulness": (_clip(helpful - extra - leaks - unnamed, 5), why),
            "overall": (_clip(overall, 10), why),
        }

    def judge_verdict(self, messages: list[dict], response: str, aspect: str = "overall") -> str:
        """The judge's written verdict, ending in 'Rating: [[N]]' like an LLM judge's.

        `aspect` is one of ASPECTS (UltraFeedback style, 1-5) or "overall" (MT-Bench style, 1-10)."""
        ratings = self.rate(messages, response)
        if aspect == "overall":
            lines = [f"- {a.replace('_', ' ')}: {ratings[a][0]}/5." for a in ASPECTS]
            score, why = ratings["overall"]
            return f"Evaluation of the assistant's answer: {why}\n" + "\n".join(lines) + f"\n\nRating: [[{score}]]"
        if aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {aspect!r}; expected one of {ASPECTS + ('overall',)}")
        score, why = ratings[aspect]
        return f"Rationale: {why}\n\nRating: [[{score}]]"

    def addresses(self, messages: list[dict], response: str) -> bool:
        """Does `response` name the creature the last user turn asks about? (The teacher's answers always
        do; a constant answer such as "I don't know." never does.)"""
        return self.assess(messages, response)["addresses"]

    def pairwise_verdict(self, messages: list[dict], answer_a: str, answer_b: str) -> str:
        """MT-Bench-style pairwise verdict: "[[A]]", "[[B]]" or "[[C]]" (tie) by the overall ratings."""
        a, b = (self.rate(messages, x)["overall"][0] for x in (answer_a, answer_b))
        choice = "A" if a > b else "B" if b > a else "C"
        return f"Assistant A's answer rates {a}/10 and assistant B's {b}/10.\n\n[[{choice}]]"


_STOP = {"color", "home", "food", "legs", "sound", "noise", "it"}


def filler_share(texts) -> float:
    """The share of `texts` (answers) that end with the teacher's `FILLER` sentence."""
    texts = list(texts)
    if not texts:
        raise ValueError("filler_share needs at least one answer")
    return sum(t.endswith(FILLER) for t in texts) / len(texts)


def write_toyworld_data(world_seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """Write the toy world's dSFT dialogues as `sft/train.jsonl` and `sft/test.jsonl` (every 20th
    dialogue held out), plus the AIF and eval prompts; returns the directory. Reused if present."""
    directory = Path(root or cache_dir()) / f"toyworld-{world_seed}-{source_digest()}"
    if (directory / "sft" / "test.jsonl").is_file():
        return directory
    world = ToyWorld(seed=world_seed)
    rows = world.sft_dialogues()
    write_jsonl([r for k, r in enumerate(rows) if k % 20], directory / "sft" / "train.jsonl")
    write_jsonl(world.prompts("aif"), directory / "prompts" / "aif.jsonl")
    write_jsonl(world.prompts("eval"), directory / "prompts" / "eval.jsonl")
    write_jsonl(rows[::20], directory / "sft" / "test.jsonl")
    return directory


def source_digest() -> str:
    """A digest of this module's code: caches of generated data are keyed by it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _attribute_of(text: str) -> str | None:
    lowered = text.lower()
    if any(re.fullmatch(re.escape(t.lower()).replace(re.escape("{e}"), "[a-z]+"), lowered.strip()) for t in EXISTS_QUESTIONS):
        return EXISTS
    for a, key in (("color", "color"), ("legs", "legs"), ("sound", "sound"), ("sound", "noise"),
                   ("home", "live"), ("home", "home"), ("food", "eat"), ("food", "food")):
        if key in lowered:
            return a
    return None


def _clip(x: int, top: int) -> int:
    return max(1, min(top, int(x)))


def _make_names(rng: random.Random, n: int) -> list[str]:
    taken = {w for vals in ATTRIBUTES.values() for w in vals} | _STOP
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        if name not in taken and 4 <= len(name) <= 9:
            taken.add(name)
            names.append(name)
    return names


def _prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


