r"""Per-model state updates of the torch engine: frozen propagators plus pure step functions.

One :class:`Propagator` per spiking layer holds the exact one-step propagator of the
layer's linear ODEs (the same solution Brian2's ``exact_affine`` state updater generates,
:mod:`bioconv.integration`) as float coefficients, and :func:`step` advances a batch of
neurons by one time step in Brian2's schedule order:

1. **groups** (state update): :math:`X \leftarrow e^{M h} X + \int_0^h e^{Ms}ds\,B`, with
   ``v`` frozen while refractory;
2. **thresholds**: ``spike = (v > theta) & not_refractory`` (SRM: ``u = psi + r > theta``);
3. **synapses**: the synaptic input ``drive`` of this step (weighted spikes of the layer
   below at the same step) is added to ``v`` (delta; not while refractory), ``y`` (SRM) or
   ``x_syn`` (alpha);
4. **resets**: ``v = 0`` (which also wipes input that arrived in step 3), ``v -= theta``,
   or for SRM ``r -= 2*theta``.

Coefficients, with :math:`h = dt`, :math:`e_s = e^{-h/\tau_s}`, :math:`e_m = e^{-h/\tau_m}`,
:math:`e_r = e^{-h/\tau_r}`, :math:`b` = ``I_bias`` (evaluated in the same arithmetic order
as the code Brian2 2.9 generates, shown for each model):

* IF, delta: ``v = (h/tau * b) + v``
* LIF, delta: ``v = (c_b * b) + (e_m * v)``, :math:`c_b = \frac{\tau_m}{\tau}((e^{h/\tau_m}-1) e_m)`
* alpha states: ``I_syn = (e_s*I_syn) + (h e_s/tau_s * x_syn)``, ``x_syn = e_s*x_syn``
* IF, alpha: ``v = (((h/tau*b) + (c_I*I_syn)) + v) + (c_x*x_syn)``,
  :math:`c_I = \tau_s(e^{h/\tau_s}-1)e_s`, :math:`c_x = (\tau_s e^{h/\tau_s} - h - \tau_s) e_s`
* LIF, alpha: ``v = (((c_b*b) + (c_I*I_syn)) + (e_m*v)) + (c_x*x_syn)`` with
  :math:`a = 1/\tau_s - 1/\tau_m`, :math:`c_I = (e_m - e_s)/a`,
  :math:`c_x = \frac{e_m}{\tau_s}\,\frac{1 - e^{-ah}(1 + ah)}{a^2}` (limits
  :math:`h e_m` and :math:`e_m h^2/(2\tau_s)` when :math:`\tau_s = \tau_m`)
* SRM: ``psi = ((c_pb*b) + (h e_s/tau_s * y)) + (e_s*psi)``, ``r = e_r*r``,
  ``y = (c_yb*b) + (e_s*y)`` with :math:`c_{yb} = e\frac{\tau_s}{\tau}((e^{h/\tau_s}-1)e_s)`,
  :math:`c_{pb} = e\frac{\tau_s}{\tau}(e^{h/\tau_s} - 1 - h/\tau_s)e_s`

All states are kept in Brian2's SI units (``I_syn``, ``x_syn`` in 1/s), so the numbers
are Brian2's numbers. Synaptic weights are multiplied by the on_pre factor Brian2 applies
per synapse (1 for delta, :math:`e` for SRM's ``y += e*w``, :math:`1/\tau_s` for alpha's
``x_syn += w/tau_s``) before they are summed.

Residual differences to Brian2 (float64, CPU). With event propagation
(:mod:`bioconv.engines.torch`, the default) each synaptic weight is added to the target
state one by one in Brian2's order, so for IF and LIF with delta synapses (and IF with
alpha synapses, dt = τ = τ_s) the float64 trajectories are Brian2's (numpy target) bit for
bit: measured max |Δv| = 0 and identical spike counts on every neuron. For LIF-alpha and
SRM the closed-form coefficients above may differ from the values of sympy's printed
expressions (e.g. ``1.0526315789*(exp(h) - exp(0.05h))*exp(-1.05h)`` vs
:math:`(e_m - e_s)/a`) in the last bit; measured max |Δv| ≈ 2e-15, which changes a spike
only when v lands within a few ulp of θ (rare; ≥ 99.9 % of neurons identical is tested,
100 % observed so far). Brian2's cpp_standalone compiles with ``-ffast-math``, which may
contract ``a*b + c`` into FMA; spike counts are still identical in the tests. Dense
propagation (``conv2d``) and float32 change the summation order / precision: counts then
agree on ≥ 99 % of neurons. On CUDA ``index_add_`` uses atomics, so the order of
additions (and the last bits) is not deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Tuple, Union

import torch
from brian2 import ms

from bioconv.neurons import IF, LIF, SRM
from bioconv.synapses import Alpha, Delta

Kind = Literal["if", "lif", "srm"]
SynKind = Literal["delta", "alpha"]
ResetKind = Literal["zero", "subtract", "none"]

NEVER = -(2**40)  # "last spike" step of a neuron that has not spiked (Brian2: -1e4 s)


def _seconds(q: Any) -> float:
    return float(q)  # Brian2 quantities convert to SI floats


def refractory_steps(refractory_s: float, dt_s: float) -> int:
    """Brian2's ``timestep(t_ref, dt) = int((t_ref + 1e-3*dt)/dt)``."""
    return int((refractory_s + 1e-3 * dt_s) / dt_s)


