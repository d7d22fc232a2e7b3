"""Agent fleets on Ray: one Ray task per video, multi-video rollouts on Ray actors.

Per-video work (feature caching, the headroom check, PPO, the agent's evaluation, the
dataset evaluation of an agent) does not depend on the other videos: `fleet` runs it as
one Ray task per video, the model put once into the object store, and the driver writes
what each task returns into the run folder as it comes. `vecenv.RayVecEnv` spreads a
multi-video agent's episodes over Ray actors, the PPO learner staying in the driver.

This module: the options, joining or starting Ray (`session`), and `run_tasks`, the map
over videos with a progress bar, Ray's retries of a task whose worker died, and failures
reported by name. Needs the `ray` extra (docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


@dataclass
class RayOptions:
    """How the work goes onto Ray.

    address: a cluster to join ("HOST:PORT" of `ray start --head`, or "auto"); None or ""
        joins $RAY_ADDRESS if set, else starts a local Ray bound to 127.0.0.1.
    cpus, gpus: what each task and each rollout actor reserves (fractions allowed).
    max_retries: how often a task whose worker died is run again (Ray's `max_retries`).
    actors: rollout actors of a multi-video agent (None: one per free slot, at most one per video).
    num_cpus: the CPUs of a local Ray (None: the machine's).
    """

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 3
    actors: int | None = None
    num_cpus: int | None = None


def check_device(device, opts: RayOptions) -> None:
    """Refuse a CUDA device on Ray without a GPU for each task."""
    if str(device or "").startswith("cuda") and not opts.gpus:
        raise ValueError(f"device {device} with --ray: give each task a GPU with --ray-gpus (1, or 0.25 for "
                         "four tasks per GPU); without it tasks see no GPU")


class RayMissing(ValueError):
    """--ray without Ray installed."""


class FleetError(ValueError):
    """Some videos failed (after their retries); the others' results were written. (A
    ValueError: the CLI reports it as one line, as it does bad input.)"""

    def __init__(self, failures: dict[str, str], total: int):
        self.failures = failures
        named = "; ".join(f"{k}: {v}" for k, v in failures.items())
        super().__init__(f"{len(failures)} of {total} video(s) failed: {named} (the others' results "
                         "are written; run again with --resume to retry the failed ones)")


def require_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing("--ray needs Ray: pip install 'sam2rl-fast[ray]' (or 'ray==2.60.*')") from None
    return ray


def _is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _loopback_only():
    """Ray resolves 127.0.0.1 to the machine's external address (so that other nodes can
    reach it) unless it runs as a one-machine Ray: its switch for that, while Ray starts
    (the processes it starts keep it); nothing then listens or connects beyond 127.0.0.1."""
    from ray._private import ray_constants

    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    env, const = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = const
        if env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = env


def _use_cluster_token() -> None:
    """A cluster of `ray start --head` (Ray >= 2.5x) wants its token (~/.ray/auth_token,
    $RAY_AUTH_TOKEN): send it when RAY_AUTH_MODE is unset, as `ray start` itself does."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextlib.contextmanager
def session(opts: RayOptions, log=print):
    """Ray for the length of the block: the one this process is already connected to, or
    the cluster at `opts.address` / $RAY_ADDRESS, or a new local Ray on 127.0.0.1 only;
    shut down at the end unless it was already connected."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(log_to_driver=False, configure_logging=True, logging_level="WARNING")
    if address is None:
        with _loopback_only():
            ray.init("local", num_cpus=opts.num_cpus, _node_ip_address=LOOPBACK, include_dashboard=False,
                     **quiet)  # "local": a new Ray, whatever other Ray runs on the machine
    else:
        _use_cluster_token()
        with _loopback_only() if _is_loopback(address) else contextlib.nullcontext():
            ray.init(address=address, **quiet)
    try:
        res = ray.cluster_resources()
        log(f"ray: {address or 'local Ray on ' + LOOPBACK}, {len(ray.nodes())} node(s), "
            f"{res.get('CPU', 0):g} CPU(s), {res.get('GPU', 0):g} GPU(s)")
        yield ray
    finally:
        ray.shutdown()


def task_slots(opts: RayOptions) -> int:
    """How many tasks of `opts` the cluster runs at once (now)."""
    import ray

    res = ray.cluster_resources()
    slots = [res.get("CPU", 0) / opts.cpus] if opts.cpus else []
    slots += [res.get("GPU", 0) / opts.gpus] if opts.gpus else []
    return max(1, int(min(slots))) if slots else 1


def failure_reason(e: BaseException) -> str:
    from ray.exceptions import RayTaskError, WorkerCrashedError

    if isinstance(e, RayTaskError) and e.cause is not None:
        return f"{type(e.cause).__name__}: {e.cause}"
    if isinstance(e, WorkerCrashedError):
        return "its worker died on every try (killed, out of memory, or a crash)"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def run_tasks(fn: Callable, jobs: Iterable[tuple[str, Callable[[], tuple]]], opts: RayOptions, *,
              on_result: Callable[[str, object], None], total: int | None = None,
              desc: str = "videos", progress: bool = True, log=print) -> dict[str, str]:
    """Run `fn(*args())` as a Ray task for each job (name, args), a window of them at a time
    (args are made when the job is submitted: a video is read only then); `on_result(name,
    result)` as each one ends, in the driver. A task whose worker dies is run again up to
    `opts.max_retries` times; an exception in `fn` fails its video at once (it would again).
    Returns {name: why} of the videos that failed; the others all ran."""
    import ray

    remote = ray.remote(fn).options(num_cpus=opts.cpus, num_gpus=opts.gpus,
                                    max_retries=opts.max_retries, retry_exceptions=False)
    window = 2 * task_slots(opts)  # every slot busy, one waiting each: few videos in memory
    jobs, pending, failures = iter(jobs), {}, {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="video", smoothing=0.1)
    try:
        while True:
            while len(pending) < window and (job := next(jobs, None)) is not None:
                pending[remote.remote(*job[1]())] = job[0]
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                failures[name] = failure_reason(e)
                log(f"{name}: failed ({failures[name]})")
            else:
                on_result(name, result)
            del ref
            if bar is not None:
                bar.update(1)
                bar.set_postfix(last=name, failed=len(failures))
    finally:
        if bar is not None:
            bar.close()
    return failures
