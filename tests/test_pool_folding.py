"""Average-pool folding: the folded graph computes the same ANN function with one layer fewer per pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from brian2 import Hz, ms

from bioconv import ir
from bioconv.connectivity import layer_synapses
from bioconv.engines.torch import simulate as torch_simulate
from bioconv.normalize import activation_stats, mcr_norm
from bioconv.normalize.probes import TorchProbe
from bioconv.pool_folding import fold_avg_pools, prepare_pools
from bioconv.simulation import SimConfig


def pooled_net(seed: int = 0, size: int = 12, conv_padding: int = 1, pool_scale: float = 1.0) -> ir.Graph:
    """conv - pool - conv - pool - flatten - dense, random weights and biases."""
    rng = np.random.default_rng(seed)
    c1 = ir.Conv2d("c1", (2, size, size), rng.normal(0, 0.5, (3, 2, 3, 3)), rng.normal(0, 0.1, 3), padding=1)
    p1 = ir.AvgPool2d("p1", (3, size, size), 2, 2, scale=pool_scale)
    h = size // 2
    c2 = ir.Conv2d("c2", (3, h, h), rng.normal(0, 0.5, (4, 3, 3, 3)), rng.normal(0, 0.1, 4), padding=conv_padding)
    h2 = h + 2 * conv_padding - 2
    p2 = ir.AvgPool2d("p2", (4, h2, h2), 2, 2)
    flat = ir.Flatten("flat", (4, h2 // 2, h2 // 2))
    fc = ir.Dense("fc", rng.normal(0, 0.3, (5, 4 * (h2 // 2) ** 2)), rng.normal(0, 0.1, 5))
    return ir.Graph(ir.Input((2, size, size)), (c1, p1, c2, p2, flat, fc))


@pytest.mark.parametrize("size,conv_padding,scale", [(12, 1, 1.0), (12, 0, 1.0), (10, 0, 1.5), (16, 1, 0.8)])
def test_folded_graph_computes_the_same_function(size, conv_padding, scale):
    graph = pooled_net(size=size, conv_padding=conv_padding, pool_scale=scale)
    folded = fold_avg_pools(graph)
    assert [l.name for l in folded.spiking_layers] == ["c1", "c2", "fc"]
    assert folded.meta["folded_pools"] == ["p1", "p2"]
    x = np.random.default_rng(1).uniform(0, 1, (7, 2, size, size))
    a, b = graph.forward(x), folded.forward(x)
    for name in ("c1", "c2", "fc"):
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-12)


def test_folded_conv_equals_torch_conv_of_avg_pool():
    """The folded layer's weight, stride and padding reproduce torch's conv2d(avg_pool2d(x))."""
    graph = pooled_net(size=12)
    c2 = fold_avg_pools(graph).layer("c2")
    assert c2.weight.shape[2:] == (6, 6) and c2.stride == (2, 2) and c2.padding == (2, 2)
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    orig = graph.layer("c2")
    ref = F.conv2d(F.avg_pool2d(x, 2), torch.tensor(orig.weight), torch.tensor(orig.bias), padding=1)
    got = F.conv2d(x, torch.tensor(c2.weight), torch.tensor(c2.bias), stride=2, padding=2)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    # and the Brian2 synapse list of the folded conv is that same operator
    conn = layer_synapses(c2)
    dense = np.zeros((conn.n_pre, conn.n_post))
    np.add.at(dense, (conn.i, conn.j), conn.w)
    flat = x.reshape(3, -1).numpy() @ dense + np.repeat(c2.bias, 36)
    np.testing.assert_allclose(flat, (ref).reshape(3, -1).numpy(), atol=1e-12)


def test_unfoldable_pools_raise():
    rng = np.random.default_rng(0)
    conv = ir.Conv2d("c", (1, 6, 6), rng.normal(size=(2, 1, 3, 3)), np.zeros(2), padding=1)
    last = ir.Graph(ir.Input((1, 6, 6)), (conv, ir.AvgPool2d("p", (2, 6, 6), 2, 2)))
    with pytest.raises(ValueError, match="cannot fold pool 'p': it is the last layer"):
        fold_avg_pools(last)
    two = ir.Graph(ir.Input((1, 6, 6)), (conv, ir.AvgPool2d("p", (2, 6, 6), 2, 2), ir.AvgPool2d("q", (2, 3, 3), 1, 1)))
    with pytest.raises(ValueError, match="it feeds AvgPool2d 'q'"):
        fold_avg_pools(two)
    # 7x7 -> 3x3 drops a row that a padded conv would read from the folded input
    odd = ir.Graph(ir.Input((2, 7, 7)), (ir.AvgPool2d("p", (2, 7, 7), 2, 2),
                                         ir.Conv2d("c", (2, 3, 3), rng.normal(size=(2, 2, 3, 3)), np.zeros(2), padding=1)))
    with pytest.raises(ValueError, match="drops input rows"):
        fold_avg_pools(odd)
    converted = pooled_net().replace_layer("p1", threshold=0.5)
    with pytest.raises(ValueError, match="fold pools before normalization"):
        fold_avg_pools(converted)
    with pytest.raises(ValueError, match="pools must be one of"):
        prepare_pools(pooled_net(), "merge")
    assert prepare_pools(pooled_net(), "spiking").layer("p1") is not None


def test_mcr_on_folded_graph_hits_every_layer_within_tolerance():
    """With pools folded every spiking layer's max rate is scanned to 200 Hz ± 2 % (issue 5 acceptance)."""
    graph = fold_avg_pools(pooled_net(seed=3))
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (16, 2, 12, 12))
    labels = np.argmax(graph.forward(images)["fc"], axis=1)
    probe = TorchProbe(images, labels, SimConfig(duration=200 * ms, seed=3))
    g = mcr_norm(graph, activation_stats(graph, images), probe, target_rate=200 * Hz, input_rate=400 * Hz,
                 progress=False)
    full = torch_simulate(g, images, labels, probe.config, progress=False)
    for layer in ("c1", "c2", "fc"):
        assert abs(full.rates_hz(layer).max() / 200.0 - 1) <= 0.02, layer


def test_folded_strided_conv_runs_identically_in_fused_and_event_paths():
    """The fused kernel's shared-kernel delivery handles the folded stride-2, 6x6 convs exactly."""
    from bioconv.neurons import IF
    from bioconv.synapses import Delta

    graph = fold_avg_pools(pooled_net(seed=5, size=16)).with_models(neuron=IF(), synapse=Delta())
    rng = np.random.default_rng(2)
    images = rng.uniform(-0.2, 1, (6, 2, 16, 16))  # negative pixels: signed input spikes too
    scale = {l.name: 0.3 for l in graph.spiking_layers}
    for name, th in scale.items():
        graph = graph.replace_layer(name, threshold=th)
    labels = np.zeros(6, dtype=int)
    cfg = SimConfig(duration=80 * ms, bin=10 * ms, seed=1)
    ref = torch_simulate(graph, images, labels, cfg, propagation="event", progress=False)
    got = torch_simulate(graph, images, labels, cfg, propagation="fused", progress=False)
    assert all(ref.counts[k].sum() > 0 for k in ref.counts)
    for name in ref.counts:
        np.testing.assert_array_equal(got.counts[name], ref.counts[name])
    np.testing.assert_array_equal(got.output_counts, ref.output_counts)
