"""Which frames each policy kept in its memory over a video: a picture of the decisions.

A tracker's `decisions[t]` is the slot frame t's memory went to (-1: not stored, -2: the
object not tracked yet); a memory stays until another frame is written to its slot. From
that, `bank_contents` rebuilds what the bank held after every frame, and
`plot_memory_timelines` draws it per policy: x the current frame, y the frames held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bank_contents(decisions, capacity: int) -> np.ndarray:
    """held [T, T] bool: held[t, f] when frame f's memory is in the bank after frame t.

    `decisions` [T]: the slot of each frame (0 <= slot < capacity), or < 0 when not stored."""
    d = np.asarray(decisions).reshape(-1)
    T = d.size
    slots = np.full(capacity, -1)  # slot -> frame held
    held = np.zeros((T, T), bool)
    for t, s in enumerate(d):
        if s >= capacity:
            raise ValueError(f"frame {t}: slot {s} outside a bank of {capacity}")
        if s >= 0:
            slots[s] = t
        held[t, slots[slots >= 0]] = True
    return held


def plot_memory_timelines(runs: dict, out: Path, *, capacity: int = 7, ious: dict | None = None,
                          title: str = "") -> Path:
    """One panel per policy ({name: decisions [T] of one object}): a dot at (t, f) when frame
    f is held after frame t; under it the policy's per-frame IoU when `ious` gives it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    rows = 2 if ious else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(3.2 * len(names), 3.0 * rows), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 1][:rows]})
    for k, name in enumerate(names):
        held = bank_contents(runs[name], capacity)
        t, f = np.nonzero(held)
        ax = axes[0, k]
        ax.scatter(t, f, s=4, c="tab:blue", marker="s", linewidths=0)
        ax.plot([0, held.shape[0] - 1], [0, held.shape[0] - 1], color="0.8", lw=0.5)  # the current frame
        ax.set(title=name, ylabel="frames held" if k == 0 else None, xlim=(-0.5, held.shape[0] - 0.5),
               ylim=(-0.5, held.shape[0] - 0.5))
        if ious:
            a = axes[1, k]
            a.plot(np.asarray(ious[name]), color="tab:green", lw=1)
            a.set(ylim=(0, 1.02), xlabel="frame", ylabel="IoU" if k == 0 else None)
        else:
            ax.set(xlabel="frame")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
