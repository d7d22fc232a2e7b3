"""Imitation of the oracle: demonstrations, their labels, and behaviour cloning of a policy.

The oracle (`sam2rl_fast.rl.oracle`) finds, against the ground truth, a decision sequence
that beats the stock rule; a policy network learns to take those decisions from its own
observations. Three pieces:

- `follow_actions` replays decision sequences as lanes of one `EpisodeBatch` and returns the
  observation the policy sees before each decision (and the IoU each frame gets);
- `equivalent_actions` marks the actions that leave the same bank as a demonstrated one
  (every empty slot is alike; an action naming a conditioning slot is "drop"), so that the
  loss does not ask the network to tell apart what the bank cannot;
- `behaviour_clone` fits a `SlotPolicy`'s action head to the labels (cross-entropy on the
  summed probability of the equivalent actions, weighted per sample) until every label is
  its argmax by a margin, or the step budget ends.

`branch_values` labels any state a policy reaches (the DAgger / policy-iteration step):
from each sampled decision of a policy's own rollout, every action is tried and the
policy's continuation scored to the end of the episode, all as lanes of one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.policies.base import SLOT_FEATURES
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane

_NS = len(SLOT_FEATURES)
_OCCUPIED, _IS_COND = SLOT_FEATURES.index("occupied"), SLOT_FEATURES.index("is_cond")


@dataclass
class Demonstrations:
    """Labelled observations: obs [n, D] float32, allowed [n, A] bool (the labelled action
    and every action equivalent to it), weight [n] float32, video name per sample."""

    obs: np.ndarray
    allowed: np.ndarray
    weight: np.ndarray
    videos: list[str]

    def __len__(self) -> int:
        return len(self.obs)

    @staticmethod
    def concat(parts: list[Demonstrations]) -> Demonstrations:
        return Demonstrations(np.concatenate([p.obs for p in parts]), np.concatenate([p.allowed for p in parts]),
                              np.concatenate([p.weight for p in parts]), [v for p in parts for v in p.videos])


def equivalent_actions(obs: np.ndarray, actions: np.ndarray, capacity: int) -> np.ndarray:
    """[n, capacity+1] bool: the actions that store the same memories as `actions` [n]."""
    obs = np.asarray(obs, np.float32).reshape(len(actions), -1)
    slots = obs[:, : capacity * _NS].reshape(len(actions), capacity, _NS)
    occupied, cond = slots[..., _OCCUPIED] > 0.5, slots[..., _IS_COND] > 0.5
    drop = np.concatenate([np.ones((len(actions), 1), bool), cond], axis=1)  # 0 or a pinned slot
    empty = np.concatenate([np.zeros((len(actions), 1), bool), ~occupied], axis=1)
    out = np.zeros((len(actions), capacity + 1), bool)
    for i, a in enumerate(np.asarray(actions, np.int64)):
        if drop[i, a]:
            out[i] = drop[i]
        elif empty[i, a]:
            out[i] = empty[i]
        else:
            out[i, a] = True
    return out


@torch.inference_mode()
def follow_actions(batch: EpisodeBatch, lanes: list[Lane], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replay `actions` [N, L-2] (decisions at frames 1..L-2) on `lanes`; returns the
    observations before each decision [N, L-2, D] and the IoU of every frame [N, L]."""
    actions = np.asarray(actions, np.int64)
    N, L = len(lanes), batch.L
    if actions.shape != (N, L - 2):
        raise ValueError(f"actions must be [{N}, {L - 2}], got {list(actions.shape)}")
    obs = np.zeros((N, L - 2, batch.obs_dim), np.float32)
    ious = np.ones((N, L))
    o = batch.reset(lanes)
    ious[:, 1] = batch.ious
    for t in range(1, L - 1):
        obs[:, t - 1] = o
        o, _, _, _ = batch.step(actions[:, t - 1])
        ious[:, t + 1] = batch.ious
    return obs, ious


