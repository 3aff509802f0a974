r"""The LIF rate curve as an ANN activation (Hunsberger & Eliasmith 2015): a data node plus its numpy maths.

A layer whose ``rate_curve`` is set computes :math:`a = A\,r_\gamma(z)` instead of the ReLU,
where :math:`z` is its pre-activation in units of the threshold θ (the steady-state drive
:math:`RI/\theta` of a LIF neuron) and

.. math::
    r_\gamma(z) = \frac{1}{\tau_\mathrm{ref} + \tau_\mathrm{RC}\,\ln\!\left(1 + 1/\rho_\gamma(z - 1)\right)},
    \qquad \rho_\gamma(x) = \gamma \ln\!\left(1 + e^{x/\gamma}\right),

:math:`r_\gamma = 0` where :math:`\rho_\gamma = 0`. With :math:`\gamma = 0`, :math:`\rho_0(x) = \max(x, 0)` and
:math:`r_0` is the exact rate of a LIF neuron (:class:`bioconv.neurons.LIF`, reset to zero, membrane time
constant :math:`\tau_\mathrm{RC}`, refractory period :math:`\tau_\mathrm{ref}`) under the constant drive
:math:`z`; the smoothing :math:`\gamma > 0` makes the curve differentiable at the rheobase
:math:`z = 1` for training. The amplitude :math:`A` (seconds) turns rates into activations: activation
1 is a rate of :math:`1/A`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LIFRate:
    """Parameters of the rate-curve activation (seconds; ``smoothing`` in units of θ); see the module docstring."""

    tau_rc: float
    tau_ref: float
    amplitude: float
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("tau_rc", "tau_ref", "amplitude", "smoothing"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (value == 0 and name in ("tau_rc", "amplitude")):
                raise ValueError(f"LIFRate.{name} must be finite and {'>= 0' if name in ('tau_ref', 'smoothing') else '> 0'}"
                                 f" (seconds; smoothing in units of the threshold), got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)

    def rate_hz(self, z: np.ndarray, smoothing: float | None = None) -> np.ndarray:
        """:math:`r_\\gamma(z)` in Hz (``smoothing`` overrides γ; 0 gives the exact LIF rate)."""
        gamma = self.smoothing if smoothing is None else float(smoothing)
        x = np.asarray(z, dtype=np.float64) - 1.0
        j = gamma * np.logaddexp(0.0, x / gamma) if gamma > 0 else np.maximum(x, 0.0)
        active = j > 1e-20
        safe = np.where(active, j, 1.0)
        return np.where(active, 1.0 / (self.tau_ref + self.tau_rc * (np.log1p(safe) - np.log(safe))), 0.0)

    def activation(self, z: np.ndarray) -> np.ndarray:
        """The trained activation :math:`A\\,r_\\gamma(z)`."""
        return self.amplitude * self.rate_hz(z)

    def drive_for_rate(self, rate_hz: float) -> float:
        """The drive :math:`z` at which the exact curve :math:`r_0` reaches ``rate_hz`` (< 1/τ_ref)."""
        period = 1.0 / float(rate_hz) - self.tau_ref
        if not period > 0:
            raise ValueError(f"rate {rate_hz} Hz is not below the LIF's maximum 1/tau_ref = {1 / self.tau_ref:g} Hz")
        return 1.0 / (1.0 - math.exp(-period / self.tau_rc))

    def to_dict(self) -> dict[str, float]:
        return {"tau_rc": self.tau_rc, "tau_ref": self.tau_ref, "amplitude": self.amplitude,
                "smoothing": self.smoothing}
