r"""What a conversion is made of: :class:`ConversionSpec`, frozen and validated on construction.

One spec names everything that determines a converted network besides the checkpoint:
the normalization method and its rates, the neuron and synapse model with their time
constants, the simulation settings of the calibration runs (dt, duration, input coding),
the calibration set (size, seed, probe engine), the handling of average pools and the
method's own options. :func:`bioconv.pipeline.convert` turns (spec, checkpoint) into a
Graph; the CLI (``bioconv convert``), the demo and every study build a spec and call it.

Times and rates are Brian2 quantities; :meth:`ConversionSpec.from_dict` also takes strings
with units (``"200Hz"``, ``"0.1ms"``) and rejects bare numbers and unknown keys, naming
the valid ones. :meth:`ConversionSpec.to_dict` is the canonical JSON form (units in the
strings) that is stored in the graph's metadata and hashed by the study caches.

Neuron parameters
-----------------
``tau_syn`` is the time constant of the alpha or exponential synapse and, for the SRM, the PSP kernel's
:math:`\tau_s`; ``tau_r`` is the SRM's refractory kernel :math:`\tau_r`; ``refractory`` is
the absolute refractory period of IF and LIF neurons (the SRM has none: its refractoriness
is the kernel). ``tau_m`` is the LIF membrane time constant.

``schedule`` orders the reset and the synaptic input within a time step
(:data:`bioconv.models.SCHEDULES`): ``"brian2"`` (Brian2's default: input arriving in the step
in which a neuron fires is erased by a reset to zero) or ``"reset-first"`` (reset, then that
step's input; converges as dt → 0 without a dead time per spike). The converted graph
carries it, and every engine and the calibration runs use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, get_args

from brian2 import Hz, Quantity, ms, second

from bioconv.units import parse_rate, parse_time

NeuronKind = Literal["if", "lif", "srm"]
ResetKind = Literal["zero", "subtract"]
SynapseKind = Literal["delta", "alpha", "exponential"]
InputCoding = Literal["bernoulli", "poisson", "current"]
PoolHandling = Literal["fold", "spiking"]
WeightForm = Literal["weights", "thresholds"]
ProbeEngine = Literal["torch", "brian2"]
ProbeDevice = Literal["runtime", "cpp"]
Schedule = Literal["brian2", "reset-first"]  # bioconv.models.SCHEDULES

TIME_FIELDS = ("tau_m", "refractory", "tau_syn", "tau_r", "dt", "duration")
RATE_FIELDS = ("target_rate", "input_rate")


def _ms(value: float) -> Any:
    return field(default_factory=lambda: value * ms)


@dataclass(frozen=True)
class ConversionSpec:
    """Frozen description of one ANN → SNN conversion (see the module docstring).

    ``target_rate`` / ``input_rate`` of ``None`` take the method's defaults
    (:data:`bioconv.pipeline.METHODS`); ``options`` holds the method's own options
    (e.g. ``percentile`` for robust norm, ``tolerance`` for MCR-Norm), checked by
    :func:`bioconv.pipeline.convert` against the method's option table.
    """

    method: str = "mcr"
    target_rate: Optional[Quantity] = None
    input_rate: Optional[Quantity] = None
    neuron: NeuronKind = "if"
    reset: ResetKind = "zero"
    tau_m: Quantity = _ms(20.0)
    refractory: Quantity = _ms(0.0)
    synapse: SynapseKind = "delta"
    schedule: Schedule = "brian2"
    tau_syn: Quantity = _ms(1.0)
    tau_r: Quantity = _ms(1.0)
    dt: Quantity = _ms(1.0)
    duration: Quantity = _ms(300.0)
    coding: InputCoding = "bernoulli"
    pools: PoolHandling = "fold"
    form: WeightForm = "weights"
    calib_n: int = 500
    calib_sim: int = 50
    calib_seed: int = 0
    calib_engine: ProbeEngine = "torch"
    calib_device: ProbeDevice = "cpp"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str):
            raise ValueError(f"ConversionSpec.method must be a method name, got {self.method!r}")
        for name, allowed in _LITERALS.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ConversionSpec.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in TIME_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Quantity) or value.dim != second.dim:
                raise ValueError(f"ConversionSpec.{name} must be a time with a unit (e.g. 1*ms or '1ms'), got {value!r}")
            if float(value) < 0 or (name != "refractory" and not float(value) > 0):
                raise ValueError(f"ConversionSpec.{name} must be {'>= 0' if name == 'refractory' else '> 0'}, got {value}")
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Quantity) or value.dim != Hz.dim or not float(value) > 0:
                raise ValueError(f"ConversionSpec.{name} must be a positive rate (e.g. 200*Hz or '200Hz'), got {value!r}")
            if float(value * self.dt) > 1 + 1e-12:
                raise ValueError(f"ConversionSpec.{name} = {value} exceeds 1/dt = {1 / self.dt}; lower it or the dt")
        steps = float(self.duration / self.dt)
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"ConversionSpec.duration ({self.duration}) must be a whole multiple of dt ({self.dt})")
        for name in ("calib_n", "calib_sim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ConversionSpec.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.neuron == "srm" and float(self.refractory) > 0:
            raise ValueError("the SRM has no absolute refractory period (its refractory kernel is tau_r); "
                             "set refractory to 0ms")
        if self.neuron == "srm" and self.synapse != "delta":
            raise ValueError("the SRM filters its input with its own PSP kernel: use synapse='delta' with SRM "
                             "and set the kernel with tau_syn")
        object.__setattr__(self, "options", dict(self.options))

    # ------------------------------------------------------------------ models
    def neuron_model(self):
        """The :mod:`bioconv.neurons` object of this spec."""
        from bioconv.neurons import make_neuron

        if self.neuron == "srm":
            return make_neuron("srm", tau_s=self.tau_syn, tau_r=self.tau_r)
        params = {"reset": self.reset, "refractory": self.refractory}
        if self.neuron == "lif":
            params["tau_m"] = self.tau_m
        return make_neuron(self.neuron, **params)

    def synapse_model(self):
        """The :mod:`bioconv.synapses` object of this spec."""
        from bioconv.synapses import make_synapse

        if self.synapse == "delta":
            return make_synapse("delta")
        return make_synapse(self.synapse, tau_s=self.tau_syn)  # alpha or exponential (first-order current)

    def calibration_config(self):
        """The :class:`~bioconv.simulation.SimConfig` of the calibration runs (input seed = ``calib_seed``)."""
        from bioconv.simulation import SimConfig

        return SimConfig(duration=self.duration, dt=self.dt, coding=self.coding, seed=self.calib_seed,
                         bin=self.duration)

    def replace(self, **changes: Any) -> "ConversionSpec":
        return ConversionSpec.from_dict({**self.to_dict(), **_dict_form(changes)})

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON form: quantities as strings with units (``"20ms"``, ``"200Hz"``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _dict_form({f.name: value})[f.name]
        out["options"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(self.options.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConversionSpec":
        """Build a spec from a mapping; unknown keys raise ValueError naming them and the valid keys."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown conversion spec key(s) {unknown}; valid keys: {', '.join(valid)}")
        kwargs = {}
        for key, value in data.items():
            if key in TIME_FIELDS:
                kwargs[key] = _parse(key, value, "time")
            elif key in RATE_FIELDS:
                kwargs[key] = None if value is None else _parse(key, value, "rate")
            else:
                kwargs[key] = value
        return cls(**kwargs)


_LITERALS: dict[str, tuple[str, ...]] = {
    "neuron": get_args(NeuronKind), "reset": get_args(ResetKind), "synapse": get_args(SynapseKind),
    "coding": get_args(InputCoding), "pools": get_args(PoolHandling), "form": get_args(WeightForm),
    "calib_engine": get_args(ProbeEngine), "calib_device": get_args(ProbeDevice), "schedule": get_args(Schedule),
}


def _parse(key: str, value: Any, kind: str) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, str):
        try:
            return parse_time(value, allow_zero=key == "refractory") if kind == "time" else parse_rate(value)
        except ValueError as exc:
            raise ValueError(f"conversion spec key {key!r}: {exc}") from None
    raise ValueError(f"conversion spec key {key!r} needs a {kind} with a unit, e.g. "
                     f"{'1ms' if kind == 'time' else '200Hz'!r}, got {value!r}")


def _dict_form(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, Quantity) and value.dim == second.dim:
            out[key] = f"{float(value / ms):.12g}ms"
        elif isinstance(value, Quantity) and value.dim == Hz.dim:
            out[key] = f"{float(value / Hz):.12g}Hz"
        else:
            out[key] = value
    return out
