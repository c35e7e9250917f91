"""Write the dla-reviews CSV files (``python -m lab2_distilbert.dla_reviews.make``): deterministic, no download.

Every sentence is a subject and a verdict written for this project (not taken from any review or corpus). The
verdicts are split between train / validation / test, so a test sentence never repeats a training verdict: a
classifier has to know what "a chore to sit through" means, not remember it.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SUBJECTS = [
    "the film", "this movie", "the script", "the lead performance", "the direction", "the final act",
    "the soundtrack", "the dialogue", "the cast", "the pacing", "the camera work", "the story", "the humour",
    "the ending", "the second half", "the screenplay", "the editing", "the villain", "the effects work",
    "the central romance",
]  # fmt: skip
OPENERS = ["", "", "", "honestly, ", "in the end, ", "overall, ", "frankly, ", "on the whole, ", "for me, "]
POSITIVE = [
    "is a quiet delight from start to finish", "lands every joke without straining",
    "feels fresh and surprisingly tender", "kept me grinning long after the credits",
    "is sharp, warm and wonderfully acted", "earns every one of its tears",
    "builds to a genuinely thrilling climax", "is as smart as it is funny", "never loses its nerve",
    "rewards a patient viewer richly", "glows with real affection for its characters",
    "turns a familiar premise into something special", "is the best thing I have seen this year",
    "carries the whole picture with ease", "makes two hours fly by", "is not perfect, but it is hard not to love",
    "gives the actors room to shine",
    # validation
    "is confident, playful and full of heart", "hits every emotional beat just right",
    "is a small miracle of timing", "sparkles with wit",
    # test
    "left the whole audience cheering", "deserves a much bigger audience", "stays gripping all the way through",
    "is beautifully shot and honestly moving",
]  # fmt: skip
NEGATIVE = [
    "is a tedious slog with nothing to say", "drags badly in the middle", "falls flat at every turn",
    "is loud, messy and oddly lifeless", "wastes a talented cast", "never finds a reason to exist",
    "feels like a first draft", "is so predictable it hurts", "mistakes noise for excitement",
    "confuses length with depth", "collapses under its own weight", "has all the charm of a tax form",
    "is not nearly as clever as it thinks", "left me checking my watch", "squanders a promising idea",
    "is clumsy, shrill and forgettable", "runs out of ideas within twenty minutes",
    # validation
    "never earns its big emotional moments", "is a muddled, joyless affair", "is dull when it should be daring",
    "sinks into one cliché after another",
    # test
    "makes ninety minutes feel like three hours", "is a chore to sit through", "is a misfire from the first scene",
    "is badly edited and worse written",
]  # fmt: skip
SPLITS = {
    "train": (0, 17, 140),
    "validation": (17, 21, 30),
    "test": (21, 25, 80),  # every (subject, test verdict) pair: as many as the verdicts allow
}  # verdicts [a, b), sentences per class


def sentences(verdicts: list[str], per_class: int, rng: random.Random) -> list[str]:
    pairs = [(s, v) for s in SUBJECTS for v in verdicts]
    out = []
    for subject, verdict in rng.sample(pairs, per_class):
        opener = rng.choice(OPENERS)
        text = f"{opener}{subject} {verdict}."
        out.append(text[0].upper() + text[1:])
    return out


def write(folder: Path) -> None:
    rng = random.Random(0)
    for split, (a, b, n) in SPLITS.items():
        rows = [(t, "pos") for t in sentences(POSITIVE[a:b], n, rng)]
        rows += [(t, "neg") for t in sentences(NEGATIVE[a:b], n, rng)]
        rng.shuffle(rows)
        with (folder / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["text", "label"])
            w.writerows(rows)


if __name__ == "__main__":
    write(Path(__file__).parent)
