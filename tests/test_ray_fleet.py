"""Agent fleets on Ray (`sam2rl_fast.rl.ray`): per-video tasks, faults, rollouts on actors.

Ray runs bound to 127.0.0.1 only (checked): one local Ray for the module, two CPUs.
Everything is compared with the sequential code for the same seeds, with one torch thread
on both sides (Ray's tasks get one per CPU they hold).
"""

import contextlib
import csv
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'sam2rl-fast[ray]' (scripts/install.sh does)")
pytest.importorskip("stable_baselines3", reason="the training stack is not installed ([train] extra)")

from sam2rl_fast.outputs import MANIFEST  # noqa: E402
from sam2rl_fast.rl.ray import RayOptions, run_tasks, session  # noqa: E402
from sam2rl_fast.rl.ray.fleet import run_fleet  # noqa: E402
from sam2rl_fast.rl.training import TrainConfig, run_training  # noqa: E402

# 6-frame 64 px videos, two PPO updates: seconds per agent
TINY = dict(mode="per-video", suites=["occlusion"], split="heldout", num_videos=2, num_frames=6, size=64,
            num_envs=2, total_steps=16, n_steps=4, batch_size=8, n_epochs=1, checkpoint_every=8,
            eval_videos=1, reward="improvement", check_headroom=False)
NAMES = ["occlusion-1000000", "occlusion-1000001"]


@contextlib.contextmanager
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cluster():
    with session(RayOptions(num_cpus=2), log=lambda m: None) as ray:
        yield ray


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "run"
    with one_thread():
        run_training(TrainConfig(**TINY), out, progress=False, log=lambda m: None)
    return out


def _descendants(pid: int) -> set[int]:
    parent = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(p)] = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
    out, grew = {pid}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in out and p not in out}
        out, grew = out | new, bool(new)
    return out - {pid}


def _titled(title: str) -> list[int]:
    """Our Ray workers (descendants of this process) running a task of function `title`."""
    found = []
    for p in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if open(f"/proc/{p}/cmdline").read().split("\0")[0].strip() == f"ray::{title}":
                found.append(p)
    return found


def _sockets(pids) -> list[tuple[str, str, str]]:
    """((ip, port) local, (ip, port) remote, state) of every TCP socket the processes hold."""
    inodes = set()
    for p in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])

    def addr(h):  # /proc/net/tcp{,6}: little-endian 32-bit words, hex
        ip, port = h.split(":")
        raw = b"".join(bytes.fromhex(ip[i:i + 8])[::-1] for i in range(0, len(ip), 8))
        a = ipaddress.ip_address(raw)
        return getattr(a, "ipv4_mapped", None) or a, int(port, 16)

    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                f = line.split()
                if f[9] in inodes:
                    out.append((addr(f[1]), addr(f[2]), f[3]))
    return out


def _agent_weights(path):
    from sam2rl_fast.rl.agents import load_sb3

    ppo, _ = load_sb3(path)
    return ppo.num_timesteps, ppo.policy.state_dict()


def _assert_same_agent(a, b, exact=True):
    import torch

    (na, wa), (nb, wb) = _agent_weights(a), _agent_weights(b)
    assert na == nb and wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]) if exact else torch.allclose(wa[k], wb[k], atol=1e-4), k


def _rows(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(fh)]


def _assert_same_run(seq, fleet, names, eval_too=True):
    for n in names:
        _assert_same_agent(seq / f"{n}.zip", fleet / f"{n}.zip")
        assert _rows(seq / f"{n}-episodes.csv") == _rows(fleet / f"{n}-episodes.csv")
    assert (fleet / "training-curve.png").stat().st_size > 0
    if eval_too:
        for f in ("table.md", "scores.json", "videos.csv"):
            got = (fleet / "eval" / f).read_text()
            assert got == (seq / "eval" / f).read_text() if f != "videos.csv" else \
                [r[:-1] for r in csv.reader(got.splitlines())] == \
                [r[:-1] for r in csv.reader((seq / "eval" / f).read_text().splitlines())], f  # fps differs


def _fleet_rows(out):
    with open(out / "fleet.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- tests
def test_local_ray_listens_and_talks_on_loopback_only(cluster):
    ctx = cluster.get_runtime_context()
    assert ctx.gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in cluster.nodes()} == {"127.0.0.1"}
    assert cluster.get(cluster.remote(lambda: 1 + 1).remote()) == 2
    socks = _sockets(_descendants(os.getpid()) | {os.getpid()})
    assert socks, "no socket of Ray's processes found"
    outside = [s for s in socks if not s[0][0].is_loopback
               or (s[2] != "0A" and not s[1][0].is_loopback)]  # 0A: listening
    assert not outside, outside


