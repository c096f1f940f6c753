"""Conclusions computed from numbers under rules fixed in code: pure functions, no training.

Every experiment's conclusion comes from here, so a report can only say what its numbers and
these stated rules support. The noise yardstick is the seed-to-seed spread: the range (max - min)
of a quantity over the seeds a net was trained with. One seed has no spread, so it supports no
conclusion. Runs that diverged count as missing (``None`` / NaN / inf), never as a number.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "COMPARE_RULE",
    "DEGRADATION_RULES",
    "Check",
    "Comparison",
    "DegradationVerdict",
    "SeedStats",
    "compare",
    "degradation_verdict",
    "final_values",
    "seed_stats",
]

DEGRADATION_RULES = (
    "Rules (fixed in code, applied to the final-epoch training error of every seed): the spread of a net is "
    "the range (max - min) over its seeds, and a difference counts only if it exceeds the larger spread of "
    "the two nets compared. (i) Plain nets: the mean training error rises at every step to the next depth, "
    "each time by more than that spread. (ii) Residual nets: for every pair of depths, the deeper net's mean "
    "training error is not above the shallower's by more than that spread. Both need at least two seeds "
    "per net and no diverged run; otherwise no verdict is given."
)

COMPARE_RULE = (
    "Rule (fixed in code): a run beats another when its mean over seeds is better by more than the larger "
    "seed-to-seed spread (range, max - min) of the two; otherwise there is no difference within the spread. "
    "One seed, or a run that diverged in some seeds only, supports no conclusion."
)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class SeedStats:
    """One quantity over seeds (missing values — diverged runs — are kept as ``None``)."""

    values: tuple[float | None, ...]

    @property
    def ok(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.values if _finite(v))

    @property
    def complete(self) -> bool:
        return len(self.ok) == len(self.values) > 0

    @property
    def n(self) -> int:
        return len(self.ok)

    @property
    def mean(self) -> float:
        return sum(self.ok) / len(self.ok) if self.ok else math.nan

    @property
    def lo(self) -> float:
        return min(self.ok) if self.ok else math.nan

    @property
    def hi(self) -> float:
        return max(self.ok) if self.ok else math.nan

    @property
    def spread(self) -> float:
        """Range over seeds; NaN with fewer than two values (one seed has no spread)."""
        return self.hi - self.lo if len(self.ok) >= 2 else math.nan

    def text(self, scale: float = 100.0, unit: str = " %", digits: int = 2, seeds: bool = True) -> str:
        """Mean and range: ``31.20 % (30.90–31.50 over 2 seeds)``; ``seeds=False``: ``31.20 % (30.90–31.50)``."""
        if not self.ok:
            return "-"
        f = lambda v: f"{scale * v:.{digits}f}"  # noqa: E731
        missing = len(self.values) - len(self.ok)
        tail = f", {missing} diverged" if missing else ""
        if len(self.ok) == 1:
            return f"{f(self.mean)}{unit} (1 seed{tail})"
        over = f" over {len(self.ok)} seeds" if seeds else ""
        return f"{f(self.mean)}{unit} ({f(self.lo)}–{f(self.hi)}{over}{tail})"

    def row(self) -> dict[str, Any]:
        return {"values": list(self.values), "mean": self.mean, "min": self.lo, "max": self.hi,
                "spread": self.spread, "n": self.n}


def seed_stats(values: Sequence[float | None]) -> SeedStats:
    return SeedStats(tuple(None if not _finite(v) else float(v) for v in values))


def final_values(runs: Mapping[Any, Sequence[Mapping[str, Any]]], key: str) -> SeedStats:
    """The last row's ``key`` of each seed's history (``{seed: rows}``); a missing key counts as missing."""
    out = []
    for rows in runs.values():
        last = next((r[key] for r in reversed(rows) if r.get(key) is not None), None) if rows else None
        out.append(last)
    return seed_stats(out)


@dataclass(frozen=True)
class Check:
    """One rule applied to numbers: ``ok`` is True / False, or None where the rule cannot decide."""

    claim: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "yes", False: "NO", None: "undecided"}[self.ok]
        return f"- {mark}: {self.claim} — {self.detail}"

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _margin(a: SeedStats, b: SeedStats) -> float:
    return max(a.spread, b.spread)


def _undecidable(stats: Mapping[str, SeedStats]) -> str | None:
    for name, s in stats.items():
        if not s.complete:
            return f"{name} diverged or has no result in {len(s.values) - s.n} of {len(s.values)} seed(s)"
        if s.n < 2:
            return f"{name} was trained with one seed: no spread to compare against"
    return None


@dataclass(frozen=True)
class DegradationVerdict:
    plain: list[Check]  # one per step to the next depth
    residual: list[Check]  # one per pair of depths
    plain_ok: bool | None  # (i) holds / fails / cannot be decided
    residual_ok: bool | None  # (ii)
    finals: dict[str, SeedStats]

    @property
    def shown(self) -> bool:
        return self.plain_ok is True and self.residual_ok is True

    def row(self) -> dict[str, Any]:
        return {"plain_ok": self.plain_ok, "residual_ok": self.residual_ok, "shown": self.shown,
                "plain": [c.row() for c in self.plain], "residual": [c.row() for c in self.residual],
                "final_train_error": {k: v.row() for k, v in self.finals.items()}, "rules": DEGRADATION_RULES}


def _all(checks: Sequence[Check]) -> bool | None:
    if not checks or any(c.ok is None for c in checks):
        return None
    return all(c.ok for c in checks)


def degradation_verdict(curves: Mapping[str, Mapping[Any, Sequence[Mapping[str, Any]]]],
                        depths: Sequence[int]) -> DegradationVerdict:
    """He et al. 2015's two observations (Fig. 1 / Fig. 6) checked at every depth, per
    :data:`DEGRADATION_RULES`. ``curves`` maps ``plainD`` / ``resnetD`` to ``{seed: rows}``, each row
    holding ``train_error`` (fraction); the last row of each seed is its final training error."""
    depths = sorted(depths)
    if len(depths) < 2:
        raise ValueError(f"the degradation verdict compares depths: give at least two, got {list(depths)}")
    finals = {f"{k}{d}": final_values(curves.get(f"{k}{d}", {}), "train_error")
              for k in ("plain", "resnet") for d in depths}

    def check(lo: str, hi: str, claim: str, holds) -> Check:
        """``holds(difference, margin)`` on the mean final training errors of nets ``hi`` minus ``lo``."""
        a, b = finals[lo], finals[hi]
        why = _undecidable({lo: a, hi: b})
        if why:
            return Check(claim, None, why)
        diff, margin = b.mean - a.mean, _margin(a, b)
        return Check(claim, holds(diff, margin), f"{hi} {b.text(seeds=False)} vs {lo} {a.text(seeds=False)}: "
                                                 f"{'+' if diff >= 0 else ''}{100 * diff:.2f} points against a "
                                                 f"spread of {100 * margin:.2f}")

    plain = [check(f"plain{lo}", f"plain{hi}", f"plain{hi} trains worse than plain{lo} by more than the spread",
                   lambda d, m: d > m) for lo, hi in itertools.pairwise(depths)]
    residual = [check(f"resnet{lo}", f"resnet{hi}", f"resnet{hi} trains no worse than resnet{lo} beyond the spread",
                      lambda d, m: d <= m) for i, lo in enumerate(depths) for hi in depths[i + 1:]]
    return DegradationVerdict(plain, residual, _all(plain), _all(residual), finals)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one quantity: ``winner`` is a's or b's name, "tie" (no difference within
    the spread) or None (no conclusion: one seed, or divergence in some seeds only)."""

    a: str
    b: str
    winner: str | None
    text: str

    def row(self) -> dict[str, Any]:
        return asdict(self)


