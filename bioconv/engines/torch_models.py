r"""Per-model state updates of the torch engine: :func:`step` runs a layer's :class:`~bioconv.models.Dynamics`.

Nothing here knows a neuron model: the statements, constants and roles come from the
models layer (:mod:`bioconv.models`), which takes them from Brian2's own code generation
for the same ``Equations`` Brian2 integrates. :func:`step` advances a batch of neurons
(tensors (B, n)) by one time step in the order of ``Dynamics.schedule``
(:data:`bioconv.models.SCHEDULES`; Brian2's default shown, ``"reset-first"`` runs 4 before 3):

1. **groups**: the vector statements of ``Dynamics.update``, evaluated on tensors with
   the same operations in the same order as Brian2's generated code (float64 results
   are Brian2's bit for bit); the ``frozen`` states keep their value while refractory;
2. **thresholds**: ``spike = _cond & not_refractory``;
3. **synapses**: this step's synaptic input ``drive`` (presynaptic spikes times the
   on_pre expression of ``w``) is added to ``Dynamics.target`` (not to a frozen target
   of a refractory neuron, including one that spiked in step 2);
4. **resets**: the reset statements, for the neurons that spiked.

With event propagation (:mod:`bioconv.engines.torch`) each synaptic weight is added to
the target state one by one in Brian2's order, so float64 CPU trajectories are Brian2's
for every model. Dense propagation (``conv2d``) and float32 change the summation order /
precision. On CUDA ``index_add_`` uses atomics, so the order of additions (and the last
bits) is not deterministic.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Tuple, Union

import torch

from bioconv.models import Dynamics, make_dynamics, readout_dynamics
from bioconv.models.dynamics import RELAY, relay_dynamics

NEVER = -(2**40)  # "last spike" step of a neuron that has not spiked (Brian2: -1e4 s)

__all__ = ["Dynamics", "make_dynamics", "readout_dynamics", "RELAY", "relay_dynamics", "init_state", "step", "readout_value"]


@functools.lru_cache(maxsize=512)
def _compiled(code: tuple) -> tuple:
    return tuple((var, op, compile(expr, f"<bioconv {var}>", "eval")) for var, op, expr in code)


def _run(statements: tuple, ns: dict) -> None:
    """Execute Brian2 statements ``(var, op, expr)`` on the namespace ``ns`` (tensors and floats)."""
    for var, op, code in _compiled(statements):
        value = eval(code, {}, ns)  # noqa: S307 - Brian2's generated expressions
        if op == "=":
            ns[var] = value
        elif op == "+=":
            ns[var] = ns[var] + value
        elif op == "-=":
            ns[var] = ns[var] - value
        elif op == "*=":
            ns[var] = ns[var] * value
        elif op == "/=":
            ns[var] = ns[var] / value
        else:  # pragma: no cover - make_statements emits no other operators
            raise ValueError(f"unsupported statement operator {op!r}")


def init_state(dyn: Dynamics, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> dict[str, torch.Tensor]:
    """Zero state (as Brian2 after the per-image reset) for a batch of neurons of ``shape``."""
    state = {name: torch.zeros(shape, dtype=dtype, device=device) for name in dyn.states}
    if dyn.ref_steps > 0:
        state["lastspike"] = torch.full(shape, NEVER, dtype=torch.int64, device=device)
    return state


def readout_value(dyn: Dynamics, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The readout variable (``v``, or the SRM's ``psi + r``) of ``state``."""
    if dyn.readout in state:
        return state[dyn.readout]
    return eval(dyn.readout, {}, dict(state))  # noqa: S307


Drive = Union[None, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _deliver(target: torch.Tensor, drive: Drive) -> None:
    """Add ``drive`` to the fresh state tensor ``target`` in place."""
    if isinstance(drive, tuple):
        target.view(-1).index_add_(0, drive[0], drive[1])
    else:
        target.add_(drive)


def step(
    dyn: Dynamics,
    state: dict[str, torch.Tensor],
    i_bias: torch.Tensor,
    theta: torch.Tensor,
    drive: Drive,
    t: int,
) -> torch.Tensor:
    """Advance ``state`` by one step ``t`` (in place in the dict); returns the bool spike tensor (B, n).

    ``drive`` is this step's synaptic input (already the on_pre expression of the weights):
    None when no presynaptic spike arrives, a dense (B, n) sum, or synaptic events
    ``(targets, weights)`` (flat indices into the (B, n) state), which are added one by one
    in order (``index_add_``), like Brian2's ``numpy.add.at``/C++ loop.
    """
    ns: dict[str, Any] = dict(dyn.constants)
    ns.update(state)
    ns["I_bias"], ns["theta"] = i_bias, theta
    # 1. groups
    _run(dyn.update, ns)
    new = {name: ns[name] for name in dyn.states}
    not_ref = None
    if dyn.ref_steps > 0:
        not_ref = (t - state["lastspike"]) >= dyn.ref_steps
        for name in dyn.frozen:
            new[name] = torch.where(not_ref, new[name], state[name])
    # 2. thresholds
    if dyn.spiking:
        ns.update(new)
        _run(dyn.threshold, ns)
        spikes = ns["_cond"]
        if not_ref is not None:
            spikes = spikes & not_ref
            not_ref = not_ref & ~spikes
            state["lastspike"] = torch.where(spikes, torch.as_tensor(t, device=spikes.device), state["lastspike"])
    else:
        spikes = torch.zeros_like(new[dyn.states[0]], dtype=torch.bool)
    if dyn.reset_first:
        _reset(dyn, ns, new, spikes)
    # 3. synapses
    if drive is not None:
        target = new[dyn.target]
        if target is state.get(dyn.target) or target is i_bias:
            target = target.clone()
        if not_ref is not None and dyn.target in dyn.frozen:
            written = target.clone()
            _deliver(written, drive)
            target = torch.where(not_ref, written, target)
        else:
            _deliver(target, drive)
        new[dyn.target] = target
    # 4. resets
    if not dyn.reset_first:
        _reset(dyn, ns, new, spikes)
    state.update(new)
    return spikes


def _reset(dyn: Dynamics, ns: dict[str, Any], new: dict[str, torch.Tensor], spikes: torch.Tensor) -> None:
    """The reset statements, applied to ``new`` where ``spikes``."""
    if dyn.spiking and dyn.reset:
        ns.update(new)
        reset_ns = dict(ns)
        _run(dyn.reset, reset_ns)
        for var, _, _ in dyn.reset:
            if var in new:
                new[var] = torch.where(spikes, reset_ns[var], new[var])