def test_a_killed_worker_is_retried_and_the_fleet_equals_the_sequential_run(cluster, sequential, tmp_path):
    """SIGKILL the worker of one training task while it trains: Ray runs the task again,
    and every agent, episode CSV and evaluation equals the sequential run's."""
    out, killed = tmp_path / "fleet", []

    def killer():
        t0 = time.time()
        while not killed and time.time() - t0 < 120:
            pids = _titled("train_task")
            if pids:
                time.sleep(1.0)  # well into the task (a task takes several seconds)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.05)

    th = threading.Thread(target=killer)
    th.start()
    logs = []
    try:
        agents = run_fleet(TrainConfig(**TINY), out, RayOptions(), progress=False, log=logs.append)
    finally:
        th.join()
    assert killed, "no training task was seen running"
    assert [a.name for a in agents] == [f"{n}.zip" for n in NAMES]
    rows = _fleet_rows(out)
    assert sorted(r["video"] for r in rows) == NAMES and {r["status"] for r in rows} == {"trained"}
    assert str(killed[0]) not in {r["pid"] for r in rows}  # the killed try left no result
    assert {r["node"] for r in rows} == {"127.0.0.1"}
    _assert_same_run(sequential, out, NAMES)


def test_killed_driver_then_resume_skips_finished_videos(cluster, sequential, tmp_path):
    """A driver joining the cluster by address, one task at a time (1.5 of the 2 CPUs each: one
    torch thread, as the sequential run), SIGKILLed once the first agent is written; --resume
    trains only the other one, and evaluates both."""
    out = tmp_path / "fleet"
    address = cluster.get_runtime_context().gcs_address
    code = ("from sam2rl_fast.rl.training import TrainConfig\n"
            "from sam2rl_fast.rl.ray import RayOptions\n"
            "from sam2rl_fast.rl.ray.fleet import run_fleet\n"
            f"run_fleet(TrainConfig(**{TINY!r}), {str(out)!r}, RayOptions(address={address!r}, cpus=1.5), "
            "progress=False)\n")
    with open(tmp_path / "driver.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        t0, first = time.time(), []
        while not first and proc.poll() is None and time.time() - t0 < 300:
            first = [n for n in NAMES if (out / f"{n}.zip").is_file()]
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(first) == 1, (tmp_path / "driver.log").read_text()[-3000:]
    other = [n for n in NAMES if n not in first]
    assert not (out / f"{other[0]}.zip").exists()  # killed in the middle of the second video
    logs = []
    run_fleet(TrainConfig(**TINY), out, RayOptions(), resume=True, progress=False, log=logs.append)
    assert any(m.endswith(f"{first[0]}.zip exists: done") for m in logs), logs
    rows = _fleet_rows(out)
    assert [(r["video"], r["status"]) for r in rows] == [(first[0], "trained"), (other[0], "trained")]
    _assert_same_run(sequential, out, NAMES)


def test_a_video_that_keeps_failing_is_named_and_the_others_finish(cluster):
    def work(name):
        if name == "doomed":  # its worker dies on every try
            os.kill(os.getpid(), signal.SIGKILL)
        if name == "broken":
            raise ValueError("no target on frame 0")
        return name.upper()

    got, logs = {}, []
    failures = run_tasks(work, [(n, lambda n=n: (n,)) for n in ("a", "doomed", "broken", "b")],
                         RayOptions(max_retries=1), on_result=got.__setitem__, progress=False,
                         log=logs.append)
    assert got == {"a": "A", "b": "B"}
    assert set(failures) == {"doomed", "broken"}
    assert "worker died" in failures["doomed"] and failures["broken"] == "ValueError: no target on frame 0"
    assert sorted(m.split(":")[0] for m in logs) == ["broken", "doomed"]


def test_multi_video_rollouts_on_actors_equal_memory_control_vecenv(cluster, tmp_path):
    """A multi-video agent whose episodes run on 2 actors (3 videos shared between them)
    against the single-process `MemoryControlVecEnv`: the same episodes and rewards, the
    same evaluation, the weights up to float rounding of differently batched lanes."""
    cfg = dict(TINY, mode="multi-video", num_videos=3, num_envs=4, total_steps=32, batch_size=16)
    with one_thread():  # the learner (in the driver) on one thread too
        run_training(TrainConfig(**cfg), tmp_path / "seq", progress=False, log=lambda m: None)
        run_fleet(TrainConfig(**cfg), tmp_path / "ray", RayOptions(actors=2), progress=False,
                  log=lambda m: None)
    seq, ray_ = tmp_path / "seq", tmp_path / "ray"
    _assert_same_agent(seq / "agent.zip", ray_ / "agent.zip", exact=False)
    a, b = _rows(seq / "agent-episodes.csv"), _rows(ray_ / "agent-episodes.csv")
    assert len(a) == 8 and a == b and len({r["video"] for r in a}) > 1
    assert (seq / "eval" / "table.md").read_text() == (ray_ / "eval" / "table.md").read_text()


def test_eval_and_dataset_eval_on_ray_equal_the_sequential_ones(cluster, tmp_path, capsys):
    from sam2rl_fast.cli import main
    from sam2rl_fast.data.synthetic import generate_video, write_davis

    base = ["eval", "--suite", "occlusion", "--suite", "distractor", "--videos", "1", "--frames", "6",
            "--size", "64", "--agent", "sam2", "--agent", "dam4sam", "--device", "cpu", "--quiet"]
    with one_thread():
        assert main([*base, "--out", str(tmp_path / "seq")]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    strip = [r[:-1] for r in csv.reader((tmp_path / "seq" / "videos.csv").read_text().splitlines())]
    assert strip == [r[:-1] for r in csv.reader((tmp_path / "ray" / "videos.csv").read_text().splitlines())]

    root = tmp_path / "davis"
    for s, seed in [("mixed", 3), ("occlusion", 2)]:
        write_davis(generate_video(s, seed, num_frames=6, height=64, width=64), root)
    base = ["eval", "--dataset", str(root), "--agent", "sam2", "--device", "cpu", "--quiet"]
    with one_thread():
        assert main([*base, "--out", str(tmp_path / "dseq")]) == 0
    assert main([*base, "--out", str(tmp_path / "dray"), "--ray"]) == 0
    files = sorted(p.relative_to(tmp_path / "dseq") for p in (tmp_path / "dseq").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "dray") for p in (tmp_path / "dray").rglob("*")
                           if p.is_file())
    assert any(p.suffix == ".png" for p in files)
    for p in files:
        if p.name != MANIFEST:
            assert (tmp_path / "dseq" / p).read_bytes() == (tmp_path / "dray" / p).read_bytes(), p


def test_train_on_a_dataset_names_the_failing_video_and_keeps_the_others(cluster, tmp_path, capsys):
    from sam2rl_fast.cli import main
    from sam2rl_fast.data.synthetic import generate_video, write_davis

    root = tmp_path / "davis"
    write_davis(generate_video("occlusion", 2, num_frames=6, height=64, width=64), root)
    write_davis(generate_video("mixed", 3, num_frames=2, height=64, width=64), root)  # too short to train
    args = ["train", "--dataset", str(root), "--mode", "per-video", "--total-steps", "8", "--num-envs", "2",
            "--out", str(tmp_path / "run"), "--quiet", "--ray"]
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('n_steps = 4\nbatch_size = 8\nn_epochs = 1\ncheckpoint_every = 8\ncheck_headroom = false\n')
    assert main([*args, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 video(s) failed: mixed-3: ValueError: episode_length 2 < 3" in err and "--resume" in err
    assert (tmp_path / "run" / "occlusion-2.zip").is_file()
    assert not (tmp_path / "run" / "mixed-3.zip").exists()
    assert [(r["video"], r["status"]) for r in _fleet_rows(tmp_path / "run")] == \
        [("occlusion-2", "trained"), ("mixed-3", "failed")]


def test_headroom_script_on_ray_prints_the_sequential_rows(cluster, capsys):
    import headroom

    args = ["--suite", "occlusion", "--videos", "2", "--frames", "6", "--samples", "2"]
    with one_thread():
        assert headroom.main(args) == 0
    seq = capsys.readouterr().out
    assert headroom.main([*args, "--ray"]) == 0
    assert capsys.readouterr().out == seq and "occlusion-1000001" in seq


def test_deployment_imports_do_not_load_ray():
    probe = ("import sys\nfrom sam2rl_fast import FastTracker\nfrom sam2rl_fast.policies import make_policy\n"
             "from sam2rl_fast.cli import main\nmain(['info'])\nprint('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"