@dataclass(frozen=True)
class Propagator:
    """Exact one-step update of one neuron/synapse model at a fixed ``dt``.

    ``c`` holds the coefficients named in the module docstring; ``gain`` is the factor
    Brian2's on_pre applies to each weight; ``ref_steps`` the refractory period in steps.
    """

    kind: Kind
    synapse: SynKind
    reset: ResetKind
    ref_steps: int
    gain: float
    c: Mapping[str, float] = field(default_factory=dict)

    @property
    def state_names(self) -> tuple[str, ...]:
        if self.kind == "srm":
            return ("y", "psi", "r")
        return ("v", "I_syn", "x_syn") if self.synapse == "alpha" else ("v",)


def _alpha_v_coefficients(h: float, tau_s: float, tau_m: float | None) -> tuple[float, float]:
    """(c_I, c_x): contribution of I_syn and x_syn to v over one step."""
    e_s = math.exp(-h / tau_s)
    if tau_m is None:  # IF
        return tau_s * ((-1.0 + math.exp(h / tau_s)) * e_s), ((-h + tau_s * math.exp(h / tau_s)) - tau_s) * e_s
    e_m = math.exp(-h / tau_m)
    a = 1.0 / tau_s - 1.0 / tau_m
    if abs(a * h) < 1e-9:
        return h * e_m, e_m * h * h / (2.0 * tau_s)
    return (e_m - e_s) / a, (e_m / tau_s) * (1.0 - math.exp(-a * h) * (1.0 + a * h)) / (a * a)


def make_propagator(neuron: Any, synapse: Any, dt_s: float) -> Propagator:
    """The :class:`Propagator` of ``neuron`` (IF/LIF/SRM) with ``synapse`` (Delta/Alpha) at ``dt_s``."""
    h = float(dt_s)
    if not isinstance(synapse, (Delta, Alpha)):
        raise ValueError(f"unknown synapse model {synapse!r}; use bioconv.synapses.Delta() or Alpha(tau_s)")
    syn: SynKind = "alpha" if isinstance(synapse, Alpha) else "delta"
    if isinstance(neuron, SRM):
        if syn == "alpha":
            synapse.post_equations(neuron)  # raises the explanatory ValueError
        tau, tau_s, tau_r = _seconds(neuron.tau), _seconds(neuron.tau_s), _seconds(neuron.tau_r)
        e_s = math.exp(-h / tau_s)
        grow = (-1.0 + math.exp(h / tau_s)) * e_s
        c = {
            "y_b": math.e * (tau_s / tau) * grow,
            "psi_b": math.e * (tau_s / tau) * (((-h / tau_s) + math.exp(h / tau_s)) - 1.0) * e_s,
            "psi_y": (h * e_s) / tau_s,
            "e_s": e_s,
            "e_r": math.exp(-h / tau_r),
        }
        return Propagator("srm", "delta", "none", 0, float(neuron.psp_gain), c)
    if not isinstance(neuron, (IF, LIF)):
        raise ValueError(f"unknown neuron model {neuron!r}; use bioconv.neurons.IF, LIF or SRM")
    tau = _seconds(neuron.tau)
    c: dict[str, float] = {}
    if isinstance(neuron, IF):
        kind: Kind = "if"
        tau_m = None
        c["b"] = h / tau
    else:
        kind = "lif"
        tau_m = _seconds(neuron.tau_m)
        c["e_m"] = math.exp(-h / tau_m)
        c["b"] = (tau_m / tau) * ((-1.0 + math.exp(h / tau_m)) * math.exp(-h / tau_m))
    gain = 1.0
    if syn == "alpha":
        tau_s = _seconds(synapse.tau_s)
        e_s = math.exp(-h / tau_s)
        c["e_s"] = e_s
        c["I_x"] = (h * e_s) / tau_s
        c["v_I"], c["v_x"] = _alpha_v_coefficients(h, tau_s, tau_m)
        gain = 1.0 / (float(synapse.tau_s / ms) * float(ms))  # Brian2: w/(tau_ms*ms)
    ref = refractory_steps(_seconds(neuron.refractory), h)
    return Propagator(kind, syn, neuron.reset, ref, gain, c)


