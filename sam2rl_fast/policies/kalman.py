"""A constant-velocity Kalman filter on boxes (cx, cy, aspect, height), as SAMURAI uses it.

Noise weights follow the SORT/ByteTrack filter SAMURAI builds on (position 1/20,
velocity 1/160 of the box height).
"""

from __future__ import annotations

import numpy as np

_POS, _VEL = 1.0 / 20, 1.0 / 160


def xyxy_to_xyah(b):
    x0, y0, x1, y1 = (float(v) for v in b)
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, w / h, h])


def xyah_to_xyxy(m):
    cx, cy, a, h = m[:4]
    w = a * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    def __init__(self):
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)
        self.mean = None
        self.cov = None

    def initiate(self, box):
        m = xyxy_to_xyah(box)
        self.mean = np.r_[m, np.zeros(4)]
        h = m[3]
        std = [2 * _POS * h, 2 * _POS * h, 1e-2, 2 * _POS * h,
               10 * _VEL * h, 10 * _VEL * h, 1e-5, 10 * _VEL * h]
        self.cov = np.diag(np.square(std))

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted box (x0, y0, x1, y1)."""
        h = self.mean[3]
        q = np.diag(np.square([_POS * h, _POS * h, 1e-2, _POS * h,
                               _VEL * h, _VEL * h, 1e-5, _VEL * h]))
        self.mean = self.F @ self.mean
        self.cov = self.F @ self.cov @ self.F.T + q
        return xyah_to_xyxy(self.mean)

    def update(self, box) -> None:
        z = xyxy_to_xyah(box)
        h = self.mean[3]
        r = np.diag(np.square([_POS * h, _POS * h, 1e-1, _POS * h]))
        s = self.H @ self.cov @ self.H.T + r
        k = np.linalg.solve(s, self.H @ self.cov).T
        self.mean = self.mean + k @ (z - self.H @ self.mean)
        self.cov = self.cov - k @ s @ k.T

