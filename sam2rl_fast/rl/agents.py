"""Agent files, for the training code: they are read in `sam2rl_fast.policies` (the tracker
loads them without the training stack), re-exported here; `write_agent_file` writes one."""

from sam2rl_fast.policies.agent_file import (  # noqa: F401
                                             META_NAME,
                                             AgentFileError,
                                             check_model,
                                             load_sb3,
                                             model_signature,
                                             read_metadata,
                                             write_metadata,
)
from sam2rl_fast.policies.sb3 import Sb3Policy  # noqa: F401


def write_agent_file(ppo, path, *, capacity: int, model, training: dict):
    """Save SB3 agent `ppo` with our metadata at `path`, atomically (a kill leaves the old
    file or a `.tmp.zip`, never a zip without its metadata); returns the path."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.zip")
    ppo.save(tmp)
    write_metadata(tmp, capacity=capacity, model=model, training=training)
    tmp.replace(path)
    return path
