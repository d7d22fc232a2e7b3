"""The agent's network: the bank seen as a set of slots, one score per slot.

Observation (layout `OBS_LAYOUT`): S slots x 8 features, then 8 candidate features. Each
slot and the candidate become a token (shared per-slot embedding, no slot-position
embedding), two self-attention blocks mix them, and the action head scores each token:
action 0 ("drop the candidate") from the candidate token, action k from slot k-1's token.
So the network is permutation-equivariant over slots: relabelling the slots relabels the
action, which is what a memory bank means. Plain Linear/softmax ops only, so that the
network exports to ONNX as it is.

`fifo_prior` > 0 adds that many nats to the logit of the stock rule's action (store in an
empty slot, else over the oldest non-conditioning memory: SAM 2's FIFO, read from the
observation's occupied / is_cond / age features). The learned scores start near zero, so
an untrained agent's argmax is then the stock rule, and training moves it away only where
that pays; without it an untrained argmax is whichever action the random network ranks a
hair higher, the same one on nearly every frame (docs/results.md).
"""

from __future__ import annotations

import math

import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sam2rl_fast.policies.base import CANDIDATE_FEATURES, SLOT_FEATURES

_NS, _NC = len(SLOT_FEATURES), len(CANDIDATE_FEATURES)


class _Block(nn.Module):
    """Pre-norm self-attention + MLP over the tokens (written out: exports to ONNX as is)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):  # [B, N, d]
        B, N, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(B, N, d))
        return x + self.mlp(self.norm2(x))


_OCCUPIED, _IS_COND, _AGE = (SLOT_FEATURES.index(k) for k in ("occupied", "is_cond", "age"))


def fifo_action_mask(slots: torch.Tensor) -> torch.Tensor:
    """slots [B, S, 8] -> [B, S] 1.0 where storing is the stock rule's action: every empty
    slot (they are alike), else the oldest memory that is not a conditioning one."""
    occupied, is_cond = slots[..., _OCCUPIED] > 0.5, slots[..., _IS_COND] > 0.5
    key = torch.where(occupied, torch.where(is_cond, torch.full_like(slots[..., _AGE], -1.0),
                                            slots[..., _AGE]), torch.full_like(slots[..., _AGE], 2.0))
    return (key >= key.amax(-1, keepdim=True)).to(slots.dtype)


class SlotSetExtractor(BaseFeaturesExtractor):
    """obs [B, S*8+8] -> tokens [B, (S+1)*d]: candidate token first, then one per slot; with
    `fifo_prior`, each token carries one more channel: the prior on its action's logit."""

    def __init__(self, observation_space, capacity: int, d_model: int = 64, heads: int = 4, blocks: int = 2,
                 fifo_prior: float = 0.0):
        size = capacity * _NS + _NC
        if observation_space.shape != (size,):
            raise ValueError(f"SlotSetExtractor for {capacity} slots needs observations of size {size}, "
                             f"got {observation_space.shape}")
        self.token_dim = d_model + (1 if fifo_prior else 0)
        super().__init__(observation_space, features_dim=(capacity + 1) * self.token_dim)
        self.capacity, self.d_model, self.fifo_prior = capacity, d_model, float(fifo_prior)
        self.slot_in = nn.Linear(_NS, d_model)
        self.cand_in = nn.Linear(_NC, d_model)
        self.blocks = nn.Sequential(*[_Block(d_model, heads) for _ in range(blocks)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, obs):
        B, S = obs.shape[0], self.capacity
        raw = obs[:, : S * _NS].reshape(B, S, _NS)
        cand = self.cand_in(obs[:, S * _NS:])[:, None]
        x = self.norm(self.blocks(torch.cat([cand, self.slot_in(raw)], dim=1)))
        if self.fifo_prior:  # the drop action (the candidate's token) gets no prior
            prior = torch.cat([obs.new_zeros(B, 1), self.fifo_prior * fifo_action_mask(raw)], dim=1)
            x = torch.cat([x, prior[..., None]], dim=-1)
        return x.reshape(B, (S + 1) * self.token_dim)


class TokenScores(nn.Module):
    """Action logits: one shared linear score per token ([B, (S+1)*d] -> [B, S+1]), plus the
    token's prior channel when it has one."""

    def __init__(self, d_model: int, prior: bool = False):
        super().__init__()
        self.d_model, self.prior = d_model, prior
        self.score = nn.Linear(d_model, 1)
        nn.init.orthogonal_(self.score.weight, gain=0.01)  # near-uniform first policy, as SB3 does
        nn.init.zeros_(self.score.bias)

    def forward(self, latent):
        tokens = latent.reshape(latent.shape[0], -1, self.d_model + int(self.prior))
        logits = self.score(tokens[..., : self.d_model])[..., 0]
        return logits + tokens[..., self.d_model] if self.prior else logits


class SlotPolicy(ActorCriticPolicy):
    """PPO actor-critic over `SlotSetExtractor`: per-token action scores, an MLP value head."""

    def __init__(self, observation_space, action_space, lr_schedule, capacity: int = 7,
                 d_model: int = 64, heads: int = 4, blocks: int = 2, fifo_prior: float = 0.0, **kwargs):
        kwargs.setdefault("net_arch", dict(pi=[], vf=[64]))
        kwargs["features_extractor_class"] = SlotSetExtractor
        kwargs["features_extractor_kwargs"] = dict(capacity=capacity, d_model=d_model, heads=heads,
                                                   blocks=blocks, fifo_prior=fifo_prior)
        kwargs.setdefault("share_features_extractor", True)
        self._d_model, self._prior = d_model, bool(fifo_prior)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = TokenScores(self._d_model, prior=self._prior)
        # The optimiser was made for the replaced head: make it again over the new parameters.
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
