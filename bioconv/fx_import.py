r"""Import any traceable PyTorch CNN into a :class:`bioconv.ir.Graph` with ``torch.fx``.

``torch.fx.symbolic_trace`` turns the module's ``forward`` into a graph of nodes
(``call_module``, ``call_function``, ``call_method``). Every node is converted by one
entry of a dispatch table (:data:`MODULES`, :data:`FUNCTIONS`, :data:`METHODS`) into one
of two kinds of value:

- :class:`Act`: a non-negative activation, i.e. the spikes of a population (or the
  input, or a Flatten/Concat view of them);
- :class:`Pre`: a pre-activation not yet rectified, :math:`z = \sum_k A_k a_{s_k} + b`,
  a list of *terms* (a conv/linear layer ``A_k`` reading activation ``s_k``).

Rules (each exact in the ANN; converters in :mod:`bioconv.fx_converters`, values in :mod:`bioconv.fx_values`):

- ``Conv2d`` (any groups, dilation, padding mode) / ``Linear`` on an ``Act`` give a
  one-term ``Pre``; on a ``Pre`` they raise (a ReLU is needed between two weighted layers).
- ``BatchNorm`` on a ``Pre`` scales every term (:math:`s = \gamma/\sigma`, folded exactly
  as :math:`\tilde W = sW`, :math:`\tilde b = s(b - \mu) + \beta`); on an ``Act`` it becomes
  an identity term (depthwise 1×1 conv / diagonal linear) with that scale.
- ``+`` (``operator.add``, ``torch.add``, ``x.add``) joins the terms of both sides (an
  ``Act`` side becomes an identity term): a residual addition.
- ``ReLU`` (module, ``F.relu``, ``torch.relu``, ``x.relu()``) turns a ``Pre`` into a spiking
  population: one ``Conv2d``/``Dense`` layer for one term, otherwise branch layers plus an
  :class:`~bioconv.ir.Add`; ``ReLU6`` and ``Hardtanh(0, c)`` do the same with ``clip = c``
  (the Rate Norm Layer idea of Ding et al. 2021: the clip value is the activation that
  maps to the maximal rate; normalization uses it as λ). ReLU of an ``Act`` is the identity.
- ``MaxPool2d`` of a ``Pre`` rectifies it first (max and ReLU commute) and requires a ReLU
  next; ``AvgPool2d`` of a ``Pre`` of conv terms folds into the convs (a larger kernel);
  ``AdaptiveAvgPool2d`` (where the output size divides the input: an exact average
  pool) and ``mean((2, 3))`` need an ``Act``. ``clamp(0, c)`` is a clipped ReLU.
- ``flatten``/``view``/``reshape`` to (N, -1) give a Flatten view, ``torch.cat(dim=1)`` of
  activations a :class:`~bioconv.ir.Concat`; Dropout and Identity are dropped, a final
  Softmax/LogSoftmax is dropped with a logged notice.
- The output must be a ``Pre``: the last layer is linear (its spike counts or voltages
  give the class scores).

Anything else raises ``ValueError`` naming the node, its type and what to do.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.fx as fx
import torch.nn as nn

from bioconv import ir
from bioconv.fx_converters import FUNCTIONS, METHODS, MODULES
from bioconv.fx_values import Act, Importer, Pre, _target_name

log = logging.getLogger(__name__)

__all__ = ["FUNCTIONS", "METHODS", "MODULES", "import_fx", "trace"]


def _convert_node(st: Importer, node: fx.Node, values: dict[str, Any]) -> Any:
    args = fx.node.map_arg(node.args, lambda n: values[n.name])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n.name])
    if node.op == "call_module":
        module = st.modules[node.target]
        fn = MODULES.get(type(module))
        if fn is None:
            raise st.error(f"module of type {type(module).__name__} has no converter",
                           f"supported modules: {', '.join(sorted(t.__name__ for t in MODULES))}; nonlinearities "
                           "other than ReLU/ReLU6/Hardtanh(0, c) cannot be converted (retrain with nn.ReLU)")
        return fn(st, module, *args, **kwargs)
    if node.op == "call_function":
        fn = FUNCTIONS.get(node.target)
        if fn is None:
            raise st.error(f"function {_target_name(node)} has no converter",
                           "use one of: " + ", ".join(sorted({_name_of(f) for f in FUNCTIONS})))
        return fn(st, None, *args, **kwargs)
    if node.op == "call_method":
        fn = METHODS.get(node.target)
        if fn is None:
            raise st.error(f"tensor method .{node.target}() has no converter",
                           f"use one of: {', '.join(sorted(METHODS))}")
        return fn(st, None, *args, **kwargs)
    raise st.error(f"a {node.op} node (parameters read in forward)", "use modules (nn.Conv2d, nn.Linear) for weights")


def _name_of(f: Any) -> str:
    return getattr(f, "__name__", repr(f))


class _Tracer(fx.Tracer):
    """torch.fx's tracer that also keeps bioconv's own activation modules (SoftLIF) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in MODULES or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error for models it cannot trace."""
    try:
        if isinstance(model, fx.GraphModule):
            return model
        return fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ...
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); remove data-dependent "
            "control flow from forward() or build the model from nn modules") from exc


def import_fx(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[ir.Input, list[ir.Layer], dict]:
    """The Input, the layers and a record (folded BNs, dropped softmax, input ReLU) of ``model``."""
    gm = trace(model)
    st = Importer(gm, input_shape)
    st.module = model
    named = dict(model.named_modules())
    st.modules = {k: named.get(k, v) for k, v in st.modules.items()}
    values: dict[str, Any] = {}
    result = None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the model's forward takes {len(placeholders)} inputs; bioconv converts models with one")
    for node in gm.graph.nodes:
        st.node = node
        if node.op == "placeholder":
            values[node.name] = Act(st.input.name, st.input.shape)
        elif node.op == "output":
            result = fx.node.map_arg(node.args[0], lambda n: values[n.name])
        else:
            values[node.name] = _convert_node(st, node, values)
    st.node = None
    if not isinstance(result, Pre):
        raise ValueError(
            "the model's output is a rectified activation (a final ReLU) or a pool, not a conv/linear output; "
            "end the model with a Linear/Conv2d layer without ReLU (its spike counts or voltages give the scores)"
            if isinstance(result, Act) else f"the model returns {type(result).__name__}; return one tensor")
    st.population(result, "output")
    if st.dropped_softmax:
        log.info("dropped the final softmax %r (it does not change the argmax of the class scores)",
                 st.dropped_softmax)
    return st.input, st.layers, {"bn_folded": st.folded_bn, "dropped_softmax": st.dropped_softmax,
                                 "input_relu": st.input_relu}
