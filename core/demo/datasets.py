"""The demo's datasets: small, synthetic, written for `distilbert-heads demo`.

Each task gets a train and a test split of a few hundred examples, generated from templates
with a fixed seed and shipped as JSONL in ``distilbert_heads/demo/`` so they double as
examples of the file formats. The test split uses held-out names and places, so a model
has to learn the pattern, not memorise the strings. Regenerate with
``python -m distilbert_heads.demo.datasets``; a test checks the shipped files match.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distilbert_heads.atomic import atomic_path

DATA_DIR = Path(__file__).parent
SEED = 20261124
SIZES = {"train": 480, "test": 120}

PEOPLE = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Marie Curie",
    "Niels Bohr",
    "Emmy Noether",
    "Carl Gauss",
    "Rosalind Franklin",
    "Max Planck",
    "Lise Meitner",
    "Paul Dirac",
    "Hedy Lamarr",
    "Srinivasa Ramanujan",
    "Katherine Johnson",
    "Enrico Fermi",
    "Dorothy Hodgkin",
    "John Nash",
    "Barbara McClintock",
    "Werner Heisenberg",
    "Chien Wu",
    "Erwin Schrodinger",
    "Mary Somerville",
]
PLACES = [
    "Paris",
    "London",
    "New York",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
    "Cairo",
    "Lima",
    "Oslo",
    "Sydney",
    "Toronto",
    "Mexico City",
    "Buenos Aires",
    "Cape Town",
    "Hong Kong",
    "Vienna",
    "Prague",
    "Dublin",
    "Lisbon",
    "San Francisco",
    "Nairobi",
]
ORGS = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Labs",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Soylent",
    "Cyberdyne Systems",
    "Tyrell Corporation",
    "Aperture Science",
    "Vandelay Industries",
    "Wonka Industries",
    "Gringotts Bank",
    "Oceanic Airlines",
    "Monarch Solutions",
]
YEARS = [str(year) for year in range(1950, 2025)]

POSITIVE = [
    "wonderful",
    "excellent",
    "great",
    "delightful",
    "superb",
    "fantastic",
    "lovely",
    "brilliant",
    "enjoyable",
    "charming",
    "impressive",
    "pleasant",
]
NEGATIVE = [
    "terrible",
    "awful",
    "dreadful",
    "boring",
    "horrible",
    "disappointing",
    "poor",
    "dull",
    "annoying",
    "mediocre",
    "painful",
    "bad",
]
THINGS = ["movie", "meal", "hotel", "book", "concert", "service", "trip", "game", "show", "class", "phone", "album"]
SENTIMENT_TEMPLATES = [
    "The {thing} was {adj}.",
    "What a {adj} {thing}!",
    "I found the {thing} {adj} from start to finish.",
    "Honestly, the {thing} felt {adj} and I would say so again.",
    "Our {thing} today was {adj}, {adj2} even.",
    "Everyone agreed the {thing} was {adj}.",
]

NER_TEMPLATES = [
    "{PER} moved to {LOC} to join {ORG} .",
    "{ORG} opened a new office in {LOC} last year .",
    "In {LOC} , {PER} met the founders of {ORG} .",
    "{PER} left {ORG} and now lives in {LOC} .",
    "Reporters in {LOC} asked {PER} about {ORG} .",
    "{PER} and {PER2} visited {LOC} .",
]

QA_FACTS = [
    ("{PER} founded {ORG} in {YEAR} .", {"who": "PER", "when": "YEAR", "what": "ORG"}),
    ("The headquarters of {ORG} are in {LOC} .", {"where": "LOC"}),
]
QA_QUESTIONS = {
    "who": ["Who founded {ORG}?", "Who started {ORG}?"],
    "when": ["When was {ORG} founded?", "In what year was {ORG} founded?"],
    "where": ["Where are the headquarters of {ORG}?", "Where is {ORG} based?"],
}

PAIR_SUBJECTS = ["The cat", "My brother", "The company", "Our team", "The old man", "A student", "The band", "The chef"]
PAIR_VERBS = [
    ("bought", "purchased"),
    ("started", "began"),
    ("fixed", "repaired"),
    ("liked", "enjoyed"),
    ("left", "departed from"),
    ("built", "constructed"),
    ("found", "discovered"),
    ("sold", "traded away"),
]
PAIR_OBJECTS = [
    "a red car",
    "the small house",
    "a new bakery",
    "the broken radio",
    "an old guitar",
    "the garden",
    "a wooden boat",
    "the city library",
]


def _split_pool(pool: list[str], split: str) -> list[str]:
    """Train sees three quarters of each name list, test the rest."""
    cut = (len(pool) * 3) // 4
    return pool[:cut] if split == "train" else pool[cut:]


def sentiment_examples(rng: random.Random, split: str) -> Iterator[dict[str, Any]]:
    while True:
        label = rng.choice(["negative", "positive"])
        words = POSITIVE if label == "positive" else NEGATIVE
        template = rng.choice(SENTIMENT_TEMPLATES)
        text = template.format(thing=rng.choice(THINGS), adj=rng.choice(words), adj2=rng.choice(words))
        yield {"text": text, "label": label}


def ner_examples(rng: random.Random, split: str) -> Iterator[dict[str, Any]]:
    pools = {"PER": _split_pool(PEOPLE, split), "LOC": _split_pool(PLACES, split), "ORG": _split_pool(ORGS, split)}
    while True:
        tokens: list[str] = []
        tags: list[str] = []
        for piece in rng.choice(NER_TEMPLATES).split():
            slot = piece.strip("{}") if piece.startswith("{") else None
            if slot is None:
                tokens.append(piece)
                tags.append("O")
                continue
            entity_type = slot.rstrip("2")
            words = rng.choice(pools[entity_type]).split()
            tokens.extend(words)
            tags.extend([f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(words) - 1))
        yield {"tokens": tokens, "tags": tags}


def qa_examples(rng: random.Random, split: str) -> Iterator[dict[str, Any]]:
    pools = {
        "PER": _split_pool(PEOPLE, split),
        "LOC": _split_pool(PLACES, split),
        "ORG": _split_pool(ORGS, split),
        "YEAR": YEARS,
    }
    while True:
        values = {slot: rng.choice(pool) for slot, pool in pools.items()}
        facts = [fact for fact, _ in QA_FACTS]
        rng.shuffle(facts)
        context = " ".join(fact.format(**values) for fact in facts).replace(" .", ".")
        kind = rng.choice(sorted(QA_QUESTIONS))
        slot = {"who": "PER", "when": "YEAR", "where": "LOC"}[kind]
        question = rng.choice(QA_QUESTIONS[kind]).format(**values)
        answer = values[slot]
        yield {
            "question": question,
            "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]},
        }


def pairwise_examples(rng: random.Random, split: str) -> Iterator[dict[str, Any]]:
    while True:
        subject, (verb, synonym), obj = rng.choice(PAIR_SUBJECTS), rng.choice(PAIR_VERBS), rng.choice(PAIR_OBJECTS)
        text_a = f"{subject} {verb} {obj}."
        if rng.random() < 0.5:
            text_b = (
                f"{subject} {synonym} {obj}."
                if rng.random() < 0.5
                else f"{obj.capitalize()} was {verb} by {subject.lower()}."
            )
            label = "paraphrase"
        else:
            other_subject = rng.choice([s for s in PAIR_SUBJECTS if s != subject])
            other_object = rng.choice([o for o in PAIR_OBJECTS if o != obj])
            other_verb = rng.choice([v for v in PAIR_VERBS if v[0] != verb])[rng.randrange(2)]
            text_b = f"{other_subject} {other_verb} {other_object}."
            label = "different"
        yield {"text_a": text_a, "text_b": text_b, "label": label}


GENERATORS: dict[str, Callable[[random.Random, str], Iterator[dict[str, Any]]]] = {
    "sentiment": sentiment_examples,
    "ner": ner_examples,
    "qa": qa_examples,
    "pairwise": pairwise_examples,
}


def generate(task: str, split: str) -> list[dict[str, Any]]:
    """The examples of one task and split, deterministic for a given seed, without duplicates."""
    rng = random.Random(f"{SEED}-{task}-{split}")
    seen: set[str] = set()
    examples = []
    for example in GENERATORS[task](rng, split):
        key = json.dumps(example, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        examples.append(example)
        if len(examples) == SIZES[split]:
            return examples
    raise AssertionError("unreachable")


def data_path(task: str, split: str) -> Path:
    return DATA_DIR / f"{task}.{split}.jsonl"


def write_all(directory: Path = DATA_DIR) -> None:
    for task in GENERATORS:
        for split in SIZES:
            with atomic_path(directory / f"{task}.{split}.jsonl") as temp, open(temp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(example, ensure_ascii=False) + "\n" for example in generate(task, split))


if __name__ == "__main__":
    write_all()
