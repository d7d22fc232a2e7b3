"""Agent files, for the training code: they live in `sam2rl_fast.policies` (the tracker
loads them without the training stack); re-exported here."""

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
