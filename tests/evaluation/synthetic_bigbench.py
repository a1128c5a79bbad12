"""BIG-bench-format task folders generated in code, for tests and offline trials of the evaluation.

Each task is a ``<task>/task.json`` like BIG-bench's (``examples`` with ``input`` and ``target``
or ``target_scores``), worded so that ``demo.sources.tasks`` finds it eligible for the pool
(plain ASCII prose). It is not BIG-bench: a stand-in where the ``bigbench`` sdist cannot be had,
and ``_source.json`` says so. ``python -m tests.evaluation.synthetic_bigbench DIR`` writes them.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOURCE = "synthetic stand-in tasks (tests/evaluation/synthetic_bigbench.py), not BIG-bench"
NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Julia"]
ANIMALS = ["cat", "dog", "horse", "rabbit", "tiger", "eagle", "whale", "snake", "mouse", "sheep"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "garden",
    "window",
    "letter",
    "candle",
    "forest",
    "mirror",
    "basket",
    "ladder",
    "pencil",
    "bottle",
    "island",
    "rocket",
]
ANTONYMS = {
    "hot": "cold",
    "tall": "short",
    "happy": "sad",
    "fast": "slow",
    "early": "late",
    "heavy": "light",
    "open": "closed",
    "loud": "quiet",
    "rich": "poor",
    "wet": "dry",
}
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]

Example = dict[str, Any]


def _choice(question: str, options: list[str], right: str) -> Example:
    return {"input": question, "target_scores": {o: int(o == right) for o in options}}


def _add(r: random.Random) -> Example:
    a, b = r.randint(0, 99), r.randint(0, 99)
    return {"input": f"What do you get when you add {a} and {b} together?", "target": str(a + b)}


def _subtract(r: random.Random) -> Example:
    a, b = r.randint(50, 99), r.randint(0, 49)
    return {"input": f"Take away {b} from {a}. How many are left?", "target": str(a - b)}


def _sort_words(r: random.Random) -> Example:
    ws = r.sample(WORDS, 4)
    return {
        "input": f"Sort these words alphabetically: {' '.join(ws)}",
        "target": " ".join(sorted(ws)),
    }


def _reverse(r: random.Random) -> Example:
    w = r.choice(WORDS) + r.choice(WORDS)
    return {"input": f"Spell the word {w} backwards, letter by letter.", "target": w[::-1]}


def _weekday(r: random.Random) -> Example:
    d, n = r.randrange(7), r.randint(1, 12)
    right = DAYS[(d + n) % 7]
    q = f"Today is {DAYS[d]}. Which day of the week will it be in {NUMBER_WORDS[n]} days?"
    return _choice(q, r.sample([x for x in DAYS if x != right], 3) + [right], right)


def _antonym(r: random.Random) -> Example:
    word, right = r.choice(list(ANTONYMS.items()))
    q = f"{r.choice(NAMES)} asks for the opposite of the word {word}. Which word is it?"
    return _choice(q, r.sample([v for v in ANTONYMS.values() if v != right], 3) + [right], right)


def _older(r: random.Random) -> Example:
    a, b = r.sample(NAMES, 2)
    x, y = r.sample(range(5, 80), 2)
    q = f"{a} is {x} years old and {b} is {y} years old. Who is older?"
    return _choice(q, [a, b], a if x > y else b)


def _color_of(r: random.Random) -> Example:
    animal, color, name = r.choice(ANIMALS), r.choice(COLORS), r.choice(NAMES)
    q = f"{name} painted a {animal} {color} and then took a walk. What color is the {animal}?"
    return _choice(q, r.sample([c for c in COLORS if c != color], 3) + [color], color)


def _count_letters(r: random.Random) -> Example:
    w = r.choice(WORDS) + r.choice(WORDS)
    return {
        "input": f"How many letters does the word {w} have? Answer in words.",
        "target": NUMBER_WORDS[len(w)] if len(w) < len(NUMBER_WORDS) else str(len(w)),
    }


def _plural(r: random.Random) -> Example:
    w = r.choice(WORDS + ANIMALS)
    n = r.randint(2, 9)
    return {
        "input": f"Complete the phrase with the right form: {NUMBER_WORDS[n]} {w}",
        "target": f"{NUMBER_WORDS[n]} {w}s" if not w.endswith("sh") else f"{NUMBER_WORDS[n]} {w}es",
    }


def _first_letter(r: random.Random) -> Example:
    ws = r.sample(WORDS, 3)
    return {
        "input": f"Write the first letter of each word: {', '.join(ws)}",
        "target": "".join(w[0] for w in ws),
    }


def _bigger_animal(r: random.Random) -> Example:
    sizes = {
        a: i
        for i, a in enumerate(
            ["mouse", "rabbit", "cat", "snake", "dog", "eagle", "sheep", "tiger", "horse", "whale"]
        )
    }
    a, b = r.sample(list(sizes), 2)
    q = f"{r.choice(NAMES)} wonders which animal is usually bigger: a {a} or a {b}?"
    return _choice(q, [a, b], a if sizes[a] > sizes[b] else b)


def _yes_no_even(r: random.Random) -> Example:
    n = r.randint(0, 200)
    return _choice(
        f"Is the number {n} an even number? Answer yes or no.",
        ["yes", "no"],
        "yes" if n % 2 == 0 else "no",
    )


def _rhyme(r: random.Random) -> Example:
    pairs = [
        ("cat", "hat"),
        ("tree", "bee"),
        ("moon", "spoon"),
        ("cake", "lake"),
        ("rain", "train"),
        ("star", "car"),
        ("bell", "shell"),
        ("fish", "dish"),
    ]
    word, right = r.choice(pairs)
    others = r.sample([p[1] for p in pairs if p[1] != right], 3)
    return _choice(
        f"Which word rhymes with {word}, said {r.choice(NAMES)}?", others + [right], right
    )


GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "add_numbers": _add,
    "subtract_numbers": _subtract,
    "sort_words": _sort_words,
    "reverse_words": _reverse,
    "weekday_after": _weekday,
    "antonyms": _antonym,
    "who_is_older": _older,
    "color_tracking": _color_of,
    "count_letters": _count_letters,
    "plurals": _plural,
    "first_letters": _first_letter,
    "animal_sizes": _bigger_animal,
    "even_numbers": _yes_no_even,
    "rhymes": _rhyme,
}


def write_synthetic_tasks(out_dir: Path, n_examples: int = 120, seed: int = 0) -> Path:
    """Write every generator's task (``n_examples`` distinct inputs each) and the marker."""
    out_dir = Path(out_dir)
    for name, gen in GENERATORS.items():
        r = random.Random(f"{seed}:{name}")
        seen: dict[str, Example] = {}
        for _ in range(50 * n_examples):
            ex = gen(r)
            seen.setdefault(ex["input"], ex)
            if len(seen) == n_examples:
                break
        task = {
            "name": name,
            "description": SOURCE,
            "keywords": ["synthetic"],
            "examples": list(seen.values()),
        }
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        (out_dir / name / "task.json").write_text(json.dumps(task, indent=1))
    (out_dir / "_source.json").write_text(json.dumps({"sdist": SOURCE, "sha256": None}))
    return out_dir


if __name__ == "__main__":
    print(write_synthetic_tasks(Path(sys.argv[1])))
