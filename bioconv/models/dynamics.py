r"""One neuron/synapse model at one time step, as every engine runs it: :class:`Dynamics`.

The parameter objects (:mod:`bioconv.neurons`, :mod:`bioconv.synapses`) state the maths
once, as Brian2 ``Equations`` plus declared roles; Brian2 integrates those equations
directly, and the torch engine (event path and the fused numba kernel) reads a
:class:`Dynamics` built from the same equations by Brian2's own code generation
(:mod:`bioconv.models.codegen`): the exact one-step propagator (``exact_affine``) as
scalar constants computed once plus vector statements in Brian2's order.

**Schedules** (:data:`SCHEDULES`; the graph's ``schedule`` picks one), one time step of
one layer. ``"brian2"`` is Brian2's default order of slots:

1. ``groups`` — state update: the statements of :attr:`Dynamics.update`; the states in
   :attr:`Dynamics.frozen` keep their value while the neuron is refractory, i.e. while
   ``t - lastspike < ref_steps`` (Brian2's ``timestep(t - lastspike, dt) >= timestep(t_ref, dt)``);
2. ``thresholds`` — ``spike = threshold & not refractory``; a spiking neuron becomes
   refractory now (``lastspike = t``);
3. ``synapses`` — each presynaptic spike of this step (the layer below spiked in its own
   threshold slot of this step) adds ``weight(w)`` (the on_pre expression, e.g.
   ``_lio_1*w`` for ``x_syn_post += w/(5.0*ms)``) to :attr:`Dynamics.target`, presynaptic
   neurons in index order; not to a frozen target of a refractory neuron;
4. ``resets`` — the reset statements for the neurons that spiked.

``"reset-first"`` swaps 3 and 4 (Brian2 ``Network.schedule = ['start', 'groups',
'thresholds', 'resets', 'synapses', 'end']``). The two differ only when a synapse writes the
state that the reset overwrites (delta synapses onto ``v`` with reset to zero): in Brian2's
order the input that arrives in the step in which a neuron fires is erased by its reset, a
dead time of one step per spike (rate :math:`\approx x/(\theta + x\,dt)` for drive
:math:`x`), which the calibration absorbs at one ``dt`` but which changes with ``dt``. With
``"reset-first"`` the threshold test, which saw only earlier input, comes before this step's
input, as in continuous time, and the rates converge as :math:`dt \to 0` without that
factor. With reset by subtraction, or synapses that write a current, both orders give the
same trajectories (up to the order of float additions).

Roles: the threshold variable and condition, the reset, the readout variable (what a
voltage/integrating readout reads: ``v``, or the SRM's ``u = psi + r``), the target of a
presynaptic spike and its on_pre factor, the refractory period. The integrating readout
(:func:`readout_dynamics`) is a non-spiking, non-leaky integrator
:math:`dv/dt = I_\mathrm{bias}/\tau + I_\mathrm{syn}` of the graph's synapse model (an
:class:`~bioconv.neurons.IF` without threshold and reset) whose ``v`` is the class score.

Adding a neuron model: a class in :mod:`bioconv.neurons` with ``equations()``,
``threshold``, ``reset_code``, ``psp_target``/``psp_gain``, ``state_variables`` and
``readout_variable``; the engines need no new coefficients.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping

import numpy as np

from bioconv.models import codegen
from bioconv.models.codegen import Statement

Schedule = Literal["brian2", "reset-first"]
#: The slots a spiking layer runs in one time step, in order, per schedule.
SCHEDULES: dict[str, tuple[str, ...]] = {
    "brian2": ("groups", "thresholds", "synapses", "resets"),
    "reset-first": ("groups", "thresholds", "resets", "synapses"),
}
#: Brian2's default schedule (kept for readers of the slot order).
SCHEDULE: tuple[str, ...] = SCHEDULES["brian2"]


def check_schedule(schedule: str) -> str:
    """``schedule`` if it is one of :data:`SCHEDULES`, else a ``ValueError`` naming the choices."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {sorted(SCHEDULES)}")
    return schedule


def brian2_schedule(schedule: str) -> list[str]:
    """Brian2's ``Network.schedule`` list for ``schedule``."""
    return ["start", *SCHEDULES[check_schedule(schedule)], "end"]


@dataclass(frozen=True, eq=False)
class Dynamics:
    """The update code of one neuron + synapse model at one ``dt`` (see the module docstring).

    ``update``, ``threshold`` and ``reset`` are statements ``(var, op, expr)`` in Brian2's
    order, over the state variables, ``I_bias``, ``theta`` and the scalar ``constants``
    (``_lio_*``); ``threshold`` ends with ``_cond = ...``. ``weight_expr`` (over ``w`` and
    ``weight_constants``) is what one presynaptic spike adds to ``target``.
    """

    kind: str
    synapse_kind: str
    states: tuple[str, ...]
    constants: Mapping[str, float]
    update: tuple[Statement, ...]
    threshold: tuple[Statement, ...]
    reset: tuple[Statement, ...]
    target: str
    weight_expr: str
    weight_constants: Mapping[str, float]
    frozen: tuple[str, ...]
    ref_steps: int
    readout: str
    spiking: bool = True
    schedule: Schedule = "brian2"

    @property
    def reset_first(self) -> bool:
        """True when spiking neurons are reset before this step's synaptic input arrives."""
        return SCHEDULES[self.schedule].index("resets") < SCHEDULES[self.schedule].index("synapses")

    @property
    def signature(self) -> str:
        """The code (not the constants' values): engines compile one kernel branch per signature."""
        return json.dumps([self.states, self.update, self.threshold if self.spiking else None,
                           self.reset if self.spiking else None, self.target, sorted(self.constants),
                           self.frozen if self.ref_steps > 0 else (), self.readout, self.spiking, self.schedule])

    def weights(self, w: np.ndarray) -> np.ndarray:
        """What each synapse adds per presynaptic spike: the on_pre expression of ``w`` (float64)."""
        w = np.asarray(w, dtype=np.float64)
        value = eval(self.weight_expr, {"__builtins__": {}}, {**self.weight_constants, "w": w})  # noqa: S307
        return np.broadcast_to(np.asarray(value, dtype=np.float64), w.shape).copy()