def demonstrations(batch: EpisodeBatch, lanes: list[Lane], actions: np.ndarray,
                   weight: np.ndarray | None = None) -> tuple[Demonstrations, np.ndarray]:
    """Demonstrations of decision sequences `actions` [N, L-2] on `lanes`, and the IoUs of
    their replay [N, L] (equal to the search's, up to the batch's rounding)."""
    obs, ious = follow_actions(batch, lanes, actions)
    flat = obs.reshape(-1, obs.shape[-1])
    allowed = equivalent_actions(flat, actions.reshape(-1), batch.capacity)
    w = np.ones(len(flat), np.float32) if weight is None else np.asarray(weight, np.float32).reshape(-1)
    names = [batch.videos[ln.video].name for ln in lanes for _ in range(actions.shape[1])]
    return Demonstrations(flat, allowed, w, names), ious


def action_logits(policy, obs: torch.Tensor) -> torch.Tensor:
    """[n, A] logits of an SB3 actor-critic policy (a `SlotPolicy`) for observations [n, D]."""
    features = policy.extract_features(obs, policy.pi_features_extractor)
    latent = policy.mlp_extractor.forward_actor(features)
    return policy.action_net(latent)


def margins(policy, demos: Demonstrations) -> np.ndarray:
    """[n] best allowed logit minus best other logit (> 0: the argmax is a labelled action)."""
    with torch.no_grad():
        logits = action_logits(policy, torch.as_tensor(demos.obs))
    allowed = torch.as_tensor(demos.allowed)
    best_in = logits.masked_fill(~allowed, -torch.inf).amax(-1)
    best_out = logits.masked_fill(allowed, -torch.inf).amax(-1)
    return (best_in - best_out).numpy()


def behaviour_clone(policy, demos: Demonstrations, *, steps: int = 3000, lr: float = 1e-3,
                    batch_size: int = 512, margin: float = 1.0, seed: int = 0, log=None,
                    log_every: int = 200) -> dict:
    """Fit `policy`'s actor to `demos` (Adam, cross-entropy on the allowed set's summed
    probability, per-sample weights). Stops early once every sample with weight > 0 has its
    labelled action ahead by `margin` nats. Returns {"steps", "loss", "accuracy", "min_margin"}."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(demos.obs)
    M = torch.as_tensor(demos.allowed)
    W = torch.as_tensor(demos.weight)
    active = W > 0
    params = [p for n, p in policy.named_parameters() if not n.startswith(("value_net", "mlp_extractor.value"))]
    opt = torch.optim.Adam(params, lr=lr)
    n = len(X)
    policy.set_training_mode(True)
    loss_v, step = float("nan"), 0
    for step in range(1, steps + 1):
        idx = torch.randperm(n, generator=gen)[:batch_size] if n > batch_size else torch.arange(n)
        logp = torch.log_softmax(action_logits(policy, X[idx]), -1)
        nll = -torch.logsumexp(logp.masked_fill(~M[idx], -torch.inf), -1)
        loss = (W[idx] * nll).sum() / W[idx].sum().clamp_min(1e-8)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_v = loss.item()
        if step % 50 == 0 or step == steps:
            m = margins(policy, demos)[active.numpy()]
            if log is not None and step % log_every == 0:
                log(f"  bc step {step}: loss {loss_v:.4f}, accuracy {np.mean(m > 0):.3f}, min margin {m.min():+.2f}")
            if len(m) and m.min() > margin:
                break
    policy.set_training_mode(False)
    m = margins(policy, demos)[active.numpy()]
    return {"steps": step, "loss": loss_v, "accuracy": float(np.mean(m > 0)) if len(m) else 1.0,
            "min_margin": float(m.min()) if len(m) else float("inf")}


def policy_actions(policy):
    """obs [N, D] -> deterministic actions [N] (argmax), for rollouts inside a batch."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return action_logits(policy, torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()
    return act


