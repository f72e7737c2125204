"""Comparing two variants on the same test users: the per-user paired test the report uses.

A run ranks every test user, so two variants of one seed are compared user by user rather than
only through their means over seeds (three seeds give a t-test with 2 degrees of freedom). The
p-value is the Wilcoxon signed-rank test of the per-user differences (users on whom both variants
score the same, e.g. both miss the top 10, carry no sign and are dropped, as Wilcoxon does); the
interval is a paired bootstrap over users of the relative change of the mean. Pooled over several
seeds (``runs``: the seed of each test case), the bootstrap is two-level: seeds are resampled, then
users within each drawn seed, so the interval also carries the seed-to-seed spread that the
Wilcoxon p over pooled user x seed pairs ignores.

``paired_rank_change`` compares the target's rank itself. NDCG@10 is 0 for every user whose target
falls outside the top 10 (most tail users, every cold user), so those users carry no information
into the NDCG comparison; the rank moves for all of them. The change is the geometric mean of the
per-user rank ratios (b / a: below 1, ``b`` ranks the target higher), with the same two-level
interval, and the Wilcoxon p is that of the log ranks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedChange:
    users: int          # test cases compared (user x seed pairs)
    change: float       # relative change of the mean, b over a (0.1 = +10%)
    ci_low: float       # 95% paired-bootstrap interval of the change
    ci_high: float
    p: float            # two-sided Wilcoxon signed-rank p-value; 1.0 when nothing differs
    difference: float = float("nan")  # b's mean minus a's, with its 95% paired-bootstrap interval
    diff_low: float = float("nan")
    diff_high: float = float("nan")

    def __str__(self) -> str:
        p = "<0.001" if self.p < 0.001 else f"={self.p:.3f}"
        if self.change != self.change:  # the reference's mean is zero (an ID model on new items): no ratio
            return f"{self.difference:+.4f} [{self.diff_low:+.4f}, {self.diff_high:+.4f}] absolute (p{p})"
        return f"{100 * self.change:+.1f}% [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}] (p{p})"


def paired_change(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0,
                  runs: np.ndarray | None = None) -> PairedChange:
    """``a`` and ``b``: one value per test case (e.g. NDCG@10), the same cases in the same order;
    ``runs``: which run (seed) each case comes from, for the two-level bootstrap."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired values need two equal, non-empty 1-d arrays; got {a.shape} and {b.shape}")
    change = _relative(a.mean(), b.mean())
    rng = np.random.default_rng(seed)
    picks = _resample(len(a), resamples, rng, runs)
    mean_a, mean_b = np.array([a[p].mean() for p in picks]), np.array([b[p].mean() for p in picks])
    boot = _relative(mean_a, mean_b)
    with warnings.catch_warnings():  # a reference mean of zero in every resample: no interval, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(boot, [2.5, 97.5])
    diff_low, diff_high = np.percentile(mean_b - mean_a, [2.5, 97.5])
    differs = a != b
    p = float(stats.wilcoxon(b[differs], a[differs]).pvalue) if differs.sum() >= 1 else 1.0
    return PairedChange(len(a), float(change), float(low), float(high), p, float(b.mean() - a.mean()),
                        float(diff_low), float(diff_high))


@dataclass(frozen=True)
class PairedRankChange:
    users: int          # test cases compared (user x seed pairs)
    higher: float       # share of cases where b ranks the target higher than a (ties count half)
    ratio: float        # geometric mean of rank_b / rank_a (0.8 = b's ranks are 20% smaller, i.e. better)
    ci_low: float       # 95% paired-bootstrap interval of the ratio
    ci_high: float
    p: float            # two-sided Wilcoxon signed-rank p of log(rank_b) - log(rank_a)

    def __str__(self) -> str:
        p = "<0.001" if self.p < 0.001 else f"={self.p:.3f}"
        return (f"×{self.ratio:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}], "
                f"{100 * self.higher:.0f}% higher (p{p})")


def paired_rank_change(rank_a: np.ndarray, rank_b: np.ndarray, resamples: int = 2000, seed: int = 0,
                       runs: np.ndarray | None = None) -> PairedRankChange:
    """The target's rank (1 = top) under ``a`` and ``b``, the same cases in the same order."""
    rank_a, rank_b = np.asarray(rank_a, dtype=float), np.asarray(rank_b, dtype=float)
    if rank_a.shape != rank_b.shape or rank_a.ndim != 1 or not len(rank_a):
        raise ValueError(f"paired ranks need two equal, non-empty 1-d arrays; got {rank_a.shape} and {rank_b.shape}")
    if min(rank_a.min(), rank_b.min()) < 1:
        raise ValueError("ranks start at 1")
    log_ratio = np.log(rank_b) - np.log(rank_a)
    picks = _resample(len(log_ratio), resamples, np.random.default_rng(seed), runs)
    low, high = np.exp(np.percentile([log_ratio[p].mean() for p in picks], [2.5, 97.5]))
    differs = log_ratio != 0
    p = float(stats.wilcoxon(log_ratio[differs]).pvalue) if differs.any() else 1.0
    higher = float((rank_b < rank_a).mean() + 0.5 * (~differs).mean())
    return PairedRankChange(len(log_ratio), higher, float(np.exp(log_ratio.mean())), float(low), float(high), p)


def _relative(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(a) > 0, (np.asarray(b) - a) / a, np.nan)


def _resample(n: int, resamples: int, rng, runs: np.ndarray | None) -> list[np.ndarray]:
    """Indices of ``resamples`` bootstrap samples: over cases, or over runs and then cases within each."""
    if runs is None or len(np.unique(runs)) < 2:
        return list(rng.integers(n, size=(resamples, n)))
    members = [np.flatnonzero(runs == r) for r in np.unique(runs)]
    samples = []
    for _ in range(resamples):
        drawn = [members[k] for k in rng.integers(len(members), size=len(members))]
        samples.append(np.concatenate([m[rng.integers(len(m), size=len(m))] for m in drawn]))
    return samples
