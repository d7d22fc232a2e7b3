"""`sam2rl-fast train --ray`: per-video agents as a Ray task per video, or a multi-video
agent whose rollouts run on Ray actors (`vecenv.RayVecEnv`), into the usual run folder.

The driver writes what each task returns into the run folder as it comes, the agent file
last, so a video is finished exactly when its agent file exists: `--resume` after the
driver was killed skips those (and evaluates them again, as a sequential resume does) and
trains the others from their start. `fleet.csv` records how each video's task ended,
where and in how long; a video that failed is named there, in the log and in the
`FleetError` raised once every other video is done.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from sam2rl_fast.rl.agent_eval import write_run_report
from sam2rl_fast.rl.ray import FleetError, RayOptions, check_device, run_tasks, session
from sam2rl_fast.rl.ray.evaluate import evaluate_suites, headroom_rows, log_headroom
from sam2rl_fast.rl.ray.files import write_files
from sam2rl_fast.rl.ray.tasks import Synthetic, eval_task, train_task

FLEET_COLUMNS = ["video", "status", "seconds", "node", "pid", "error"]


class FleetLog:
    """`fleet.csv` in the run folder: per video, how its task ended, where, how long."""

    def __init__(self, out: Path):
        self.path = Path(out) / "fleet.csv"
        new = not self.path.is_file()
        self.fh = open(self.path, "a", newline="")  # noqa: SIM115 - open for the whole run
        self.csv = csv.writer(self.fh)
        if new:
            self.csv.writerow(FLEET_COLUMNS)

    def row(self, video, status, seconds=None, node="", pid="", error=""):
        self.csv.writerow([video, status, "" if seconds is None else f"{seconds:.1f}", node, pid, error])
        self.fh.flush()

    def close(self):
        self.fh.close()


def video_jobs(cfg):
    """(name, job, frames) per video of the config, made one at a time: a synthetic video is
    made by its task, a dataset video read only when its task is handed out."""
    if cfg.dataset is None:
        for suite in cfg.suites:
            for seed in cfg.seeds(suite):
                yield f"{suite}-{seed}", Synthetic(suite, seed, cfg.num_frames, cfg.size), cfg.num_frames
        return
    from sam2rl_fast.data.datasets import Dataset, open_dataset, training_items

    ds = open_dataset(cfg.dataset, split=cfg.dataset_split, sequences=cfg.sequences)
    for v in ds.videos:
        for it in training_items(Dataset(ds.root, ds.layout, ds.split, [v])):
            yield it[2], it, len(it[0])


def train_per_video(cfg, out: Path, opts: RayOptions, box, *, resume: bool = False, progress: bool = True,
                    log=print):
    """Per-video agents as Ray tasks into run folder `out`: (agent files, scores, failures)."""
    evaluate = cfg.eval_videos > 0 and cfg.dataset is None
    fleet, order, done, scores, rows = FleetLog(out), [], [], {}, []
    earlier = [0]  # decisions of the videos before (the headroom check's draws)

    def jobs():
        for name, job, frames in video_jobs(cfg):
            order.append(name)
            head, earlier[0] = earlier[0], earlier[0] + frames - 2
            if resume and (out / f"{name}.zip").is_file():
                log(f"{out / f'{name}.zip'} exists: done")
                done.append(name)
                continue
            head = head if cfg.check_headroom and not resume else None
            yield name, (lambda job=job, name=name, head=head: (cfg, job, box, name, head, evaluate, opts.cpus))

    def trained(name, r):
        write_files(out, r["files"], last=f"{name}.zip")
        scores[name] = r["scores"]
        rows.append(r["headroom"]) if r["headroom"] is not None else None
        for m in r["logs"]:
            log(m)
        fleet.row(name, "trained", r["seconds"], r["node"], r["pid"])

    def evaluated(name, r):
        scores[name] = r[0]
        for m in r[1]:
            log(m)

    try:
        failures = run_tasks(train_task, jobs(), opts, on_result=trained, desc="training agents",
                             progress=progress, log=log)
        for name, why in failures.items():
            fleet.row(name, "failed", error=why)
        if evaluate and done:  # finished by an earlier run: evaluated again, as a sequential resume does
            from sam2rl_fast.rl.agent_eval import HEURISTICS

            def args(n):
                suite, seed = n.rsplit("-", 1)
                agents = ["sam2", *HEURISTICS, (f"{n}.zip", (out / f"{n}.zip").read_bytes())]
                return suite, int(seed), agents, box, cfg.num_frames, cfg.size, "heldout", True, cfg.device, opts.cpus

            failures |= run_tasks(eval_task, [(n, lambda n=n: args(n)) for n in done], opts, total=len(done),
                                  on_result=evaluated, desc="evaluating agents", progress=progress, log=log)
    finally:
        fleet.close()
    log_headroom(rows, log)
    agents = [out / f"{n}.zip" for n in order if (out / f"{n}.zip").is_file()]
    return agents, [s for n in sorted(scores, key=lambda n: f"{n}.zip") for s in scores[n]], failures


def train_multi_video(cfg, out: Path, opts: RayOptions, box, model, *, resume: bool = False,
                      progress: bool = True, log=print):
    """One agent over the config's videos, its episodes on Ray actors, the learner here;
    evaluated on the held-out videos with a task per video: (agent files, scores, failures)."""
    import functools

    from sam2rl_fast.rl.agent_eval import HEURISTICS
    from sam2rl_fast.rl.ray.vecenv import RayVecEnv
    from sam2rl_fast.rl.training import latest_checkpoint, suite_items, train_agent

    items = suite_items(cfg)
    if cfg.check_headroom and not resume:
        log_headroom(headroom_rows(items, box, opts, progress=progress, log=log)[0], log)
    final = out / "agent.zip"
    if resume and final.is_file():
        log(f"{final} exists: done")
    else:
        make_env = functools.partial(RayVecEnv, options=opts, model_ref=box[0])
        train_agent(cfg, items, model, out, name="agent", make_env=make_env, progress=progress, log=log,
                    resume=latest_checkpoint(out, "agent") if resume else None)
    if cfg.eval_videos <= 0 or cfg.dataset is not None:
        return [final], [], {}
    scores, failures = evaluate_suites(cfg.suites, ["sam2", *HEURISTICS, str(final)], box, opts,
                                       num_videos=cfg.eval_videos, num_frames=cfg.num_frames, size=cfg.size,
                                       first_target_only=True, device=cfg.device, progress=progress, log=log)
    return [final], scores, failures


def run_fleet(cfg, out, opts: RayOptions, *, resume: bool = False, progress: bool = True,
              log=print) -> list[Path]:
    """`training.run_training` on Ray: the same run folder, each agent a Ray task (per-video)
    or its episodes on Ray actors (multi-video)."""
    from sam2rl_fast.model.loading import build_model
    from sam2rl_fast.rl.training import start_run
    from sam2rl_fast.rl.training_log import plot_curves

    check_device(cfg.device, opts)
    out = start_run(cfg, out, resume)
    model = build_model(cfg.model, device="cpu")  # the object store's copy: workers move it
    with session(opts, log) as ray:
        box = [ray.put(model)]  # in a list: tasks fetch it once per worker, not per call
        kw = dict(resume=resume, progress=progress, log=log)
        agents, scores, failures = (train_per_video(cfg, out, opts, box, **kw) if cfg.mode == "per-video"
                                    else train_multi_video(cfg, out, opts, box, model, **kw))
        plot_curves(sorted(out.glob("*-episodes.csv")), out / "training-curve.png")
        if cfg.dataset is not None:
            log(f"compare the agents with the stock rule and the heuristics on the dataset: "
                f"sam2rl-fast eval --dataset {cfg.dataset} --ray --agent sam2 --agent <agent.zip> ...")
        elif scores:
            shutil.rmtree(out / "eval", ignore_errors=True)  # this run's own output, made again
            log(write_run_report(scores, out / "eval"))
    if failures:
        raise FleetError(failures, len(agents) + len(failures))
    return agents

