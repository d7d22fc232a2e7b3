"""The files of a tracking run (`sam2rl-fast track`): palette masks, per-frame scores and
decisions, a summary with timings, and an overlay video, written as the tracker streams."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def write_tracking(tracker, out: Path, *, video, model, fps: float) -> int:
    """Track every frame into `out`: masks/<frame>.png (palette), scores.csv, summary.json,
    overlay.mp4; returns the number of frames tracked (`sam2rl-fast track`)."""
    import numpy as np

    from sam2rl_fast.eval.overlay import decision_text, draw, save_index_png
    from sam2rl_fast.tracking.video import write_video

    (out / "masks").mkdir()
    names = [f"obj{o}" for o in tracker.obj_ids]
    rows, timings = [], []

    def frames():
        for fr in tracker:
            save_index_png(fr.masks, out / "masks" / f"{fr.index:05d}.png")
            for k, o in enumerate(tracker.obj_ids):
                rows.append([fr.index, o, f"{fr.scores[k]:.4f}", f"{fr.ious[k]:.4f}",
                             int(fr.decisions[k]), int(fr.masks[k].sum())])
            timings.append(fr.timings)
            labels = [f"{n} {decision_text(int(d))}" for n, d in zip(names, fr.decisions)]
            yield draw(fr.image, fr.masks, labels, f"frame {fr.index}  agent {tracker.policy.name}")

    write_video(frames(), out / "overlay.mp4", fps=fps)
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "obj_id", "object_score", "predicted_iou", "memory_slot", "area_px"])
        w.writerows(rows)
    total_ms = sum(sum(t.values()) for t in timings)
    summary = {
        "video": str(video), "agent": tracker.policy.name, "model": str(model),
        "device": str(tracker.device), "memory_attention": tracker.attention_impl,
        "objects": [str(o) for o in tracker.obj_ids], "frames": len(timings),
        "fps": len(timings) / (total_ms / 1000) if total_ms else None,
        # every stage seen on any frame (the prompt frame runs no memory attention)
        "ms_per_frame": {s: float(np.mean([t[s] for t in timings if s in t]))
                         for s in dict.fromkeys(k for t in timings for k in t)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(timings)} frames at {summary['fps']:.2f} FPS")
    return len(timings)