@torch.inference_mode()
def branch_values(video: EpisodeVideo, model, act, frames: list[int], *, capacity: int = 7, obj: int = 0,
                  precision: str = "fp32", hold: int = 1) -> dict:
    """Q-values of every action at `frames` of `act`'s own rollout on `video`.

    Lane (f, a) follows `act` (obs [N, D] -> actions [N]) up to frame f, takes action a
    there and on the `hold` - 1 frames after it (an option: drop for `hold` frames keeps the
    bank as it is; one slot for `hold` frames keeps every other memory), then `act` again to
    the end; its value is the sum of its IoUs on frames f+1..L-1. One changed memory among
    six recent ones moves the masks little, a held choice shows what the choice is worth.
    All lanes share one batch (len(frames) x (capacity+1) lanes). Returns {"obs" [F, D]
    (the observation at each frame, the same on its A lanes), "policy" [F] (the policy's
    action there), "q" [F, A]}."""
    A = capacity + 1
    frames = list(frames)
    N = len(frames) * A
    batch = EpisodeBatch([video], model, N, obj=obj, capacity=capacity, precision=precision)
    try:
        L = batch.L
        if len(set(frames)) != len(frames) or not all(1 <= f <= L - 2 for f in frames):
            raise ValueError(f"frames must be distinct decisions in 1..{L - 2}, got {frames}")
        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        branch = np.repeat(np.asarray(frames), A)
        forced = np.tile(np.arange(A), len(frames))
        q = np.zeros(N)
        obs_at = np.zeros((len(frames), batch.obs_dim), np.float32)
        pol_at = np.zeros(len(frames), np.int64)
        o = batch.reset([Lane(0, obj, 0)] * N)
        for t in range(1, L - 1):
            a = np.asarray(act(o), np.int64)
            here = branch == t
            if here.any():  # the A lanes of this frame hold one state: record it once
                j, r = frames.index(t), int(np.flatnonzero(here)[0])
                obs_at[j], pol_at[j] = o[r], a[r]
            a = np.where((branch <= t) & (t < branch + hold), forced, a)
            o, _, _, _ = batch.step(a)
            q += np.where(branch < t + 1, batch.ious, 0.0)
    finally:
        batch.close()
    return {"obs": obs_at, "policy": pol_at, "q": q.reshape(len(frames), A)}


def labels_from_values(obs: np.ndarray, policy_action: np.ndarray, q: np.ndarray, capacity: int,
                       *, tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(allowed [F, A], weight [F]) from `branch_values`: the best action is the label unless
    the policy's own action is within `tolerance` of it (then the policy's action stays, so
    a learner only moves where moving pays); the weight is how much the choice matters
    (best minus worst value, a regret scale)."""
    best = q.argmax(-1)
    keep = q[np.arange(len(q)), policy_action] >= q.max(-1) - tolerance
    label = np.where(keep, policy_action, best)
    return equivalent_actions(obs, label, capacity), (q.max(-1) - q.min(-1)).astype(np.float32)


__all__ = ["Demonstrations", "action_logits", "behaviour_clone", "blank_agent", "branch_values", "demonstrations",
           "equivalent_actions", "follow_actions", "labels_from_values", "margins", "policy_actions"]


def blank_agent(capacity: int = 7, *, d_model: int = 64, fifo_prior: float = 0.0, seed: int = 0,
                **ppo_kwargs):
    """A fresh SB3 PPO agent over `SlotPolicy` (no environment attached: its spaces only), to
    be fitted by `behaviour_clone` and saved as an agent file, or trained further by PPO."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    from sam2rl_fast.policies.base import obs_size
    from sam2rl_fast.rl.env import observation_space as box
    from sam2rl_fast.policies.policy_net import SlotPolicy

    class _Spaces(gym.Env):  # SB3 reads the spaces; this is never stepped
        observation_space = box(obs_size(capacity))
        action_space = gym.spaces.Discrete(capacity + 1)

        def reset(self, *, seed=None, options=None):
            return np.zeros(self.observation_space.shape, np.float32), {}

        def step(self, action):
            raise RuntimeError("a blank agent's environment is not stepped")

    torch.manual_seed(seed)
    return PPO(SlotPolicy, _Spaces(), seed=seed, device="cpu", verbose=0,
               policy_kwargs=dict(capacity=capacity, d_model=d_model, fifo_prior=fifo_prior), **ppo_kwargs)
