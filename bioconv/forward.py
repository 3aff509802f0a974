"""The ANN forward pass of IR layers in plain numpy (float64), used by ``Graph.forward``.

This is the torch-free reference of what each layer computes. It is used to check
BN folding and IR export against torch, and to compute activation statistics on the
Brian2 side without torch.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bioconv import ir

_NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _windows(a: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
             dilation: tuple[int, int] = (1, 1), padding_mode: str = "zeros") -> np.ndarray:
    """(N, C, H_out, W_out, kH, kW) view of the padded batch ``a`` (dilated kernel taps)."""
    py, px = padding
    if py or px:
        a = np.pad(a, ((0, 0), (0, 0), (py, py), (px, px)), mode=_NP_PAD[padding_mode])
    dy, dx = dilation
    span = (dy * (kernel[0] - 1) + 1, dx * (kernel[1] - 1) + 1)
    win = sliding_window_view(a, span, axis=(2, 3))[..., ::dy, ::dx]
    return win[:, :, :: stride[0], :: stride[1]]


def conv2d(a: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride=(1, 1), padding=(0, 0), groups: int = 1,
           dilation=(1, 1), padding_mode: str = "zeros") -> np.ndarray:
    r""":math:`z = b + W \star a` as ``torch.nn.functional.conv2d`` (groups, dilation, padding modes)."""
    win = _windows(a, weight.shape[2:], stride, padding, dilation, padding_mode)
    if groups == 1:
        return np.einsum("nchwyx,ocyx->nohw", win, weight, optimize=True) + bias[None, :, None, None]
    n, c = win.shape[:2]
    c_out = weight.shape[0]
    wg = win.reshape(n, groups, c // groups, *win.shape[2:])
    kg = weight.reshape(groups, c_out // groups, *weight.shape[1:])
    out = np.einsum("ngchwyx,gocyx->ngohw", wg, kg, optimize=True).reshape(n, c_out, *win.shape[2:4])
    return out + bias[None, :, None, None]


def layer_forward(layer: ir.Layer, a: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
    """Pre-activation of ``layer`` for a batch ``a`` of shape (N, *layer.input_shape).

    :class:`~bioconv.ir.Add` and :class:`~bioconv.ir.Concat` take the list of their
    inputs' values (the branches' pre-activations / the inputs' activations).
    """
    if isinstance(layer, ir.Add):
        return np.sum(np.stack(list(a)), axis=0)
    if isinstance(layer, ir.Concat):
        return np.concatenate(list(a), axis=1)
    if isinstance(layer, ir.Conv2d):
        return conv2d(a, layer.weight, layer.bias, layer.stride, layer.padding, layer.groups, layer.dilation,
                      layer.padding_mode)
    if isinstance(layer, ir.Dense):
        return a @ layer.weight.T + layer.bias
    if isinstance(layer, ir.AvgPool2d):
        return layer.scale * _windows(a, layer.kernel_size, layer.stride, (0, 0)).mean(axis=(-2, -1))
    if isinstance(layer, ir.MaxPool2d):
        return _windows(a, layer.kernel_size, layer.stride, (0, 0)).max(axis=(-2, -1))
    if isinstance(layer, ir.Flatten):
        return a.reshape(a.shape[0], -1)
    raise TypeError(f"unknown IR layer type {type(layer).__name__}")
