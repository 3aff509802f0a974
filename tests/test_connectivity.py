"""The (i, j, w) synapse lists reproduce torch's conv2d / avg_pool2d / linear exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioconv import ir
from bioconv.connectivity import (
    Connectivity,
    GatedMaxPool,
    count_synapses,
    fan_in,
    layer_synapse_count,
    layer_synapses,
    layer_weights,
)

torch.set_num_threads(1)

CONV_CASES = [
    # (C_in, H, W, C_out, kH, kW, stride, padding)
    (1, 6, 6, 2, 3, 3, 1, 1),
    (3, 7, 9, 4, 3, 3, 1, 1),
    (2, 8, 7, 3, 3, 2, 2, 0),
    (2, 9, 9, 3, 5, 5, 2, 2),
    (2, 10, 7, 3, 3, 3, (2, 1), (1, 0)),
    (1, 5, 6, 2, 1, 1, 1, 0),
    (2, 6, 6, 3, 3, 3, 3, 1),
    (1, 3, 3, 2, 5, 5, 1, 2),
]


def _conv_layer(rng, case):
    c_in, h, w, c_out, kh, kw, stride, padding = case
    weight = rng.normal(size=(c_out, c_in, kh, kw))
    return ir.Conv2d("conv", (c_in, h, w), weight, rng.normal(size=c_out), stride=stride, padding=padding)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(rng, case):
    layer = _conv_layer(rng, case)
    conn = layer_synapses(layer)
    assert conn.i.dtype == np.int32 and conn.j.dtype == np.int32 and conn.w.dtype == np.float64
    assert conn.n_pre == int(np.prod(layer.input_shape)) and conn.n_post == int(np.prod(layer.output_shape))
    x = rng.normal(size=(3, *layer.input_shape))
    ref = F.conv2d(torch.tensor(x), torch.tensor(layer.weight), stride=layer.stride, padding=layer.padding)
    assert tuple(ref.shape[1:]) == layer.output_shape
    got = conn.matvec(x.reshape(3, -1))
    np.testing.assert_allclose(got, ref.numpy().reshape(3, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conn.matvec(x[0].ravel()), got[0], rtol=1e-12, atol=1e-12)
    # no duplicate (i, j) pairs: each synapse is one kernel tap
    pairs = conn.i.astype(np.int64) * conn.n_post + conn.j
    assert np.unique(pairs).size == len(conn)
    assert layer_synapse_count(layer) == len(conn)
    np.testing.assert_array_equal(np.bincount(conn.j, minlength=conn.n_post), fan_in(layer))
    np.testing.assert_array_equal(layer_weights(layer), conn.w)


def test_structure_independent_of_weight_values(rng):
    """Zero weights are kept, so an engine can swap w into a compiled structure."""
    layer = _conv_layer(rng, CONV_CASES[1])
    zeroed = ir.Conv2d("conv", layer.input_shape, np.where(rng.random(layer.weight.shape) < 0.5, 0.0,
                       layer.weight), layer.bias, stride=layer.stride, padding=layer.padding)
    a, b = layer_synapses(layer), layer_synapses(zeroed)
    np.testing.assert_array_equal(a.i, b.i)
    np.testing.assert_array_equal(a.j, b.j)
    assert np.any(b.w == 0)


@pytest.mark.parametrize(
    "shape, kernel, stride, scale",
    [((3, 8, 8), 2, 2, 1.0), ((2, 7, 9), (2, 3), (2, 3), 1.7), ((2, 6, 6), 3, 1, 1.0), ((1, 5, 5), 2, 1, 0.5)],
)
def test_avgpool_matches_torch(rng, shape, kernel, stride, scale):
    layer = ir.AvgPool2d("pool", shape, kernel_size=kernel, stride=stride, scale=scale)
    conn = layer_synapses(layer)
    x = rng.normal(size=(4, *shape))
    ref = scale * F.avg_pool2d(torch.tensor(x), kernel_size=layer.kernel_size, stride=layer.stride)
    assert tuple(ref.shape[1:]) == layer.output_shape
    np.testing.assert_allclose(conn.matvec(x.reshape(4, -1)), ref.numpy().reshape(4, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conn.w, scale / (layer.kernel_size[0] * layer.kernel_size[1]))
    assert layer_synapse_count(layer) == len(conn)


def test_dense_matches_torch(rng):
    layer = ir.Dense("fc", rng.normal(size=(7, 13)), rng.normal(size=7))
    conn = layer_synapses(layer)
    x = rng.normal(size=(5, 13))
    ref = F.linear(torch.tensor(x), torch.tensor(layer.weight)).numpy()
    np.testing.assert_allclose(conn.matvec(x), ref, rtol=1e-12, atol=1e-12)
    dense = conn.to_scipy().toarray()
    np.testing.assert_array_equal(dense, layer.weight)
    assert len(conn) == layer_synapse_count(layer) == 7 * 13


def test_flatten_then_dense_uses_torch_order(rng):
    """Conv → Flatten → Dense: Dense's flat indices follow torch's (C, H, W) flatten."""
    conv = _conv_layer(rng, CONV_CASES[2])
    n = int(np.prod(conv.output_shape))
    dense = ir.Dense("fc", rng.normal(size=(4, n)), np.zeros(4))
    x = rng.normal(size=(2, *conv.input_shape))
    h = torch.relu(F.conv2d(torch.tensor(x), torch.tensor(conv.weight), stride=conv.stride, padding=conv.padding))
    ref = F.linear(torch.flatten(h, 1), torch.tensor(dense.weight)).numpy()
    a = np.maximum(layer_synapses(conv).matvec(x.reshape(2, -1)), 0)
    np.testing.assert_allclose(layer_synapses(dense).matvec(a), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="Flatten"):
        layer_synapses(ir.Flatten("flat", conv.output_shape))


def test_gated_maxpool_windows_and_ann_max(rng):
    layer = ir.MaxPool2d("mp", (2, 6, 8), kernel_size=2, stride=2)
    pool = layer_synapses(layer)
    assert isinstance(pool, GatedMaxPool) and not isinstance(pool, Connectivity)
    assert not hasattr(pool, "w"), "no weights: an engine that cannot gate must not sum-pool silently"
    with pytest.raises(ValueError, match="no weights"):
        layer_weights(layer)
    x = rng.normal(size=(3, 2, 6, 8))
    ref = F.max_pool2d(torch.tensor(x), 2).numpy().reshape(3, -1)
    np.testing.assert_array_equal(pool.pool(x.reshape(3, -1)), ref)
    assert np.all(np.diff(pool.windows, axis=1) > 0)
    assert layer_synapse_count(layer) == len(pool)


def test_gated_maxpool_passes_the_max_count(rng):
    """After every step, a pool unit has passed exactly max_i(count_i) spikes, one at a time."""
    layer = ir.MaxPool2d("mp", (2, 4, 6), kernel_size=2, stride=2)
    pool = layer_synapses(layer)
    n_steps = 200
    p = rng.random(pool.n_pre) * 0.6
    spikes = (rng.random((n_steps, pool.n_pre)) < p).astype(np.int8)
    out = pool.run(spikes)
    assert out.shape == (n_steps, pool.n_post) and set(np.unique(out)) <= {0, 1}
    counts = np.cumsum(spikes, axis=0)
    np.testing.assert_array_equal(np.cumsum(out, axis=0), counts[:, pool.windows].max(axis=-1))
    # a passed spike is always a spike of some window member at that step
    assert np.all(out <= spikes[:, pool.windows].max(axis=-1))
    # batched == per image
    batch = np.stack([spikes, spikes[::-1]])
    np.testing.assert_array_equal(pool.run(batch)[1], pool.run(spikes[::-1]))


def test_gated_maxpool_only_the_leader_passes():
    """Two inputs in one window: the faster one's spikes pass, the slower one's are blocked."""
    layer = ir.MaxPool2d("mp", (1, 1, 2), kernel_size=(1, 2), stride=(1, 2))
    pool = layer_synapses(layer)
    fast = np.tile([1, 1, 0], 30)  # rate 2/3
    slow = np.tile([0, 0, 1], 30)  # rate 1/3, never spikes with the leader
    out = pool.run(np.stack([fast, slow], axis=1))[:, 0]
    # the slow input's spikes (steps 2, 5, ...) never pass once the fast one leads
    np.testing.assert_array_equal(out, fast)


def test_count_synapses_cnn7(rng):
    """cnn7 on MNIST shape: counts from shapes agree with built arrays; build is fast."""
    layers, shape = [], (1, 28, 28)
    for k in range(3):
        layers.append(ir.Conv2d(f"conv{k}", shape, rng.normal(size=(32, shape[0], 3, 3)), np.zeros(32), padding=1))
        layers.append(ir.AvgPool2d(f"pool{k}", layers[-1].output_shape))
        shape = layers[-1].output_shape
    layers.append(ir.Flatten("flat", shape))
    layers.append(ir.Dense("fc1", rng.normal(size=(32, int(np.prod(shape)))), np.zeros(32)))
    layers.append(ir.Dense("fc2", rng.normal(size=(10, 32)), np.zeros(10)))
    graph = ir.Graph(ir.Input((1, 28, 28)), tuple(layers))
    counts = count_synapses(graph)
    assert list(counts) == [l.name for l in graph.spiking_layers]
    # conv0 (padding 1): each 3x3 tap (dy, dx) reaches (28 - |dy|) * (28 - |dx|) output positions
    assert counts["conv0"] == 32 * sum((28 - abs(dy)) * (28 - abs(dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert counts["pool0"] == 32 * 14 * 14 * 4 and counts["fc1"] == 32 * 32 * 3 * 3
    start = time.perf_counter()
    built = {l.name: len(layer_synapses(l)) for l in graph.spiking_layers}
    elapsed = time.perf_counter() - start
    assert built == counts
    total = sum(built.values())
    assert total == 2_265_280
    assert total / elapsed > 2e6, f"synapse build too slow: {total / elapsed / 1e6:.2f} M synapses/s"


def test_bad_inputs_raise(rng):
    conn = layer_synapses(ir.Dense("fc", rng.normal(size=(3, 4)), np.zeros(3)))
    with pytest.raises(ValueError, match="n_pre"):
        conn.matvec(np.zeros(5))
    with pytest.raises(ValueError, match="1-D arrays"):
        Connectivity(np.zeros(3, np.int32), np.zeros(2, np.int32), np.zeros(3), 1, 1)
    with pytest.raises(ValueError, match="presynaptic"):
        Connectivity(np.array([5], np.int32), np.array([0], np.int32), np.ones(1), 2, 1)
    with pytest.raises(ValueError, match="no connectivity"):
        layer_synapses(object())
    pool = layer_synapses(ir.MaxPool2d("mp", (1, 2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        pool.run(-np.ones((3, 4), np.int8))
    with pytest.raises(ValueError, match="shape"):
        pool.run(np.ones((3, 5), np.int8))


def test_no_brian2_or_torch_import():
    import subprocess
    import sys

    code = "import sys, bioconv.connectivity, bioconv.encoding; print('brian2' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
