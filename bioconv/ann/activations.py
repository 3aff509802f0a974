r"""Training for the spiking neuron: a clipped ReLU sized to the spike budget, or the LIF's own rate curve.

A rate-coded neuron that fires at most :math:`r_\max` for a time :math:`T` emits at most
:math:`L = r_\max T` spikes (50 Hz for 100 ms: 5), so it can express only about :math:`L + 1`
activation levels between 0 and the activation that maps to :math:`r_\max`. A ReLU network
trained without that limit relies on finer differences and on activations far above the
typical one (which set :math:`\lambda` and push every other neuron to low rates).
:class:`BudgetReLU` trains with the limit instead:

.. math::
    y = \min(\max(x, 0), c), \qquad
    \hat y = \frac{c}{L}\,\mathrm{round}\!\left(\frac{L\,y}{c}\right)\ \text{(training only)},

with a trainable ceiling :math:`c` per layer (PACT, Choi et al. 2018: the gradient reaches
:math:`c` where :math:`x > c`) and the rounding passed straight through in the backward pass
(the quantization-aware training of Bu et al. 2022, without their half-step shift, which a
spiking neuron starting at rest does not have). In evaluation mode the layer is the plain
clipped ReLU :math:`y`: the spiking network quantizes by itself, in time.

:func:`freeze_activations` replaces each :class:`BudgetReLU` by ``nn.Hardtanh(0, c)`` after
training, so a checkpoint holds only standard modules. Conversion then takes :math:`c` as the
layer's :math:`\lambda` (``Hardtanh(0, c)``, the Rate Norm Layer of Ding et al. 2021), so the
ceiling maps to the target max rate exactly.

:class:`SoftLIF` (Hunsberger & Eliasmith 2015) trains with the rate curve of the LIF neuron
itself, :math:`a = A\,r_\gamma(z)` (maths in :class:`bioconv.ir.LIFRate`); the converted network
then needs no normalization at all: method ``lif-rate`` maps weights and biases so that each
LIF neuron's drive equals its ANN pre-activation (:mod:`bioconv.normalize.lif_rate`).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn as nn

ActivationKind = Literal["relu", "clip", "softlif"]
ACTIVATIONS: tuple[str, ...] = ("relu", "clip", "softlif")

#: SoftLIF defaults: τ_RC 20 ms, τ_ref 2 ms (the LIF of the conversion studies), activation 1 = 50 Hz,
#: no rate noise in training
SOFTLIF_DEFAULTS = {"tau_rc": 0.02, "tau_ref": 0.002, "amplitude": 0.02, "smoothing": 0.05, "noise_hz": 0.0}


class SoftLIF(nn.Module):
    r"""The LIF neuron's rate curve as an activation, smoothed for training (Hunsberger & Eliasmith 2015).

    :math:`a = A\,r_\gamma(z)` with :math:`r_\gamma(z) = 1/(\tau_\mathrm{ref} + \tau_\mathrm{RC}
    \ln(1 + 1/\rho_\gamma(z - 1)))` and :math:`\rho_\gamma(x) = \gamma\ln(1 + e^{x/\gamma})`;
    see :class:`bioconv.ir.LIFRate`, which holds the same four numbers (SI units: seconds) and
    whose :meth:`~bioconv.ir.LIFRate.activation` is the numpy twin of :meth:`forward`.
    In training mode, ``noise_hz`` > 0 adds Gaussian noise of that standard deviation to the rates
    (:math:`a + A\,\sigma\,\xi`, as Hunsberger & Eliasmith train for the variability of spiking
    rates); evaluation and conversion use the noise-free curve.
    """

    def __init__(self, tau_rc: float = 0.02, tau_ref: float = 0.002, amplitude: float = 0.02,
                 smoothing: float = 0.05, noise_hz: float = 0.0):
        super().__init__()
        from bioconv.ir import LIFRate

        self.curve = LIFRate(tau_rc, tau_ref, amplitude, smoothing)  # validates the numbers
        if not (noise_hz >= 0 and noise_hz < float("inf")):
            raise ValueError(f"SoftLIF noise_hz must be finite and >= 0, got {noise_hz}")
        self.noise_hz = float(noise_hz)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.curve
        x = z - 1.0
        if c.smoothing > 0:  # γ log(1 + e^{x/γ}), written as LIFRate.rate_hz writes it
            j = c.smoothing * torch.logaddexp(torch.zeros_like(x), x / c.smoothing)
        else:
            j = torch.relu(x)
        active = j > 1e-20  # below: rate 0 (and a finite gradient: the other branch sees j = 1)
        safe = torch.where(active, j, torch.ones_like(j))
        rate = 1.0 / (c.tau_ref + c.tau_rc * (torch.log1p(safe) - torch.log(safe)))  # ln(1 + 1/j), no 1/j² in the gradient
        a = c.amplitude * torch.where(active, rate, torch.zeros_like(rate))
        if self.training and self.noise_hz > 0:
            a = a + c.amplitude * self.noise_hz * torch.randn_like(a)
        return a

    def extra_repr(self) -> str:
        c = self.curve
        noise = f", noise={self.noise_hz:g} Hz" if self.noise_hz else ""
        return (f"tau_rc={c.tau_rc * 1e3:g} ms, tau_ref={c.tau_ref * 1e3:g} ms, amplitude={c.amplitude:g} s, "
                f"smoothing={c.smoothing:g}{noise}")


class BudgetReLU(nn.Module):
    """Clipped ReLU with a trainable ceiling, quantized to ``levels`` steps while training.

    Parameters
    ----------
    levels : int or None
        Number of quantization steps :math:`L` between 0 and the ceiling (the spike budget
        :math:`r_\\max T`); ``None`` trains the clipped ReLU without quantization.
    init_clip : float
        Initial ceiling :math:`c`.
    """

    def __init__(self, levels: Optional[int] = None, init_clip: float = 4.0):
        super().__init__()
        if levels is not None and (int(levels) != levels or levels < 1):
            raise ValueError(f"levels must be an integer >= 1 (the spike budget: max rate × T), got {levels}")
        if not init_clip > 0:
            raise ValueError(f"init_clip must be > 0, got {init_clip}")
        self.levels = None if levels is None else int(levels)
        self.clip = nn.Parameter(torch.tensor(float(init_clip)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = self.clip.abs() + 1e-6  # stays positive whatever the optimizer does
        y = torch.minimum(torch.relu(x), clip)
        if self.training and self.levels is not None:
            q = torch.round(y / clip * self.levels) / self.levels * clip
            y = y + (q - y).detach()
        return y

    def extra_repr(self) -> str:
        return f"levels={self.levels}, clip={float(self.clip.detach().abs()):.4g}"


class RateCeiling:
    """Training penalty that keeps every :class:`SoftLIF` layer's rates below ``max_rate_hz``.

    :math:`P = \lambda \sum_l \langle \max(r_l - r_\max, 0)^2 \rangle / r_\max^2` with :math:`r_l = a_l/A`
    the rates of layer :math:`l` (mean over units and the batch). The trained curve saturates only at
    :math:`1/\tau_\mathrm{ref}`, and the rate scale :math:`A` does not choose the rates (training
    decides how hard each layer is driven), so a network for a low-rate regime needs this limit.
    Outputs are recorded by forward hooks in training mode only; call the object after the forward
    pass to get :math:`P` (it forgets the recorded outputs).
    """

    def __init__(self, model: nn.Module, max_rate_hz: float, weight: float = 1.0):
        if not max_rate_hz > 0 or not weight >= 0:
            raise ValueError(f"the rate ceiling needs max_rate_hz > 0 and weight >= 0, got {max_rate_hz}, {weight}")
        self.max_rate_hz, self.weight = float(max_rate_hz), float(weight)
        self.layers = [m for m in model.modules() if isinstance(m, SoftLIF)]
        if not self.layers:
            raise ValueError("a rate ceiling needs SoftLIF layers (activation 'softlif')")
        self._out: list[tuple[SoftLIF, torch.Tensor]] = []
        self._hooks = [m.register_forward_hook(self._record) for m in self.layers]

    def _record(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training:
            self._out.append((module, output))

    def __call__(self) -> torch.Tensor:
        r = self.max_rate_hz
        terms = [torch.relu(a / m.curve.amplitude - r).pow(2).mean() for m, a in self._out]
        self._out.clear()
        return self.weight * sum(terms) / r ** 2 if terms else torch.zeros(())

    def remove(self) -> None:
        """Detach the hooks (before saving the model)."""
        for h in self._hooks:
            h.remove()
        self._out.clear()


def make_activation(kind: ActivationKind = "relu", levels: Optional[int] = None,
                    clip: Optional[float] = None, softlif: Optional[dict] = None) -> nn.Module:
    """The activation module of a hidden layer: ``nn.ReLU``, a :class:`BudgetReLU` to train, the
    frozen ``nn.Hardtanh(0, clip)`` of a trained one, or a :class:`SoftLIF` (``softlif``: its
    parameters, defaults :data:`SOFTLIF_DEFAULTS`)."""
    if kind == "softlif":
        if levels is not None or clip is not None:
            raise ValueError("activation 'softlif' takes no levels or clip")
        unknown = sorted(set(softlif or {}) - set(SOFTLIF_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown SoftLIF parameter(s) {unknown}; known: {', '.join(SOFTLIF_DEFAULTS)}")
        return SoftLIF(**{**SOFTLIF_DEFAULTS, **(softlif or {})})
    if softlif is not None:
        raise ValueError(f"SoftLIF parameters given for activation {kind!r}; use activation 'softlif'")
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"a frozen clip must be > 0, got {clip}")
        return nn.Hardtanh(0.0, float(clip))
    if kind == "relu":
        if levels is not None:
            raise ValueError("levels (the spike budget) needs activation 'clip'")
        return nn.ReLU()
    if kind == "clip":
        return BudgetReLU(levels)
    raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")


@torch.no_grad()
def freeze_activations(model: nn.Module) -> tuple[nn.Module, list[float]]:
    """Replace every :class:`BudgetReLU` of ``model`` (in place) by ``nn.Hardtanh(0, c)``; returns the
    model and the ceilings in module order (empty when it has none)."""
    clips: list[float] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BudgetReLU):
                c = float(child.clip.abs()) + 1e-6
                setattr(parent, name, nn.Hardtanh(0.0, c))
                clips.append(c)
    return model, clips
