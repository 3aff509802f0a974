r"""Input coding: images to firing rates, and rates to seeded, reproducible spike trains.

A pixel value :math:`x` becomes the rate :math:`r = \mathrm{rate\_scale}\,|x|` (Hz) with
sign :math:`\mathrm{sign}(x)` (signed spikes for inputs that can be negative, such as
mean/std-normalized CIFAR-10; the MCR-Norm paper §10-11). Per time step of length :math:`\Delta t`:

* ``bernoulli`` — a spike iff :math:`u < r\,\Delta t`, :math:`u \sim U[0, 1)`;
* ``poisson`` — a Poisson process sampled with at most one spike per step, i.e. a spike
  iff :math:`u < 1 - e^{-r\Delta t}` (the probability of at least one event in the step);
* ``current`` — no spikes: engines inject the constant current
  :math:`\sum_i w_{ji}\,\mathrm{sign}(x_i)\,r_i` into the first layer (Rueckauer et al. 2017 §2.2.4),
  see :func:`input_current`.

Image ``k`` of a batch that starts at dataset index ``first_index`` draws its uniforms
from ``np.random.default_rng([seed, first_index + k])``, so a train never depends on
how the data set is split into batches or workers.
"""

from __future__ import annotations

import logging
from typing import Literal, Optional

import numpy as np

from bioconv import ir

log = logging.getLogger(__name__)

SpikeCoding = Literal["bernoulli", "poisson", "current"]
CODINGS: tuple[str, ...] = ("bernoulli", "poisson", "current")


def input_rates_hz(images: np.ndarray, inp: ir.Input) -> tuple[np.ndarray, np.ndarray]:
    """Rates (N, n_in) float64 in Hz, :math:`r = \\mathrm{rate\\_scale}\\,|x|`, and signs (N, n_in) int8.

    ``images`` has shape (N, *inp.shape) (a single image of shape ``inp.shape`` is
    accepted and treated as N = 1). Flattening is in torch order.
    """
    x = np.asarray(images, dtype=np.float64)
    shape = tuple(inp.shape)
    if x.shape == shape:
        x = x[None]
    if x.shape[1:] != shape:
        raise ValueError(f"images have shape {x.shape}, expected (N, {', '.join(map(str, shape))}) for input {shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf; clean the data before encoding")
    x = x.reshape(x.shape[0], -1)
    return np.abs(x) * float(inp.rate_scale), np.sign(x).astype(np.int8)


def _check(rates_hz: np.ndarray, signs: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    rates = np.asarray(rates_hz, dtype=np.float64)
    sg = np.asarray(signs)
    if rates.ndim != 2:
        raise ValueError(f"rates_hz must have shape (N, n_in), got {rates.shape}")
    if sg.shape != rates.shape:
        raise ValueError(f"signs shape {sg.shape} must equal rates shape {rates.shape}")
    if not np.all(np.isin(sg, (-1, 0, 1))):
        raise ValueError("signs must be -1, 0 or 1")
    dt = float(dt_s)
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s!r}")
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError("rates_hz must be finite and >= 0 (put the sign into `signs`)")
    peak = float(rates.max(initial=0.0))
    if peak * dt > 1.0 + 1e-12:
        raise ValueError(
            f"input rate {peak:g} Hz exceeds 1/dt = {1 / dt:g} Hz (rate·dt = {peak * dt:g} > 1): at most one "
            "spike fits in a step; lower Input.rate_scale or use a smaller dt"
        )
    return rates, sg.astype(np.int8), dt


def spike_probability(rates_hz: np.ndarray, dt_s: float, coding: SpikeCoding) -> np.ndarray:
    """Per-step spike probability: :math:`r\\Delta t` (bernoulli) or :math:`1-e^{-r\\Delta t}` (poisson)."""
    rates = np.asarray(rates_hz, dtype=np.float64)
    if coding == "bernoulli":
        return rates * dt_s
    if coding == "poisson":
        return -np.expm1(-rates * dt_s)
    raise ValueError(f"coding {coding!r} has no spike probability; choose 'bernoulli' or 'poisson'")


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of dataset image ``index`` (the one rule every engine uses)."""
    return np.random.default_rng([int(seed), int(index)])


def spike_trains(
    rates_hz: np.ndarray,
    signs: np.ndarray,
    dt_s: float,
    n_steps: int,
    coding: SpikeCoding,
    seed: int,
    first_index: int = 0,
) -> np.ndarray:
    """Signed spike trains, int8 (N, n_steps, n_in) with values in {-1, 0, 1}.

    Image ``k`` uses ``default_rng([seed, first_index + k])`` and one uniform draw per
    (step, input), compared with :func:`spike_probability`; the spike then takes the
    input's sign. ``coding="current"`` returns all zeros (no input spikes; use
    :func:`input_current`). Raises ``ValueError`` if any rate exceeds 1/dt.
    """
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    rates, sg, dt = _check(rates_hz, signs, dt_s)
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if int(seed) < 0 or int(first_index) < 0:
        raise ValueError("seed and first_index must be >= 0")
    n, n_in = rates.shape
    out = np.zeros((n, n_steps, n_in), dtype=np.int8)
    if coding == "current":
        return out
    prob = spike_probability(rates, dt, coding)
    for k in range(n):
        u = image_rng(seed, first_index + k).random((n_steps, n_in))
        np.less(u, prob[k], out=out[k], casting="unsafe")
        out[k] *= sg[k]
    return out


def input_current(
    rates_hz: np.ndarray, signs: np.ndarray, layer: Optional[ir.Layer] = None
) -> np.ndarray:
    r"""Constant-current ("analog") input of Rueckauer et al. 2017 §2.2.4, in Hz (charge per second).

    Without ``layer``: the signed per-input rate :math:`\mathrm{sign}(x_i)\,r_i`, shape
    (N, n_in). With the first spiking ``layer``: the current
    :math:`I_j = \sum_i w_{ji}\,\mathrm{sign}(x_i)\,r_i` into each of its neurons, shape
    (N, n_post) — what layer 1 would receive on average from the spike codings. The bias
    is not included (it is the neuron's own ``I_bias``).
    """
    rates = np.asarray(rates_hz, dtype=np.float64)
    sg = np.asarray(signs)
    if rates.ndim != 2 or sg.shape != rates.shape:
        raise ValueError(f"rates_hz and signs must both have shape (N, n_in), got {rates.shape} and {sg.shape}")
    signed = rates * sg
    if layer is None:
        return signed
    from bioconv.connectivity import Connectivity, layer_synapses

    conn = layer_synapses(layer)
    if not isinstance(conn, Connectivity):
        raise ValueError(f"layer {layer.name!r} has no weighted synapses; current input needs Conv2d/Dense/AvgPool2d")
    return conn.matvec(signed)
