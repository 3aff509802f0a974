"""The network IR: small typed layer nodes and a Graph that holds them in order.

Modelled on NIR's node style (``nir/ir/conv.py``): one frozen dataclass per layer,
the maths in the docstring, one field per parameter, and ``ValueError`` on bad
shapes. Weights are numpy arrays; nothing here imports torch, so a saved Graph can
be read in the Python 3.12 brian2cuda environment.

Every layer except the views :class:`Flatten` and :class:`Concat` and the *branch* layers
(``Conv2d``/``Dense`` with ``spiking=False``) is a *spiking* layer: it owns one neuron per
output element and its threshold θ (scalar, per channel or per neuron). Inputs to
the network are encoded by :class:`Input`.

The Graph is a DAG in topological order (as NIR's edges, but stored per node): each layer
names its sources in ``inputs``; ``inputs=()`` means "the previous layer in the list" (the
Input for the first), so sequential graphs look as before. Several inputs occur in two
places only: :class:`Concat` (channel concatenation, a view without neurons) and
:class:`Add` (a spiking layer whose input is the sum of the pre-activations of its
branch layers, e.g. ``conv2(h) + identity(x)`` of a residual block). A branch layer is a
weighted layer without neurons (``spiking=False``) that feeds exactly one Add.
"""

from bioconv.ir.graph import Graph
from bioconv.ir.rate_curve import LIFRate
from bioconv.ir.nodes import (
    PADDING_MODES,
    SPIKING_LAYERS,
    VIEWS,
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Input,
    Layer,
    MaxPool2d,
    Shape,
    _pair,
    is_branch,
    is_spiking,
)

__all__ = ["Graph", "LIFRate", "Input", "Conv2d", "Dense", "AvgPool2d", "MaxPool2d", "Flatten", "Concat", "Add", "Layer",
           "Shape", "SPIKING_LAYERS", "VIEWS", "PADDING_MODES", "is_spiking", "is_branch"]
