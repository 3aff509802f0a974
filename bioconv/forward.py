"""The ANN forward pass of IR layers in plain numpy (float64), used by ``Graph.forward``.

This is the torch-free reference of what each layer computes. It is used to check
BN folding and IR export against torch, and to compute activation statistics on the
Brian2 side without torch.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bioconv import ir


def _windows(a: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """(N, C, H_out, W_out, kH, kW) view of the zero-padded batch ``a``."""
    py, px = padding
    if py or px:
        a = np.pad(a, ((0, 0), (0, 0), (py, py), (px, px)))
    win = sliding_window_view(a, kernel, axis=(2, 3))
    return win[:, :, :: stride[0], :: stride[1]]


def conv2d(a: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    win = _windows(a, weight.shape[2:], stride, padding)
    return np.einsum("nchwyx,ocyx->nohw", win, weight, optimize=True) + bias[None, :, None, None]


def layer_forward(layer: ir.Layer, a: np.ndarray) -> np.ndarray:
    """Pre-activation of ``layer`` for a batch ``a`` of shape (N, *layer.input_shape)."""
    if isinstance(layer, ir.Conv2d):
        return conv2d(a, layer.weight, layer.bias, layer.stride, layer.padding)
    if isinstance(layer, ir.Dense):
        return a @ layer.weight.T + layer.bias
    if isinstance(layer, ir.AvgPool2d):
        return layer.scale * _windows(a, layer.kernel_size, layer.stride, (0, 0)).mean(axis=(-2, -1))
    if isinstance(layer, ir.MaxPool2d):
        return _windows(a, layer.kernel_size, layer.stride, (0, 0)).max(axis=(-2, -1))
    if isinstance(layer, ir.Flatten):
        return a.reshape(a.shape[0], -1)
    raise TypeError(f"unknown IR layer type {type(layer).__name__}")
