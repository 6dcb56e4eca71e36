"""The teacher of the ``synthetic:teacher`` market: a wide random network whose components
have a power-law spectrum of amplitudes, so that model capacity limits what a student learns.

Consumes: a NumPy generator, the number of ``lags`` (past standardised overnight gaps, the
network's inputs, oldest first), ``width`` (components) and ``alpha`` (spectrum exponent).
Produces: :class:`TeacherNetwork`, a callable ``g(x)`` of rows of gap shocks with mean 0 and
variance 1 under the market's law (x ~ N(0, I)), and its spectrum (each component's share of
the variance of ``g``).
Guarantees: deterministic given the generator state; ``g = sum_k a_k phi_k(x) / sd`` with
``|a_k| = k^-alpha`` (random signs) and ``phi_k`` a centred ridge function
``tanh(SCALE * w_k.x + b_k)`` along a random unit direction ``w_k``, with its least-squares
linear part removed (the linear part of a sum of ridge functions is ONE direction, which
every student learns alike: it would add skill, not a capacity trend). The components are
nearly orthogonal (random directions), so ``g``'s variance is close to ``sum a_k^2`` and the
share of it beyond the first K components falls like K^(1 - 2 alpha): a student that can
represent K components has an excess loss that falls as a power of its capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TeacherNetwork"]

SCALE = 2.0            # pre-activation scale along each direction: clearly nonlinear
REFERENCE = 1 << 15    # Gaussian draws used to centre, de-linearise and scale the network


@dataclass(frozen=True)
class TeacherNetwork:
    """``g(x) = sqrt(linear) x.beta / |beta| + sqrt(1 - linear) (tanh(x W + b) a - x.beta - c) / sd``:
    unit variance; ``linear`` is the share a linear model learns (every size alike)."""

    weights: np.ndarray      # (lags, width): SCALE x unit directions
    bias: np.ndarray         # (width,)
    amplitudes: np.ndarray   # (width,): sign_k k^-alpha
    slope: np.ndarray        # (lags,): the removed least-squares linear part
    intercept: float
    sd: float
    linear: float
    spectrum: tuple[float, ...]   # per component: a_k^2 var(phi_k) / sum_j a_j^2 var(phi_j)

    @classmethod
    def draw(cls, rng: np.random.Generator, lags: int, width: int, alpha: float,
             linear: float = 0.0) -> TeacherNetwork:
        directions = rng.standard_normal((lags, width))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        weights = SCALE * directions
        bias = rng.standard_normal(width)
        amplitudes = rng.choice([-1.0, 1.0], width) * np.arange(1, width + 1) ** -float(alpha)
        x = rng.standard_normal((REFERENCE, lags))
        phi = np.tanh(x @ weights + bias)
        design = np.column_stack([x, np.ones(len(x))])
        # each component without its linear part: what a student must learn it by capacity
        resid = phi - design @ np.linalg.lstsq(design, phi, rcond=None)[0]
        power = amplitudes**2 * resid.var(axis=0)
        h = phi @ amplitudes
        coef = np.linalg.lstsq(design, h, rcond=None)[0]
        sd = float((h - design @ coef).std())
        return cls(weights, bias, amplitudes, coef[:-1], float(coef[-1]), sd, float(linear),
                   tuple(float(p) for p in power / power.sum()))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lin = x @ self.slope
        rest = np.tanh(x @ self.weights + self.bias) @ self.amplitudes - lin - self.intercept
        return (np.sqrt(self.linear) * lin / np.linalg.norm(self.slope)
                + np.sqrt(1.0 - self.linear) * rest / self.sd)

    def share_beyond(self, k: int) -> float:
        """The share of the spectrum in components k+1, k+2, ... (what a K-component student misses)."""
        return float(sum(self.spectrum[k:]))
