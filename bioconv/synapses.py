r"""Synapse kinds: post-neuron state plus ``on_pre`` code, as in ``brian2/examples/CUBA.py``.

A synapse kind contributes the current ``I_syn`` (Hz, dimensionless charge per second)
to the post-synaptic neuron's equations and says what a presynaptic spike does.
The weight ``w`` is dimensionless: the total charge one spike delivers to ``v``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from brian2 import Equations, Quantity, ms

from bioconv.neurons import SRM, _check_time, model_from_dict, time_field


@dataclass(frozen=True)
class Delta:
    r"""Delta synapse: a presynaptic spike jumps the target state, :math:`v \mathrel{+}= w`.

    For :class:`~bioconv.neurons.SRM` the target is the kernel state ``y`` (jump :math:`e\,w`),
    so the PSP is :math:`w\,\varepsilon(t)`.
    """

    kind = "delta"

    def post_equations(self, neuron: Any) -> Equations:
        if isinstance(neuron, SRM):
            return Equations("")
        return Equations("I_syn = 0*Hz : Hz")

    def on_pre(self, neuron: Any) -> str:
        gain = "" if neuron.psp_gain == 1.0 else f"{neuron.psp_gain!r}*"
        return f"{neuron.psp_target}_post += {gain}w"

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Alpha:
    r"""Current-based alpha synapse with unit total charge per unit weight.

    .. math::
        \tau_s \dot x = -x, \qquad \tau_s \dot I_\mathrm{syn} = x - I_\mathrm{syn},
        \qquad \text{spike: } x \mathrel{+}= w/\tau_s

    so one spike gives :math:`I_\mathrm{syn}(t) = \frac{w}{\tau_s}\frac{t}{\tau_s}e^{-t/\tau_s}`,
    whose integral is exactly :math:`w`: converted weights carry over from delta synapses.
    """

    tau_s: Quantity = time_field(1)

    kind = "alpha"

    def __post_init__(self) -> None:
        _check_time("Alpha", "tau_s", self.tau_s)

    def post_equations(self, neuron: Any) -> Equations:
        if isinstance(neuron, SRM):
            raise ValueError(
                "SRM neurons filter input through their own alpha PSP kernel ε; "
                "use synapse='delta' with SRM (set the kernel with SRM(tau_s=...))"
            )
        return Equations(
            """dI_syn/dt = (x_syn - I_syn)/tau_syn : Hz
            dx_syn/dt = -x_syn/tau_syn : Hz""",
            tau_syn=self.tau_s,
        )

    def on_pre(self, neuron: Any) -> str:
        return f"x_syn_post += w/({float(self.tau_s / ms)!r}*ms)"

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ("I_syn", "x_syn")


@dataclass(frozen=True)
class Exponential:
    r"""Current-based first-order (exponential) synapse with unit total charge per unit weight.

    .. math::
        \tau_s \dot I_\mathrm{syn} = -I_\mathrm{syn}, \qquad \text{spike: } I_\mathrm{syn} \mathrel{+}= w/\tau_s

    so one spike gives :math:`I_\mathrm{syn}(t) = \frac{w}{\tau_s} e^{-t/\tau_s}`, whose
    integral is exactly :math:`w` (the current-based synapse of a CUBA LIF neuron).
    """

    tau_s: Quantity = time_field(5)

    kind = "exponential"

    def __post_init__(self) -> None:
        _check_time("Exponential", "tau_s", self.tau_s)

    def post_equations(self, neuron: Any) -> Equations:
        if isinstance(neuron, SRM):
            raise ValueError(
                "SRM neurons filter input through their own alpha PSP kernel ε; "
                "use synapse='delta' with SRM (set the kernel with SRM(tau_s=...))"
            )
        return Equations("dI_syn/dt = -I_syn/tau_syn : Hz", tau_syn=self.tau_s)

    def on_pre(self, neuron: Any) -> str:
        return f"I_syn_post += w/({float(self.tau_s / ms)!r}*ms)"

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ("I_syn",)


SynapseModel = Union[Delta, Alpha, Exponential]
SYNAPSE_MODELS: dict[str, type] = {"delta": Delta, "alpha": Alpha, "exponential": Exponential}


def synapse_from_dict(data: dict[str, Any]) -> SynapseModel:
    return model_from_dict(data, SYNAPSE_MODELS)


def make_synapse(kind: str, **params: Any) -> SynapseModel:
    """Build a synapse model by name (``delta``, ``alpha``, ``exponential``)."""
    if kind not in SYNAPSE_MODELS:
        raise ValueError(f"unknown synapse kind {kind!r}; choose one of {sorted(SYNAPSE_MODELS)}")
    return SYNAPSE_MODELS[kind](**params)
