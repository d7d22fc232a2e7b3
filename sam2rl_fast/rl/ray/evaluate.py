"""Evaluation and the headroom check with a Ray task per video (the drivers' side).

Each function returns what its sequential counterpart returns, in the same order, plus
{video: why} of the videos that failed (the others all ran):

- `evaluate_suites` ~ `eval.evaluation.evaluate_agents` (the synthetic suites);
- `evaluate_dataset` ~ `eval.dataset_eval.evaluate_dataset` (masks and the toolkit's CSVs);
- `headroom_rows` ~ `rl.headroom.memory_headroom`.
"""

from __future__ import annotations

import time
from pathlib import Path

from sam2rl_fast.rl.ray import RayOptions, run_tasks
from sam2rl_fast.rl.ray.files import pack_video, sent_agents, write_files
from sam2rl_fast.rl.ray.tasks import HEADROOM_SAMPLES, Synthetic, dataset_task, eval_task, headroom_task


def _logging(results: dict, log):
    def finished(name, r):
        results[name] = r[0]
        for m in r[1]:
            log(m)
    return finished


def evaluate_suites(suites, agents, box, opts: RayOptions, *, split="heldout", num_videos=4, seeds=None,
                    num_frames=32, size=256, first_target_only=False, device=None, progress=True, log=print):
    """`evaluate_agents` with a task per video (agent files are sent to the tasks)."""
    from sam2rl_fast.data.synthetic import suite_seeds

    sent = sent_agents(agents)
    videos = [(s, seed) for s in suites
              for seed in (seeds if seeds is not None else suite_seeds(s, split, count=num_videos))]
    jobs = [(f"{s}-{seed}", lambda s=s, seed=seed: (s, seed, sent, box, num_frames, size, split,
                                                    first_target_only, device, opts.cpus))
            for s, seed in videos]
    results = {}
    failures = run_tasks(eval_task, jobs, opts, on_result=_logging(results, log), total=len(jobs),
                         desc="evaluating", progress=progress, log=log)
    return [s for name, _ in jobs for s in results.get(name, [])], failures


def evaluate_dataset(dataset, agents, out: Path | None, box, opts: RayOptions, *, names=None,
                     device=None, progress=True, log=print):
    """`dataset_eval.evaluate_dataset` with a task per video: the tasks get the video's files
    and the agent files, and send back the masks; the driver writes them and the CSVs."""
    from sam2rl_fast.eval.dataset_eval import write_toolkit_csvs

    names = names or [str(a) for a in agents]
    sent, results = sent_agents(agents), {}
    jobs = [(v.name, lambda v=v: (pack_video(v), sent, names, box, device, opts.cpus))
            for v in dataset.videos]  # a video's files are read as its task is handed out

    def finished(name, r):
        results[name] = r[0]
        if out is not None:
            write_files(out, r[1])

    t0 = time.perf_counter()
    failures = run_tasks(dataset_task, jobs, opts, on_result=finished, total=len(jobs),
                         desc="evaluating", progress=progress, log=log)
    runs = {n: [results[v][k] for v, _ in jobs if v in results] for k, n in enumerate(names)}
    if out is not None and results:
        for name, rs in runs.items():
            write_toolkit_csvs(rs, out / name, dataset.split or "all")
    log(f"{len(results)} video(s) x {len(agents)} agent(s) in {time.perf_counter() - t0:.0f} s")
    return runs, failures


def on_ray(opts: RayOptions, model, fn, *args, log=print, **kw):
    """`fn(*args, box, opts, **kw)` in a Ray session, `box` holding `model` put into the
    object store (from the CPU: each worker moves its copy to its device)."""
    from sam2rl_fast.rl.ray import session

    with session(opts, log) as ray:
        return fn(*args, [ray.put(model.to("cpu"))], opts, log=log, **kw)


def headroom_rows(items, box, opts: RayOptions, *, samples=HEADROOM_SAMPLES, progress=True, log=print):
    """`memory_headroom` rows of items (video, masks, name) or `Synthetic`s, a task each, as
    one sequential call over all of them gives them."""
    rows, jobs, earlier = {}, [], 0
    for it in items:
        name, frames = (it.name, it.num_frames) if isinstance(it, Synthetic) else (it[2], len(it[0]))
        jobs.append((name, lambda it=it, e=earlier: (it, box, samples, e, opts.cpus)))
        earlier += frames - 2
    failures = run_tasks(headroom_task, jobs, opts, on_result=rows.__setitem__, total=len(jobs),
                         desc="headroom", progress=progress, log=log)
    return [rows[n] for n, _ in jobs if n in rows], failures


def log_headroom(rows, log=print, samples: int = HEADROOM_SAMPLES) -> None:
    """`training.check_headroom`'s report, of rows measured by tasks."""
    if not rows:
        return
    best, px = max(r.random_best for r in rows), max(r.max_pixels for r in rows)
    log(f"headroom: over {len(rows)} video(s), the best of {samples} random decision sequences gains "
        f"{best:+.4f} mean IoU over the stock rule; decisions change at most {px} pixels of a frame")
    if best < 1e-3:
        log("WARNING: memory decisions hardly change this model's masks on these videos, so no agent "
            "can gain much over the stock rule (docs/results.md); training anyway")


