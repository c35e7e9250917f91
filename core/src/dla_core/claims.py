"""A finding's claim and its verdict, in plain Python (no numpy): the labs' recipes declare their claims at import
time and stay light (`labN reproduce --help` loads no numpy); ``dla_core.stats`` computes the intervals they judge.

    Claim("better", 0.2)   A - B > 0.2          Claim("better", -0.02)   A less than 0.02 below B (or above it)
    Claim("within", 0.05)  -0.05 < A - B < 0.05
    verdict(interval, claim) -> Verdict: ✓ supported / ✗ contradicted / ～ inconclusive
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal, Protocol


def significant(x: float, digits: int = 3, *, sign: bool = False) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept (1.0 -> "1.00"), thousands separated
    (21450 -> "21,450", whole numbers from 10**digits on are not rounded); ``sign`` adds a "+" to positives."""
    if not math.isfinite(x):
        return {math.inf: "inf", -math.inf: "-inf"}.get(x, "nan")
    x += 0.0  # -0.0 -> 0.0
    plus = "+" if sign and x != 0 else ""
    text = f"{x:{plus}#.{digits}g}"
    if "e+" in text:  # 10**digits or more, once rounded: a whole number with separators
        return f"{x:{plus},.0f}"
    return text if "e" in text else text.rstrip(".")


class Verdict(enum.Enum):
    """What a finding's interval says about it; the value is (mark, word)."""

    SUPPORTED = ("✓", "supported")
    CONTRADICTED = ("✗", "contradicted")
    INCONCLUSIVE = ("～", "inconclusive")

    @property
    def mark(self) -> str:
        return self.value[0]

    @property
    def word(self) -> str:
        return self.value[1]

    def __str__(self) -> str:
        return f"{self.mark} {self.word}"


@dataclass(frozen=True)
class Claim:
    """What a finding says about the difference d = A - B.

    ``better``: d > margin ("A better than B by more than margin"; margin 0: "A better than B"; a negative
    margin states non-inferiority, "A at most |margin| below B").
    ``within``: -margin < d < margin ("A and B less than margin apart", equivalence; margin > 0).
    A margin is written as declared (0.02, not 0.0200): it is a chosen threshold, not a measurement.
    """

    kind: Literal["better", "within"]
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("better", "within"):
            raise ValueError(f"a claim is 'better' or 'within', not {self.kind!r}")
        if not math.isfinite(self.margin) or (self.kind == "within" and self.margin <= 0):
            raise ValueError(f"a {self.kind!r} claim needs a finite margin (> 0 for 'within'): {self.margin}")

    def describe(self, a: str = "A", b: str = "B") -> str:
        m = f"{abs(self.margin):g}"
        if self.kind == "within":
            return f"{a} and {b} less than {m} apart"
        if self.margin > 0:
            return f"{a} better than {b} by more than {m}"
        if self.margin < 0:
            return f"{a} at most {m} below {b}"
        return f"{a} better than {b}"


class Interval(Protocol):
    low: float
    high: float


def verdict(interval: Interval, claim: Claim) -> Verdict:
    """✓ if every value of the interval satisfies the claim, ✗ if none does, ～ otherwise.

    ``better`` by m: supported when low > m, contradicted when high <= m.
    ``within`` m (equivalence, TOST-style): supported when the whole interval lies inside (-m, m),
    contradicted when it lies wholly outside it (high <= -m or low >= m), inconclusive when it straddles
    either edge. With a 95% interval this is two one-sided tests at 2.5% each, stricter than the textbook
    TOST on a 90% interval. An interval with no width of evidence (one seed: (-inf, inf)) is inconclusive.
    """
    low, high = interval.low, interval.high
    if claim.kind == "better":
        inside, outside = low > claim.margin, high <= claim.margin
    else:
        m = claim.margin
        inside, outside = (-m < low and high < m), (high <= -m or low >= m)
    if inside:
        return Verdict.SUPPORTED
    if outside:
        return Verdict.CONTRADICTED
    return Verdict.INCONCLUSIVE
