"""Verdicts by declared rules: the vocabulary, how claim parts combine, and the statistics behind seeded results.

A result's rule (in `analysis.reproduction`) measures its records, compares each part of the paper's claim with a
stated tolerance and returns an `Outcome`: the verdict, the rule in words, and the numbers behind it.
Verdicts: reproduced / partly / not reproduced / inconclusive (the evidence cannot decide) / not run (no records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = "reproduced", "partly", "not reproduced", "inconclusive", "not run"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN)


@dataclass(frozen=True)
class Part:
    """One part of a claim: its name, its verdict and the numbers that decided it."""

    name: str
    verdict: str
    evidence: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; one of {', '.join(VERDICTS)}")


@dataclass(frozen=True)
class Outcome:
    """What a rule returns: `numbers` is the row's measured-numbers cell; `facts` holds further generated numbers
    that the hand-written prose cites by name."""

    verdict: str
    rule: str
    numbers: str
    parts: tuple[Part, ...] = ()
    facts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; one of {', '.join(VERDICTS)}")

    @property
    def verdict_cell(self) -> str:
        """`**verdict**`, then each part's verdict and evidence when the claim has several parts."""
        cell = f"**{self.verdict}**"
        if len(self.parts) > 1:
            cell += " (" + "; ".join(f"{p.name}: {p.verdict} — {p.evidence}" for p in self.parts) + ")"
        elif self.parts:
            cell += f" ({self.parts[0].evidence})"
        return cell


def not_run(rule: str, why: str) -> Outcome:
    return Outcome(NOT_RUN, rule, why)


def combine(parts: list[Part] | tuple[Part, ...]) -> str:
    """All parts reproduced: reproduced; some reproduced (or partly): partly; none, and one contradicted: not
    reproduced; none run: not run; otherwise (inconclusive, or inconclusive and not run): inconclusive."""
    verdicts = [p.verdict for p in parts]
    if not verdicts:
        raise ValueError("a claim needs at least one part")
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if REPRODUCED in verdicts or PARTLY in verdicts:
        return PARTLY
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return NOT_RUN if all(v == NOT_RUN for v in verdicts) else INCONCLUSIVE


def share(verdicts: list[bool]) -> str:
    """A claim checked on several nets / panels: all hold: reproduced; some: partly; none: not reproduced."""
    if not verdicts:
        raise ValueError("no cases to judge")
    return REPRODUCED if all(verdicts) else PARTLY if any(verdicts) else NOT_REPRODUCED


def interval_verdict(low: float, high: float, claim_below: float | None = None, claim_above: float | None = None) -> str:
    """A claim that a quantity lies below `claim_below` (or above `claim_above`), judged by its confidence interval:
    the whole interval on the claimed side: reproduced; wholly on the other side: not reproduced; else inconclusive."""
    if (claim_below is None) == (claim_above is None):
        raise ValueError("give exactly one of claim_below, claim_above")
    if claim_below is not None:
        return REPRODUCED if high < claim_below else NOT_REPRODUCED if low > claim_below else INCONCLUSIVE
    return REPRODUCED if low > claim_above else NOT_REPRODUCED if high < claim_above else INCONCLUSIVE


@dataclass(frozen=True)
class RatioInterval:
    """std(b) / std(a) over paired seeds with its bootstrap percentile interval and the two-sided F-test p-value."""

    ratio: float
    low: float
    high: float
    p_value: float
    n: int
    level: float


def std_ratio_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> RatioInterval:
    """Ratio of sample standard deviations std(b)/std(a) of paired samples (one value per seed for each arm).

    Interval: percentile bootstrap that resamples seeds (both arms together, keeping the pairing), `resamples` draws
    from `numpy.random.default_rng(seed)`. p-value: the two-sided F-test of equal variances (it treats the arms as
    independent normal samples)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"need two paired 1-D samples of at least 3 seeds, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the samples hold NaN or infinite values")
    if a.std() == 0:
        raise ValueError("the first sample has no spread: a ratio of standard deviations is undefined")
    n = len(a)
    ratio = float(b.std(ddof=1) / a.std(ddof=1))
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    sa, sb = a[idx].std(axis=1, ddof=1), b[idx].std(axis=1, ddof=1)
    valid = sa > 0
    boot = sb[valid] / sa[valid]
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    f = ratio**2
    p = 2 * min(stats.f.cdf(f, n - 1, n - 1), stats.f.sf(f, n - 1, n - 1))
    return RatioInterval(ratio, float(low), float(high), float(min(p, 1.0)), n, level)


@dataclass(frozen=True)
class MeanInterval:
    mean: float
    low: float
    high: float
    n: int
    level: float


def paired_mean_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> MeanInterval:
    """Mean of b − a over paired seeds with its Student-t confidence interval."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need at least 2 paired values, got {len(d)}")
    half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return MeanInterval(float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d), level)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on n independent test examples."""
    return float(np.sqrt(accuracy * (1 - accuracy) / n))


def signed(x: float, unit: str = " pp") -> str:
    """A signed difference with 2 decimals and a true minus sign (x already in the unit's scale)."""
    return f"{x:+.2f}{unit}".replace("-", "−")
