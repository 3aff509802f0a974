"""NIR neuron nodes (IF, LIF, CubaLIF) → bioconv neuron and synapse models, weight gains and biases.

The table and its maths are in :mod:`bioconv.nirio`; :class:`ImportOptions` says how to read them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from brian2 import Quantity, second

from bioconv.neurons import IF, LIF, RESETS, Reset, _check_time, time_field
from bioconv.synapses import Delta, Exponential

Discretization = Literal["continuous", "euler"]
DISCRETIZATIONS = ("continuous", "euler")


@dataclass(frozen=True)
class ImportOptions:
    """How to read a NIR graph.

    ``dt``: spike pulse width, the exporter's time step (snnTorch 0.1 ms, Norse 1 ms,
    bioconv's export default 1 ms). ``discretization``: ``"continuous"`` (the ODE) or
    ``"euler"`` (the exporter's per-step decay, :mod:`bioconv.nirio`). ``reset``: ``"zero"``
    (NIR's reset to v_reset = 0) or ``"subtract"`` for graphs whose exporter wrote reset by
    subtraction as v_reset = 0 (snnTorch). ``rate_scale_hz``: input rate per unit pixel
    (default: the bioconv metadata, else 1/dt, i.e. spike probability = pixel per step).
    """

    dt: Quantity = time_field(1)
    discretization: Discretization = "continuous"
    reset: Reset = "zero"
    rate_scale_hz: float | None = None

    def __post_init__(self) -> None:
        _check_time("ImportOptions", "dt", self.dt)
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {self.discretization!r}")
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")


def _snap(x: Any) -> Any:
    """Factors within 1e-12 of 1 are exactly 1 (bit-exact round trips)."""
    arr = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(arr - 1.0) < 1e-12, 1.0, arr)


def _arr(node: Any, field: str, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(getattr(node, field), dtype=np.float64)
    try:
        return np.broadcast_to(value, shape).astype(np.float64)
    except ValueError:
        raise ValueError(f"{field} of shape {value.shape} does not fit the layer shape {shape}") from None


def _uniform(arr: np.ndarray, what: str) -> float:
    if not np.all(arr == arr.flat[0]):
        raise ValueError(f"{what} varies within the layer; bioconv neuron models have one value per layer")
    return float(arr.flat[0])


def _per_channel(arr: np.ndarray, what: str) -> np.ndarray:
    """(C, H, W) constant over H, W → (C,); 1-D arrays as they are."""
    if arr.ndim != 3:
        return arr
    flat = arr.reshape(arr.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise ValueError(f"{what} varies within a conv channel; bioconv convolutions share weights per channel")
    return np.ascontiguousarray(flat[:, 0])


def _threshold(theta: np.ndarray, form: Any) -> Any:
    """θ in bioconv's form: the exported one (``form`` from the metadata), else the smallest exact one."""
    per_channel = theta.ndim == 3 and np.all(theta.reshape(theta.shape[0], -1) == theta.reshape(theta.shape[0], -1)[:, :1])
    if form == "scalar" or (form is None and np.all(theta == theta.flat[0])):
        return _uniform(theta, "v_threshold")
    if form == "channel" or (form is None and per_channel):
        return _per_channel(theta, "v_threshold")
    return theta


@dataclass(frozen=True)
class Neuron:
    """A neuron node converted: bioconv model, per-neuron weight gain, bias map and threshold."""

    model: Any
    synapse: Any
    gain: np.ndarray  # bioconv weight = gain * NIR weight (per output neuron)
    bias_gain: np.ndarray  # I_bias = bias_gain * b + bias_const
    bias_const: np.ndarray
    threshold: Any
    stored_bias: Any = None  # bioconv's own I_bias from the node metadata (bit-exact round trips)


def convert_neuron(name: str, node: Any, shape: tuple[int, ...], opts: ImportOptions) -> Neuron:
    kind, dt_s = type(node).__name__, float(opts.dt / second)
    meta = getattr(node, "metadata", None) or {}
    return dataclasses.replace(_convert(name, node, shape, opts, kind, dt_s, meta),
                               stored_bias=meta.get("bioconv_bias"))


def _convert(name: str, node: Any, shape: tuple[int, ...], opts: ImportOptions, kind: str, dt_s: float,
             meta: dict) -> Neuron:
    ref_s = float(meta.get("bioconv_tau_ref_s", 1e-3))
    if np.any(_arr(node, "v_reset", shape) != 0):
        raise ValueError(f"NIR node {name!r} ({kind}): v_reset != 0 is not supported; bioconv neurons reset to 0")
    r = _arr(node, "r", shape)
    theta = _threshold(_arr(node, "v_threshold", shape), meta.get("bioconv_threshold"))
    if kind == "IF":
        model = IF(reset=opts.reset, tau=ref_s * second)
        zero = np.zeros(shape)
        return Neuron(model, Delta(), _snap(r * dt_s), _snap(ref_s * r), zero, theta)
    tau_field, w_in = ("tau", np.ones(shape)) if kind == "LIF" else ("tau_mem", _arr(node, "w_in", shape))
    tau = _uniform(_arr(node, tau_field, shape), tau_field)
    if math.isinf(tau) and kind == "LIF":  # snnTorch's beta = 1: tau = dt/(1-beta) = inf, r = tau/dt = inf
        if not np.all(np.isinf(r)):
            raise ValueError(f"NIR node {name!r} (LIF): tau = inf with finite r has no input; use an IF node")
        zero = np.zeros(shape)  # r/tau taken as 1/dt, the ratio snnTorch writes (r = tau/dt)
        return Neuron(IF(reset=opts.reset, tau=ref_s * second), Delta(), zero + 1.0, zero + ref_s / dt_s, zero, theta)
    tau_m = tau
    if opts.discretization == "euler":
        if not tau > dt_s:
            raise ValueError(f"NIR node {name!r}: euler discretization needs {tau_field} > dt ({tau} s <= {dt_s} s)")
        tau_m = -dt_s / math.log1p(-dt_s / tau)
    synapse: Any = Delta()
    if kind == "CubaLIF":
        tau_syn = _uniform(_arr(node, "tau_syn", shape), "tau_syn")
        if opts.discretization == "euler":
            tau_syn = -dt_s / math.log1p(-dt_s / tau_syn)
        synapse = Exponential(tau_s=tau_syn * second)
    model = LIF(tau_m=tau_m * second, reset=opts.reset, tau=ref_s * second)
    v_leak = _arr(node, "v_leak", shape)
    # euler LIF: the exporter adds a spike's W·R·dt/tau to v *before* its threshold test; bioconv adds it
    # after the test and decays it once (by beta = 1 - dt/tau) before the next one, so w is divided by beta
    late = 1.0 - dt_s / tau if opts.discretization == "euler" and kind == "LIF" else 1.0
    return Neuron(model, synapse, _snap(r * w_in * (dt_s / tau) / late), _snap(r * w_in * (ref_s / tau_m)),
                   v_leak * (ref_s / tau_m), theta)
