r"""Neuron models: frozen parameter objects holding Brian2 quantities that render ``Equations``.

Every model integrates with ``method = "exact_affine"`` (:mod:`bioconv.integration`), the
exact solution of its linear ODEs over one step.

All state variables are dimensionless and measured in units of the threshold scale
(the threshold ``theta`` is a per-neuron parameter, default 1). The bias is a constant
current ``I_bias`` expressed per reference time constant :math:`\tau` (1 ms by
default), so that an IF neuron with bias :math:`b` and no input fires at
:math:`b/(\theta\tau)`; rates "per time constant" (rate·τ) are then ANN activations.
The synaptic input is the current ``I_syn`` (Hz) provided by the synapse model
(:mod:`bioconv.synapses`); delta synapses instead jump ``psp_target`` directly.

Every model's maths is stated once, in its class docstring. The torch engine mirrors
these equations through :mod:`bioconv.models`, which takes the update code from
Brian2's own code generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union

from brian2 import Equations, Quantity, have_same_dimensions, ms, second

from bioconv.integration import METHOD_NAME as EXACT_AFFINE

Reset = Literal["zero", "subtract"]
RESETS: tuple[str, ...] = ("zero", "subtract")


def time_field(milliseconds: float) -> Any:
    """A dataclass field defaulting to a Brian2 time (quantities are arrays, so need a factory)."""
    return field(default_factory=lambda: milliseconds * ms)


def _check_time(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    if not isinstance(value, Quantity) or not have_same_dimensions(value, second):
        raise ValueError(
            f"{owner}.{name} must be a Brian2 time quantity such as 1*ms, got {value!r}; "
            "multiply by a unit (from brian2 import ms)"
        )
    if float(value) < 0 or (float(value) == 0 and not allow_zero):
        raise ValueError(f"{owner}.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _unless_refractory(refractory: Quantity) -> str:
    return "(unless refractory)" if float(refractory) > 0 else ""


def _check_reset(owner: str, reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"{owner}.reset must be one of {RESETS}, got {reset!r}")


class _IntegrateAndFire:
    r"""Shared maths of :class:`IF` and :class:`LIF` (IF is LIF with :math:`\tau_m \to \infty`).

    .. math::
        \frac{dv}{dt} = -\frac{v}{\tau_m} + \frac{I_\mathrm{bias}}{\tau} + I_\mathrm{syn}, \qquad
        v > \theta \;\Rightarrow\; \text{spike},\;
        v \leftarrow 0 \;(\texttt{zero}) \text{ or } v \leftarrow v - \theta \;(\texttt{subtract}),

    then ``v`` is clamped for the refractory period (Brian2's ``(unless refractory)``).
    Roles (read by every engine through :mod:`bioconv.models`): threshold variable and
    readout variable ``v``, presynaptic spikes jump ``v`` (delta synapses).
    """

    kind = "if"
    method = EXACT_AFFINE
    psp_target = "v"
    psp_gain = 1.0
    threshold = "v > theta"
    threshold_variable = "v"
    readout_variable = "v"

    def _check(self, owner: str) -> None:
        _check_reset(owner, self.reset)
        for name in self._times:
            _check_time(owner, name, getattr(self, name))
        _check_time(owner, "refractory", self.refractory, allow_zero=True)

    def _leak(self) -> str:  # the -v/tau_m term; none for IF (tau_m -> infinity)
        return "-v/tau_m + " if hasattr(self, "tau_m") else ""

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ("v",)

    def equations(self) -> Equations:
        constants = {name: getattr(self, name) for name in self._times}
        return Equations(
            f"""dv/dt = {self._leak()}I_bias/tau + I_syn : 1 {_unless_refractory(self.refractory)}
            I_bias : 1 (constant)
            theta : 1 (constant)""",
            **constants,
        )

    @property
    def reset_code(self) -> str:
        return "v = 0" if self.reset == "zero" else "v -= theta"


@dataclass(frozen=True)
class IF(_IntegrateAndFire):
    r"""Non-leaky integrate-and-fire neuron (the "standard IF" of Rueckauer et al. 2017 with ``reset="zero"``).

    :math:`dv/dt = I_\mathrm{bias}/\tau + I_\mathrm{syn}`: the maths of
    :class:`_IntegrateAndFire` without the leak. With constant drive and ``subtract`` the
    rate is exactly :math:`I_\mathrm{bias}/(\theta\tau)` (Rueckauer et al. 2017);
    with ``zero`` the residual above θ is lost (the stepped response of Diehl et al. 2015).
    An optional absolute refractory period clamps v.
    """

    reset: Reset = "zero"
    tau: Quantity = time_field(1)
    refractory: Quantity = time_field(0)

    kind = "if"
    _times = ("tau",)

    def __post_init__(self) -> None:
        self._check("IF")


@dataclass(frozen=True)
class LIF(_IntegrateAndFire):
    r"""Leaky integrate-and-fire neuron.

    .. math::
        \tau_m \frac{dv}{dt} = -v + \frac{\tau_m}{\tau} I_\mathrm{bias} + \tau_m I_\mathrm{syn},
        \qquad v > \theta \Rightarrow \text{spike, reset as in } :class:`IF`,
        \text{ then refractory for } t_\mathrm{ref}

    The input resistance is folded into the drive: :math:`RI = I_\mathrm{bias}\tau_m/\tau`.
    For constant drive the f–I curve is
    :math:`r = 1/(t_\mathrm{ref} + \tau_m \ln(RI/(RI-\theta)))` for :math:`RI > \theta`
    (reset to zero); :math:`\tau_m \to \infty` recovers :class:`IF`.

    For conversion the curve starts with infinite slope at the rheobase :math:`RI = \theta`.
    Under a smooth (alpha) synaptic current that leaves a dead zone of weak activations,
    which input fluctuations (delta synapses) smooth out. On cnn7 at 200 Hz the LIF with
    alpha synapses converted best with reset by subtraction, the LIF with delta synapses
    with reset to zero (``figures/README.md``, Fig. 11).
    """

    tau_m: Quantity = time_field(20)
    reset: Reset = "zero"
    tau: Quantity = time_field(1)
    refractory: Quantity = time_field(0)

    kind = "lif"
    _times = ("tau_m", "tau")

    def __post_init__(self) -> None:
        self._check("LIF")


@dataclass(frozen=True)
class SRM:
    r"""Spike response model (Gerstner's SRM as used by Rueckauer et al.), no reset.

    .. math::
        u(t) = \sum_j w_j (\varepsilon * s_j)(t) + (\nu * s_\mathrm{out})(t) + u_\mathrm{bias},
        \quad \varepsilon(t) = \frac{t}{\tau_s} e^{1 - t/\tau_s},
        \quad \nu(t) = -2\theta e^{-t/\tau_r}

    Spike when :math:`u > \theta`. The PSP kernel ε (peak 1 at :math:`t=\tau_s`, area
    :math:`e\,\tau_s`) is realized by two linear states,
    :math:`\tau_s \dot y = -y`, :math:`\tau_s \dot\psi = y - \psi`, with a presynaptic spike
    doing :math:`y \mathrel{+}= e\,w`; the refractory kernel ν by one exponential state
    :math:`\tau_r \dot r = -r` that jumps by :math:`-2\theta` on each output spike. The
    bias enters through the same kernel as a constant current, :math:`\tau_s \dot y = -y +
    e\,\tau_s I_\mathrm{bias}/\tau`, i.e. as if it were input at rate :math:`1/\tau` with
    weight :math:`I_\mathrm{bias}`. SRM's synapse is its own kernel ε: use delta synapses.

    Under a constant filtered input :math:`P > \theta` the rate is
    :math:`1/(\tau_r \ln\frac{P+\theta}{P-\theta})`: the refractory kernel, not the membrane,
    integrates. For conversion :math:`\tau_r` trades the rheobase (short :math:`\tau_r`) against
    rectified input fluctuations (long :math:`\tau_r`); on cnn7 at 200 Hz with
    :math:`\tau_s` = 5 ms, :math:`\tau_r = 2\tau_s` converted best (``figures/README.md``, Fig. 11).
    """

    tau_s: Quantity = time_field(1)
    tau_r: Quantity = time_field(1)
    tau: Quantity = time_field(1)

    kind = "srm"
    method = EXACT_AFFINE
    _times = ("tau_s", "tau_r", "tau")
    psp_target = "y"
    psp_gain = math.e

    def __post_init__(self) -> None:
        for name in self._times:
            _check_time("SRM", name, getattr(self, name))

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ("y", "psi", "r")

    def equations(self) -> Equations:
        return Equations(
            """dy/dt = -y/tau_s + e_const*I_bias/tau : 1
            dpsi/dt = (y - psi)/tau_s : 1
            dr/dt = -r/tau_r : 1
            u = psi + r : 1
            I_bias : 1 (constant)
            theta : 1 (constant)""",
            tau=self.tau,
            tau_s=self.tau_s,
            tau_r=self.tau_r,
            e_const=math.e,
        )

    threshold = "u > theta"
    threshold_variable = "u"
    readout_variable = "u"
    reset_code = "r -= 2*theta"
    refractory = 0 * ms
    reset = "none"


NeuronModel = Union[IF, LIF, SRM]
NEURON_MODELS: dict[str, type] = {"if": IF, "lif": LIF, "srm": SRM}


def model_to_dict(model: Any) -> dict[str, Any]:
    """A JSON-serializable dict for a neuron or synapse model; quantities in SI seconds."""
    out: dict[str, Any] = {"kind": model.kind}
    for f in fields(model):
        value = getattr(model, f.name)
        out[f.name] = {"seconds": float(value / second)} if isinstance(value, Quantity) else value
    return out


def model_from_dict(data: dict[str, Any], registry: dict[str, type]) -> Any:
    """Inverse of :func:`model_to_dict` for the given kind registry."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in registry:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(registry)}")
    kwargs = {k: (v["seconds"] * second if isinstance(v, dict) else v) for k, v in data.items()}
    return registry[kind](**kwargs)


def neuron_from_dict(data: dict[str, Any]) -> NeuronModel:
    return model_from_dict(data, NEURON_MODELS)


def make_neuron(kind: str, **params: Any) -> NeuronModel:
    """Build a neuron model by name (``if``, ``lif``, ``srm``) with keyword parameters."""
    if kind not in NEURON_MODELS:
        raise ValueError(f"unknown neuron model {kind!r}; choose one of {sorted(NEURON_MODELS)}")
    return NEURON_MODELS[kind](**params)
