"""Learned memory control: the RL environment on the fast path, agents and their training.

Needs the `train` extra (gymnasium, stable-baselines3, tensorboard).
"""

from sam2rl_fast.rl.env import MemoryControlEnv, MemoryControlVecEnv, prepare_videos
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane
from sam2rl_fast.rl.features import FeatureCache, VideoFeatures, compute_features

__all__ = ["EpisodeBatch", "EpisodeVideo", "FeatureCache", "Lane", "MemoryControlEnv",
           "MemoryControlVecEnv", "VideoFeatures", "compute_features", "prepare_videos"]
