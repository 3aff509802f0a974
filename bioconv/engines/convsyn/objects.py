r"""Weight-shared (procedural) convolution synapses as Brian2 objects.

A :class:`ConvSynapses` group stores only the kernel :math:`W` of a ``Conv2d`` layer
(``w``, :math:`C_\mathrm{out} C_\mathrm{in} k_h k_w` values in torch order) and the
layer geometry. Its :class:`ConvPathway` (a ``CodeRunner`` in the ``synapses`` slot,
named ``<name>_pre`` like a Synapses pathway) walks the presynaptic spikes of the step in
ascending neuron order and, for a spike of input neuron :math:`(c, y, x)`, reaches every
output neuron :math:`(o, y', x')` with

.. math::
    k_y = y + p_y - s_y y' \in [0, k_h), \qquad k_x = x + p_x - s_x x' \in [0, k_w),

executing the synapse model's ``on_pre`` statement with ``w = W[o, c, k_y, k_x]``. Every
(pre, post) pair has at most one such synapse, so each target receives its inputs in the
same order (ascending presynaptic neuron) as the unrolled ``Synapses`` of
:func:`bioconv.connectivity.layer_synapses`: float64 results are bit-identical.

The ``on_pre`` code goes through Brian2's own code generation (units checked, post
variables ``<var>_post``, conditional writes), with two index variables that the template
sets instead of loading them from arrays: ``_postsynaptic_idx`` (the target neuron) and
``_kernel_idx`` (the kernel element). Memory is the kernel, not the synapses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: name of the templates (``templates/bioconv_conv_synapses.cpp``, ``cuda_templates/...cu``)
TEMPLATE = "bioconv_conv_synapses"


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes of one convolution: input (c_in, h, w), output (c_out, ho, wo), kernel, stride, padding."""

    c_in: int
    h: int
    w: int
    c_out: int
    ho: int
    wo: int
    kh: int
    kw: int
    sy: int
    sx: int
    py: int
    px: int

    @classmethod
    def from_layer(cls, layer) -> "ConvGeometry":
        """Geometry of an :class:`bioconv.ir.Conv2d`."""
        c_out, c_in, kh, kw = np.shape(layer.weight)
        _, h, w = layer.input_shape
        _, ho, wo = layer.output_shape
        (sy, sx), (py, px) = layer.stride, layer.padding
        return cls(int(c_in), int(h), int(w), int(c_out), int(ho), int(wo), int(kh), int(kw),
                   int(sy), int(sx), int(py), int(px))

    @property
    def n_pre(self) -> int:
        return self.c_in * self.h * self.w

    @property
    def n_post(self) -> int:
        return self.c_out * self.ho * self.wo

    @property
    def kernel_size(self) -> int:
        return self.c_out * self.c_in * self.kh * self.kw

    def template_kwds(self) -> dict:
        """Geometry as template keywords (compiled in as constants)."""
        return {"conv": dict(self.__dict__)}

    def out_degree(self) -> np.ndarray:
        """Synapses per presynaptic neuron (what an unrolled build would have), shape (n_pre,)."""
        def axis(n_in, n_out, k, s, p):
            pos = np.arange(n_in)[:, None] + p - np.arange(k)[None, :]  # s*o for each (in, k)
            ok = (pos >= 0) & (pos % s == 0) & (pos // s < n_out)
            return ok.sum(axis=1)

        ny = axis(self.h, self.ho, self.kh, self.sy, self.py)
        nx = axis(self.w, self.wo, self.kw, self.sx, self.px)
        per = self.c_out * ny[:, None] * nx[None, :]
        return np.broadcast_to(per, (self.c_in, self.h, self.w)).ravel().copy()


def _brian():
    from brian2 import DEFAULT_FUNCTIONS  # noqa: F401  (brian2 must be importable)
    from brian2.core.variables import Variables
    from brian2.groups.group import CodeRunner, Group

    return Variables, CodeRunner, Group


def make_conv_synapses(source, target, geometry: ConvGeometry, on_pre: str, weights: np.ndarray, name: str,
                       order: int = 0):
    """A :class:`ConvSynapses` from ``source`` to ``target`` (Brian2 groups of ``geometry.n_pre``/``n_post``).

    ``weights`` is the kernel (c_out, c_in, kh, kw) or flat; ``on_pre`` the synapse model's
    statement (e.g. ``v_post += w``).
    """
    if len(source) != geometry.n_pre or len(target) != geometry.n_post:
        raise ValueError(f"{name}: groups of {len(source)} and {len(target)} neurons do not fit the convolution "
                         f"{geometry.n_pre} -> {geometry.n_post}")
    w = np.ascontiguousarray(weights, dtype=np.float64).ravel()
    if w.size != geometry.kernel_size:
        raise ValueError(f"{name}: kernel has {w.size} values, the geometry needs {geometry.kernel_size}")
    return _classes()[0](source, target, geometry, on_pre, w, name, order)


_CLASSES: list = []


def _classes():
    """Define the Brian2 classes lazily (brian2 is imported only when a network is built)."""
    if _CLASSES:
        return _CLASSES
    Variables, CodeRunner, Group = _brian()

    class ConvSynapses(Group):
        """Kernel ``w`` and references to the target's variables (``<var>_post``); runs nothing itself."""

        add_to_magic_network = True
        codeobj_class = None

        def __init__(self, source, target, geometry, on_pre, w, name, order):
            Group.__init__(self, clock=target.clock, when="synapses", order=order, name=name)
            self.source, self.target, self.geometry = source, target, geometry
            self.variables = Variables(self)
            self.variables.create_clock_variables(self._clock)
            self.variables.add_constant("N", geometry.kernel_size)
            self.variables.add_auxiliary_variable("_postsynaptic_idx", dtype=np.int32)
            self.variables.add_auxiliary_variable("_kernel_idx", dtype=np.int32)
            for index in ("_postsynaptic_idx", "_kernel_idx"):  # repeated across events (as Synapses' indices)
                self.variables[index].unique = False
            self.variables.add_array("w", size=geometry.kernel_size, dtype=np.float64, values=w,
                                     index="_kernel_idx")
            self.variables.add_reference("_spikespace", source)
            for var in target.variables:
                if var.startswith("_"):
                    continue
                index = "0" if target.variables[var].scalar else "_postsynaptic_idx"
                try:
                    self.variables.add_reference(var + "_post", target, var, index=index)
                except TypeError:  # non-standard indexing in the target (as Synapses does)
                    pass
            self.pathway = ConvPathway(self, on_pre, order)
            self.contained_objects.append(self.pathway)
            self.add_dependency(source)
            self.add_dependency(target)

        def __len__(self):
            return self.geometry.kernel_size

    class ConvPathway(CodeRunner):
        """Runs ``on_pre`` for every (spike, kernel-reached target) of the step (template ``bioconv_conv_synapses``)."""

        def __init__(self, synapses, on_pre, order):
            CodeRunner.__init__(self, group=synapses, template=TEMPLATE, code=on_pre, clock=synapses.clock,
                                when="synapses", order=order, name=synapses.name + "_pre",
                                template_kwds=synapses.geometry.template_kwds(), needed_variables=["_spikespace"])

    _CLASSES[:] = [ConvSynapses, ConvPathway]
    return _CLASSES
