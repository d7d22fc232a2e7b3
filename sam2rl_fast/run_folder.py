"""A training run's folder and its `config.json`: the settings a run was started with, which
a resume must give again.

Both trainers keep their runs this way: the agent trainer (`sam2rl_fast.rl.training`,
`sam2rl-fast train --resume`) and the bundled model's trainer (`train/demo_trainer`). A
resume with other settings is refused before anything in the folder is touched, naming
every setting that differs. This module imports no training stack (no SB3, no gymnasium),
so the bundled model's trainer runs without them.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "config.json"


class RunError(ValueError):
    """A run folder that cannot be started or resumed as asked."""


def json_record(settings: dict) -> dict:
    """`settings` as `config.json` holds them (tuples become lists, and so on), so that a
    saved record and a given one compare equal when they mean the same."""
    return json.loads(json.dumps(settings))


def check_resume(run, settings: dict, free=()) -> dict:
    """Refuse to resume the run in folder `run` with other `settings` than it was started
    with (keys in `free` may differ: how an invocation runs, not what it computes).
    Returns the saved record."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"--resume: {run} holds no run to resume (no {CONFIG_FILE})")
    saved = json.loads(path.read_text())
    diff = [f"{k}: run has {saved.get(k)!r}, given {v!r}" for k, v in json_record(settings).items()
            if k not in free and saved.get(k) != v]
    if diff:
        raise RunError(f"--resume {run}: the settings differ from the run's ({'; '.join(diff)}); "
                       "resume with the run's settings, or start a new run in another folder")
    return saved
