"""Statistics of paired comparisons: policies scored on the same videos.

Every comparison in this project is paired (two policies, the same videos, prompts and
model), so intervals come from resampling videos, not policies: a paired bootstrap of the
per-video differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The project's bar for per-video agents (docs/targets.md): 3x the best heuristic's relative
# gain, and at least 0.015 J where the heuristics gain less than 0.005 J (so that a ratio
# cannot be won by heuristics that do nothing).
GAIN_RATIO = 3.0
HEURISTIC_FLOOR = 0.005  # J
FLOOR_GAIN = GAIN_RATIO * HEURISTIC_FLOOR  # 0.015 J


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over videos of a - b
    lo: float  # bootstrap percentile interval of the mean
    hi: float
    n: int  # videos
    level: float

    @property
    def above_zero(self) -> bool:
        return self.lo > 0

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}]"


def paired_bootstrap(a, b, *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> PairedDifference:
    """Mean of a - b over paired samples (videos) with a percentile bootstrap interval.

    Videos are resampled with replacement `n_boot` times (fixed `seed`: the same scores give
    the same interval). One video gives a zero-width interval at its difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-D score lists, got shapes "
                         f"{a.shape} and {b.shape}")
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        raise ValueError("paired_bootstrap: scores must be finite")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(float(d.mean()), float(lo), float(hi), int(d.size), level)


def relative_gain(policy, stock) -> float:
    """(mean policy J - mean stock J) / mean stock J over the same videos: a ratio of means,
    so that one video the stock rule loses (J near 0) does not dominate the mean."""
    s = float(np.mean(stock))
    return (float(np.mean(policy)) - s) / s if s > 0 else float("nan")


def gain_target(agent, stock, heuristics: dict) -> dict:
    """Whether agents beat the heuristics by the per-video bar (docs/targets.md) on one
    suite's videos.

    `agent`, `stock` and every `heuristics[name]` are per-video J on the same videos. The
    best heuristic is the one with the largest mean gain; where it gains < 0.005 J the agents
    must gain >= 0.015 J, else their relative gain must be >= 3x the heuristic's."""
    stock_mean = float(np.mean(stock))
    gains = {h: float(np.mean(j)) - stock_mean for h, j in heuristics.items()}
    best = max(gains, key=gains.get)
    agent_gain = float(np.mean(agent)) - stock_mean
    rel_agent, rel_best = relative_gain(agent, stock), relative_gain(heuristics[best], stock)
    if gains[best] < HEURISTIC_FLOOR:
        need, met = f"gain >= {FLOOR_GAIN:.3f} J (heuristics < {HEURISTIC_FLOOR} J)", agent_gain >= FLOOR_GAIN
    else:
        need, met = f"relative gain >= {GAIN_RATIO:.0f}x {best}'s", rel_agent >= GAIN_RATIO * rel_best
    return {"best_heuristic": best, "best_heuristic_gain": gains[best], "agent_gain": agent_gain,
            "agent_relative_gain": rel_agent, "best_heuristic_relative_gain": rel_best,
            "target": need, "met": bool(met)}
