"""The values of the torch.fx import (:mod:`bioconv.fx_import`) and the importer's state.

:class:`Act` is a non-negative activation (a population, the input or a view), :class:`Pre`
a pre-activation (a sum of weighted terms, not yet rectified); :class:`Importer` emits IR
layers and names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from bioconv import ir

@dataclass(frozen=True)
class Act:
    """A non-negative activation: population, input or view ``name`` of ``shape``."""

    name: str
    shape: tuple[int, ...]
    pending_relu: str = ""  # a max-pool of a pre-activation that still needs its ReLU (node name)


@dataclass(frozen=True)
class Term:
    """One weighted layer (IR class and keyword arguments, no name) reading activation ``source``."""

    cls: type
    kwargs: dict
    source: str
    label: str  # module path or node name, for layer names and messages


@dataclass(frozen=True)
class Pre:
    """A pre-activation: the sum of ``terms`` (biases included), of ``shape``."""

    terms: tuple[Term, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Size:
    """A shape (or one dimension) read from a tensor; only used as a view/reshape argument."""

    value: Any


class Importer:
    """The state of one import: emitted layers, unique names and the values of fx nodes."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
        self.module = module
        self.modules = dict(module.named_modules())
        self.input = ir.Input(tuple(int(s) for s in input_shape))
        self.layers: list[ir.Layer] = []
        self.names: set[str] = {self.input.name}
        self.folded_bn: list[str] = []
        self.input_relu = False
        self.dropped_softmax = ""
        self.node: fx.Node | None = None

    # ------------------------------------------------------------------ helpers
    def error(self, what: str, fix: str) -> ValueError:
        node = self.node
        where = f"node {node.name!r} ({node.op} {_target_name(node)})" if node is not None else "the model"
        if node is not None and node.op == "call_module":
            where += f", a {type(self.modules[node.target]).__name__}"
            parent = str(node.target).rpartition(".")[0]
            while parent and isinstance(self.modules.get(parent), (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
                parent = parent.rpartition(".")[0]
            if parent:
                where += f" in {type(self.modules[parent]).__name__} {parent!r}"
        return ValueError(f"{type(self.module).__name__}: {where}: {what}; {fix}")

    def unique(self, label: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in label).strip("_") or "layer"
        if not base[0].isalpha():
            base = "l_" + base
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def emit(self, layer: ir.Layer) -> ir.Layer:
        self.layers.append(layer)
        return layer

    def act(self, value: Any, what: str) -> Act:
        if isinstance(value, Pre):
            raise self.error(f"{what} gets a pre-activation (a conv/linear output without ReLU)",
                             "put a ReLU before it (converted networks rectify every hidden layer)")
        if not isinstance(value, Act):
            raise self.error(f"{what} gets {type(value).__name__}, not a tensor", "pass the tensor itself")
        if value.pending_relu:
            raise self.error(f"{what} reads the max-pool {value.pending_relu!r} of a pre-activation",
                             "apply the ReLU right after that max-pool (or before it)")
        return value

    def identity_term(self, a: Act, scale: np.ndarray, shift: np.ndarray, label: str) -> Term:
        """z = scale ⊙ a + shift as a depthwise 1×1 conv (C, H, W) or a diagonal linear (N,)."""
        if len(a.shape) == 3:
            c = a.shape[0]
            kw = dict(input_shape=a.shape, weight=scale.reshape(c, 1, 1, 1).astype(np.float64),
                      bias=shift.astype(np.float64), groups=c)
            return Term(ir.Conv2d, kw, a.name, label)
        return Term(ir.Dense, dict(weight=np.diag(scale).astype(np.float64), bias=shift.astype(np.float64)),
                    a.name, label)

    def rectify(self, value: Any, label: str, clip: float | None = None, rate_curve: Any = None) -> Act:
        """ReLU (and clip), or a SoftLIF's rate curve: a ``Pre`` becomes a spiking population; an ``Act`` stays."""
        if isinstance(value, Act) and rate_curve is not None:
            raise self.error("a SoftLIF on an activation that is already rectified",
                             "apply SoftLIF directly to the conv/linear output")
        if isinstance(value, Act):
            if value.name == self.input.name:
                self.input_relu = True
            if clip is not None:
                raise self.error("a clipping activation on an activation that is already rectified",
                                 "apply ReLU6/Hardtanh directly to the conv/linear output")
            return Act(value.name, value.shape)
        if not isinstance(value, Pre):
            raise self.error(f"ReLU of {type(value).__name__}", "apply it to a tensor")
        return self.population(value, label, clip, rate_curve)

    def population(self, pre: Pre, label: str, clip: float | None = None, rate_curve: Any = None) -> Act:
        if len(pre.terms) == 1:
            t = pre.terms[0]
            layer = self.emit(t.cls(name=self.unique(t.label), **t.kwargs, inputs=(t.source,), clip=clip,
                                    rate_curve=rate_curve))
            return Act(layer.name, tuple(layer.output_shape))
        name = self.unique(label)
        branches = [self.emit(t.cls(name=self.unique(f"{name}_{t.label}"), **t.kwargs, inputs=(t.source,),
                                    spiking=False)) for t in pre.terms]
        layer = self.emit(ir.Add(name, pre.shape, tuple(b.name for b in branches), clip=clip, rate_curve=rate_curve))
        return Act(layer.name, layer.shape)

    def flatten(self, a: Act) -> Act:
        a = self.act(a, "flatten")
        if len(a.shape) == 1:
            return a
        layer = self.emit(ir.Flatten(self.unique(f"{self.node.name}"), a.shape, inputs=(a.name,)))
        return Act(layer.name, tuple(layer.output_shape))


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _np(t: torch.Tensor | None, size: int) -> np.ndarray:
    return np.zeros(size) if t is None else t.detach().cpu().double().numpy().copy()