def compare(a: str, a_values: Sequence[float | None], b: str, b_values: Sequence[float | None], *,
            what: str, higher_is_better: bool, scale: float = 100.0, unit: str = " points") -> Comparison:
    """Per :data:`COMPARE_RULE`. Missing values (diverged runs): if every seed of one side diverged and
    none of the other's did, the other wins; any other mix gives no conclusion."""
    sa, sb = seed_stats(a_values), seed_stats(b_values)
    if sa.n == 0 and sb.complete:
        return Comparison(a, b, b, f"{a} diverged in every seed, {b} in none")
    if sb.n == 0 and sa.complete:
        return Comparison(a, b, a, f"{b} diverged in every seed, {a} in none")
    why = _undecidable({a: sa, b: sb})
    if why:
        return Comparison(a, b, None, f"no conclusion on {what}: {why}")
    diff = (sa.mean - sb.mean) * (1 if higher_is_better else -1)  # > 0: a is better
    margin = _margin(sa, sb)
    num = lambda v: f"{scale * v:.2f}{unit}"  # noqa: E731
    if abs(diff) > margin:
        win, lose = (a, b) if diff > 0 else (b, a)
        return Comparison(a, b, win, f"{win} beats {lose} on {what} by {num(abs(diff))}, more than the spread "
                                     f"of {num(margin)}")
    return Comparison(a, b, "tie", f"no difference between {a} and {b} on {what} within the spread "
                                   f"({num(abs(diff))} apart, spread {num(margin)})")