def _refractory_steps(neuron: Any, dt_s: float) -> int:
    """Brian2's ``timestep(t_ref, dt) = int((t_ref + 1e-3*dt)/dt)``."""
    from brian2.core.functions import timestep

    refractory = float(getattr(neuron, "refractory", 0.0))
    return int(timestep(refractory, float(dt_s))) if refractory > 0 else 0


def _key(model: Any) -> str:
    from bioconv.neurons import model_to_dict

    return json.dumps(model_to_dict(model), sort_keys=True, default=str)


@functools.lru_cache(maxsize=256)
def _build(neuron_key: str, synapse_key: str, dt_s: float, spiking: bool, schedule: str = "brian2") -> Dynamics:
    from bioconv.neurons import neuron_from_dict
    from bioconv.synapses import synapse_from_dict

    neuron, synapse = neuron_from_dict(json.loads(neuron_key)), synapse_from_dict(json.loads(synapse_key))
    update = codegen.state_update(neuron, synapse)
    pre = codegen.on_pre(neuron, synapse)
    if len(pre.vector) != 1 or not pre.vector[0][0].endswith("_post") or pre.vector[0][1] != "+=":
        raise ValueError(f"on_pre {synapse.on_pre(neuron)!r}: engines support one statement '<state>_post += <expr>'")
    target, _, weight_expr = pre.vector[0]
    cond = codegen.threshold(neuron, synapse)
    reset = codegen.reset(neuron, synapse)
    eqs = neuron.equations() + synapse.post_equations(neuron)
    states = tuple(eqs.diff_eq_names)
    readout = neuron.readout_variable
    if readout not in states:
        readout = codegen._render(str(eqs[readout].expr))  # a subexpression such as u = psi + r
    return Dynamics(
        kind=neuron.kind,
        synapse_kind=synapse.kind,
        states=tuple(sorted(states, key=lambda s: (s not in neuron.state_variables, s))),
        constants=update.constants(dt_s),
        update=update.vector,
        threshold=cond.vector,
        reset=reset.vector,
        target=target[: -len("_post")],
        weight_expr=weight_expr,
        weight_constants=pre.constants(dt_s),
        frozen=codegen.unless_refractory(neuron, synapse),
        ref_steps=_refractory_steps(neuron, dt_s) if spiking else 0,
        readout=readout,
        spiking=spiking,
        schedule=schedule,
    )


def make_dynamics(neuron: Any, synapse: Any, dt_s: float, schedule: Schedule = "brian2") -> Dynamics:
    """The :class:`Dynamics` of ``neuron`` with ``synapse`` at time step ``dt_s`` (seconds) in ``schedule``; cached."""
    from bioconv.neurons import NEURON_MODELS
    from bioconv.synapses import SYNAPSE_MODELS

    if type(neuron) not in NEURON_MODELS.values():
        raise ValueError(f"unknown neuron model {neuron!r}; use one of bioconv.neurons {sorted(NEURON_MODELS)}")
    if type(synapse) not in SYNAPSE_MODELS.values():
        raise ValueError(f"unknown synapse model {synapse!r}; use one of bioconv.synapses {sorted(SYNAPSE_MODELS)}")
    synapse.post_equations(neuron)  # raises the model's own ValueError for invalid pairs
    return _build(_key(neuron), _key(synapse), float(dt_s), True, check_schedule(schedule))


def readout_neuron(neuron: Any) -> Any:
    """The integrating readout's neuron: a non-leaky integrator with the layer's reference time ``tau``."""
    from bioconv.neurons import IF

    return IF(reset="zero", tau=neuron.tau)


def readout_dynamics(neuron: Any, synapse: Any, dt_s: float) -> Dynamics:
    """:class:`Dynamics` of the integrating output layer (no threshold, no reset, no refractoriness)."""
    return _build(_key(readout_neuron(neuron)), _key(synapse), float(dt_s), False)


#: The spiking max-pool's relay neuron (independent of the graph's models): a spike passed by
#: the gate (:class:`bioconv.connectivity.GatedMaxPool`) does ``v += 1``; threshold
#: ``v > 0.5``, reset ``v = 0``, no bias, no leak, so the pool unit repeats the winner's
#: spikes one for one, one step later.
RELAY = Dynamics(
    kind="relay",
    synapse_kind="gate",
    states=("v",),
    constants={},
    update=(),
    threshold=(("_cond", "=", "v > 0.5"),),
    reset=(("v", "=", "0"),),
    target="v",
    weight_expr="w",
    weight_constants={},
    frozen=(),
    ref_steps=0,
    readout="v",
)


def relay_dynamics(schedule: Schedule = "brian2") -> Dynamics:
    """:data:`RELAY` in ``schedule``."""
    return RELAY if schedule == RELAY.schedule else replace(RELAY, schedule=check_schedule(schedule))