def init_state(prop: Propagator, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> dict[str, torch.Tensor]:
    """Zero state (as Brian2 after the per-image reset) for a batch of neurons of ``shape``."""
    state = {name: torch.zeros(shape, dtype=dtype, device=device) for name in prop.state_names}
    if prop.ref_steps > 0:
        state["lastspike"] = torch.full(shape, NEVER, dtype=torch.int64, device=device)
    return state


def bias_terms(prop: Propagator, i_bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """Products ``coefficient * I_bias`` (constant over the run, identical to per-step products)."""
    if prop.kind == "srm":
        return {"y": prop.c["y_b"] * i_bias, "psi": prop.c["psi_b"] * i_bias}
    return {"v": prop.c["b"] * i_bias}


Drive = Union[None, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _deliver(target: torch.Tensor, drive: Drive) -> None:
    """Add ``drive`` to the fresh state tensor ``target`` in place."""
    if drive is None:
        return
    if isinstance(drive, tuple):
        target.view(-1).index_add_(0, drive[0], drive[1])
    else:
        target.add_(drive)


def step(
    prop: Propagator,
    state: dict[str, torch.Tensor],
    bias: Mapping[str, torch.Tensor],
    theta: torch.Tensor,
    drive: Drive,
    t: int,
) -> torch.Tensor:
    """Advance ``state`` by one step ``t``; returns the bool spike tensor (B, n).

    ``drive`` is this step's synaptic input (weights already times ``prop.gain``): None
    when no presynaptic spike arrives, a dense (B, n) sum, or synaptic events
    ``(targets, weights)`` (flat indices into the (B, n) state), which are added one by
    one in order (``index_add_``), like Brian2's ``numpy.add.at``/C++ loop.
    """
    c = prop.c
    if prop.kind == "srm":
        y, psi, r = state["y"], state["psi"], state["r"]
        new_psi = (bias["psi"] + c["psi_y"] * y) + c["e_s"] * psi
        state["r"] = r = c["e_r"] * r
        state["y"] = y = bias["y"] + c["e_s"] * y
        state["psi"] = psi = new_psi
        spikes = (psi + r) > theta
        _deliver(y, drive)
        state["r"] = torch.where(spikes, r - 2.0 * theta, r)
        return spikes

    v = state["v"]
    if prop.synapse == "delta" and prop.ref_steps == 0:
        # fast path, in place on the engine-owned state (same values: + and * commute exactly)
        if prop.kind == "lif":
            v.mul_(c["e_m"])
        v.add_(bias["v"])
        spikes = v > theta
        _deliver(v, drive)
        if prop.reset == "zero":
            v.masked_fill_(spikes, 0.0)
        else:
            v.sub_(spikes * theta)  # v - 1*theta = v - theta, v - 0*theta = v: exact
        return spikes
    not_ref = None
    if prop.ref_steps > 0:
        not_ref = (t - state["lastspike"]) >= prop.ref_steps
    if prop.synapse == "alpha":
        i_syn, x_syn = state["I_syn"], state["x_syn"]
        leak_v = v if prop.kind == "if" else c["e_m"] * v
        new_v = ((bias["v"] + c["v_I"] * i_syn) + leak_v) + c["v_x"] * x_syn
        state["I_syn"] = c["e_s"] * i_syn + c["I_x"] * x_syn
        state["x_syn"] = x_syn = c["e_s"] * x_syn
    else:
        new_v = bias["v"] + v if prop.kind == "if" else bias["v"] + c["e_m"] * v
    v = new_v if not_ref is None else torch.where(not_ref, new_v, v)
    spikes = v > theta
    if not_ref is not None:
        spikes &= not_ref
        not_ref = not_ref & ~spikes
        state["lastspike"] = torch.where(spikes, torch.as_tensor(t, device=v.device), state["lastspike"])
    if drive is not None:
        if prop.synapse == "alpha":
            _deliver(x_syn, drive)
        elif not_ref is None:
            v = v.clone() if v is state["v"] else v
            _deliver(v, drive)
        else:
            v_in = v.clone()
            _deliver(v_in, drive)
            v = torch.where(not_ref, v_in, v)
    if prop.reset == "zero":
        v = v.masked_fill_(spikes, 0.0) if v is not state["v"] else v.masked_fill(spikes, 0.0)
    else:
        v = torch.where(spikes, v - theta, v)
    state["v"] = v
    return spikes
