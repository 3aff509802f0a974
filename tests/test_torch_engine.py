"""Fast checks of the torch engine: analytic rates, shapes, dtypes, determinism, gated max-pool."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brian2 import ms

from bioconv import ir
from bioconv.connectivity import layer_synapses
from bioconv.engines import torch as te
from bioconv.neurons import IF, LIF, SRM
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta
from engine_helpers import random_graph, scale_to_spike

torch.set_num_threads(1)


def bias_graph(biases, theta, neuron=None, synapse=None, n_in=4, weight=0.0, rate_scale=1000.0):
    """One Dense layer of len(biases) neurons driven by its bias (and optionally uniform input weights)."""
    biases = np.asarray(biases, dtype=float)
    layer = ir.Dense("out", np.full((len(biases), n_in), weight), biases, threshold=theta)
    graph = ir.Graph(ir.Input((n_in,), rate_scale=rate_scale), (layer,))
    return graph.with_models(neuron=neuron or IF(reset="subtract"), synapse=synapse or Delta())


@pytest.fixture(scope="module")
def mnist_small():
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test")
    return ds.images[:8], ds.labels[:8]


@pytest.fixture(scope="module")
def tiny(mnist_small):
    return scale_to_spike(random_graph("tiny", seed=3), mnist_small[0], target=0.8)


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_if_subtract_rate_is_exactly_bias_over_theta(theta):
    """IF, reset by subtraction, constant drive b: the n-step count is ceil(n b / theta) - 1 (strict v > theta)."""
    b = np.array([0.0625, 0.125, 0.25, 0.375, 0.5])  # exact binary fractions <= theta: no rounding anywhere
    n_steps = 200
    cfg = SimConfig(duration=n_steps * ms)
    res = te.simulate(bias_graph(b, theta), np.zeros((1, 4)), np.zeros(1, int), cfg, progress=False)
    expected = np.ceil(n_steps * b / theta) - 1
    np.testing.assert_array_equal(res.counts["out"][0], expected)
    # the rate is I/(theta*tau) up to one spike in T
    np.testing.assert_allclose(res.rates_hz("out")[0], b / theta * 1000, atol=1000 / n_steps)


def test_if_zero_reset_loses_residual():
    """Reset to zero with b = 0.375: v goes 0.375, 0.75, 1.125 -> spike, reset to 0: one spike per 3 steps."""
    cfg = SimConfig(duration=99 * ms)
    res = te.simulate(bias_graph([0.375], 1.0, IF(reset="zero")), np.zeros((1, 4)), np.zeros(1, int), cfg,
                      progress=False)
    assert res.counts["out"][0, 0] == 33  # spikes at step indices 2, 5, ..., 98


def test_current_coding_drives_first_layer():
    """coding='current': w = 1/16 from 4 inputs at 1000 Hz gives tau*I = 0.25 (plus the bias) per step."""
    cfg = SimConfig(duration=100 * ms, coding="current")
    graph = bias_graph([0.0, 0.25], 1.0, weight=1 / 16)
    res = te.simulate(graph, np.ones((1, 4)), np.zeros(1, int), cfg, progress=False)
    np.testing.assert_allclose(res.counts["out"][0], [24, 49], atol=1)


def test_lif_constant_drive_matches_f_i_curve():
    """LIF (tau_m = 20 ms), reset to zero: the interval is the first step with v > theta on the exact trajectory."""
    b, tau_m = 0.2, 20e-3
    cfg = SimConfig(duration=500 * ms)
    res = te.simulate(bias_graph([b], 1.0, LIF(tau_m=20 * ms)), np.zeros((1, 4)), np.zeros(1, int), cfg,
                      progress=False)
    ri = b * tau_m / 1e-3  # steady state v = b * tau_m / tau = 4
    k = math.ceil(-math.log(1 - 1.0 / ri) * tau_m / 1e-3 + 1e-12)  # steps until v > theta
    assert res.counts["out"][0, 0] == 500 // k


def test_shapes_and_readouts(tiny, mnist_small):
    x, y = mnist_small
    cfg = SimConfig(duration=40 * ms, bin=10 * ms, readout="voltage", record_times=("l4",))
    res = te.simulate(tiny.with_models(neuron=IF(), synapse=Delta()), x[:5], y[:5], cfg, batch_size=2, progress=False)
    assert res.engine == "torch"
    assert list(res.counts) == [layer.name for layer in tiny.spiking_layers]
    for layer in tiny.spiking_layers:
        assert res.counts[layer.name].shape == (5, int(np.prod(layer.output_shape)))
    assert res.output_counts.shape == (5, 4, 10)
    assert np.all(np.diff(res.output_counts, axis=1) >= 0)
    np.testing.assert_array_equal(res.output_counts[:, -1], res.counts["l4"])
    assert res.output_v.shape == (5, 4, 10)
    img, nrn, t_ms = res.spike_times["l4"]
    assert len(img) == res.counts["l4"].sum()
    np.testing.assert_array_equal(np.bincount(img * 10 + nrn, minlength=50).reshape(5, 10), res.counts["l4"])
    assert t_ms.min() >= 0 and t_ms.max() < 40
    assert res.predictions().shape == (5, 4)
    # the count-voltage readout records the same potentials (fused kernel and event path)
    for propagation in ("auto", "event"):
        cv = te.simulate(tiny.with_models(neuron=IF(), synapse=Delta()), x[:5], y[:5],
                         SimConfig(duration=40 * ms, bin=10 * ms, readout="count-voltage"), batch_size=2,
                         progress=False, propagation=propagation)
        np.testing.assert_array_equal(cv.output_v, res.output_v)
        np.testing.assert_array_equal(cv.predictions(), res.predictions("count-voltage"))
    assert len(res.to_table()) == 5 * len(res.counts)


def test_determinism_and_batching(tiny, mnist_small):
    """Same seed: identical results, whatever the batch size; another seed: other trains."""
    x, y = mnist_small
    graph = tiny.with_models(neuron=IF(reset="subtract"), synapse=Delta())
    cfg = SimConfig(duration=30 * ms, seed=7)
    a = te.simulate(graph, x, y, cfg, batch_size=8, progress=False)
    b = te.simulate(graph, x, y, cfg, batch_size=3, progress=False)
    for name in a.counts:
        np.testing.assert_array_equal(a.counts[name], b.counts[name])
    c = te.simulate(graph, x, y, SimConfig(duration=30 * ms, seed=8), batch_size=8, progress=False)
    assert any((a.counts[k] != c.counts[k]).any() for k in a.counts)
    assert sum(v.sum() for v in a.counts.values()) > 100  # the net does spike


@pytest.mark.parametrize("neuron,synapse", [(IF(), Delta()), (LIF(reset="subtract"), Alpha()), (SRM(), Delta())])
def test_float32_close_to_float64_and_dense_close_to_event(tiny, mnist_small, neuron, synapse):
    x, y = mnist_small
    graph = tiny.with_models(neuron=neuron, synapse=synapse)
    if isinstance(neuron, SRM):  # SRM does not integrate: lower thresholds to get it spiking
        for layer in graph.spiking_layers:
            graph = graph.replace_layer(layer.name, threshold=layer.threshold * 0.1)
    cfg = SimConfig(duration=50 * ms)
    ref = te.simulate(graph, x, y, cfg, dtype="float64", propagation="event", progress=False)
    total = sum(v.sum() for v in ref.counts.values())
    assert total > 100
    for dtype, prop, min_same in (("float64", "dense", 0.999), ("float32", "dense", 0.99), ("float32", "event", 0.99)):
        other = te.simulate(graph, x, y, cfg, dtype=dtype, propagation=prop, progress=False)
        same = sum((ref.counts[k] == other.counts[k]).sum() for k in ref.counts) / sum(v.size for v in ref.counts.values())
        assert same >= min_same, (dtype, prop, same)
        assert abs(sum(v.sum() for v in other.counts.values()) - total) <= 0.02 * total


def test_gated_max_pool_matches_reference():
    """The torch gating step reproduces bioconv.connectivity.GatedMaxPool.run on random spike trains."""
    rng = np.random.default_rng(0)
    layer = ir.MaxPool2d("mp", (3, 6, 6), 2, 2)
    gate = layer_synapses(layer)
    spikes = (rng.random((4, 30, 3 * 36)) < 0.3).astype(np.int8)
    expected = gate.run(spikes)
    counts = torch.zeros((4, 3, 6, 6), dtype=torch.int32)
    cmax = torch.zeros((4, gate.n_post), dtype=torch.int32)
    got = [te._gated_pool(layer, torch.as_tensor(spikes[:, t]).reshape(4, 3, 6, 6), counts, cmax) for t in range(30)]
    np.testing.assert_array_equal(torch.stack(got, 1).numpy().astype(np.int8), expected)


def test_max_pool_network_runs(mnist_small):
    x, y = mnist_small
    graph = scale_to_spike(random_graph("4c3-mp2-10FC", seed=1), x, target=0.8)
    res = te.simulate(graph.with_models(neuron=IF(), synapse=Delta()), x[:2], y[:2], SimConfig(duration=30 * ms),
                      progress=False)
    assert res.counts["l1"].sum() > 0 and res.counts["l1"].shape == (2, 4 * 14 * 14)


def test_bad_options_raise(tiny, mnist_small):
    x, y = mnist_small
    graph = tiny.with_models(neuron=IF(), synapse=Delta())
    with pytest.raises(ValueError, match="dtype"):
        te.simulate(graph, x, y, SimConfig(), dtype="float16")
    with pytest.raises(ValueError, match="propagation"):
        te.simulate(graph, x, y, SimConfig(), propagation="sparse")
    with pytest.raises(ValueError, match="SRM"):
        te.simulate(tiny.with_models(neuron=SRM(), synapse=Alpha()), x, y, SimConfig())
    with pytest.raises(ValueError, match="neuron model"):
        te.simulate(tiny, x, y, SimConfig())
    with pytest.raises(ValueError, match="record_times"):
        te.simulate(graph, x, y, SimConfig(record_times=("nope",)))
    with pytest.raises(ValueError, match="images"):
        te.simulate(graph, x[:, 0], y, SimConfig())


FUSED_MODELS = [
    pytest.param(IF(reset="zero"), id="if-zero"),
    pytest.param(IF(reset="subtract"), id="if-subtract"),
    pytest.param(LIF(tau_m=20 * ms, reset="zero"), id="lif-zero"),
    pytest.param(LIF(tau_m=5 * ms, reset="subtract"), id="lif-subtract"),
    pytest.param((IF(reset="zero"), Alpha(tau_s=1 * ms)), id="if-zero-alpha"),
    pytest.param((LIF(tau_m=10 * ms, reset="subtract"), Alpha(tau_s=2 * ms)), id="lif-subtract-alpha"),
    pytest.param(SRM(tau_s=1 * ms, tau_r=2 * ms), id="srm"),
]


@pytest.mark.parametrize("neuron", FUSED_MODELS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_kernel_is_bit_identical_to_event_propagation(tiny, mnist_small, neuron, dtype):
    """The compiled kernel does the event path's additions in the same order: float64 counts, bins and v
    identical; float32 within rounding."""
    x, y = mnist_small
    neuron, synapse = neuron if isinstance(neuron, tuple) else (neuron, Delta())
    graph = tiny.with_models(neuron=neuron, synapse=synapse)
    if not isinstance(neuron, IF):  # LIF leaks, SRM does not integrate: lower thresholds so all layers spike
        for layer in graph.spiking_layers:
            graph = graph.replace_layer(layer.name, threshold=layer.threshold * (0.1 if isinstance(neuron, SRM) else 0.5))
    for images in (x, x - 0.3):  # the second has negative pixels: the signed (<input>_neg) pathway
        cfg = SimConfig(duration=60 * ms, bin=10 * ms, readout="voltage", seed=4)
        ref = te.simulate(graph, images, y, cfg, dtype=dtype, propagation="event", progress=False)
        got = te.simulate(graph, images, y, cfg, dtype=dtype, propagation="fused", batch_size=3, progress=False)
        assert got.meta["propagation"] == "fused" and sum(v.sum() for v in ref.counts.values()) > 100
        if dtype == "float64":
            for name in ref.counts:
                np.testing.assert_array_equal(got.counts[name], ref.counts[name])
                np.testing.assert_array_equal(got.layer_bin_counts[name], ref.layer_bin_counts[name])
            np.testing.assert_array_equal(got.output_counts, ref.output_counts)
            np.testing.assert_array_equal(got.output_v, ref.output_v)
        else:  # float32: LIF's e_m·v and the bias term round differently (torch scales by a double scalar)
            same = sum((got.counts[k] == ref.counts[k]).sum() for k in ref.counts)
            assert same / sum(v.size for v in ref.counts.values()) >= 0.999
            np.testing.assert_allclose(got.output_v, ref.output_v, rtol=1e-5, atol=1e-5)


def test_auto_propagation_picks_fused_or_falls_back(tiny, mnist_small):
    """The fused kernel runs refractoriness, current input and spike-time recording; graphs it cannot run fall back."""
    x, y = mnist_small
    cfg = SimConfig(duration=20 * ms)
    runs = [
        (tiny.with_models(neuron=IF(), synapse=Delta()), cfg),
        (tiny.with_models(neuron=LIF(refractory=2 * ms), synapse=Delta()), cfg),
        (tiny.with_models(neuron=IF(), synapse=Delta()), SimConfig(duration=20 * ms, coding="current")),
        (tiny.with_models(neuron=IF(), synapse=Delta()),
         SimConfig(duration=20 * ms, record_times=(tiny.spiking_layers[0].name,))),
    ]
    for graph, config in runs:
        assert te.simulate(graph, x[:2], y[:2], config, progress=False).meta["propagation"] == "fused"
    with pytest.raises(ValueError, match="without neuron or synapse models"):
        te.simulate(tiny, x[:2], y[:2], cfg, propagation="fused", progress=False)
    with pytest.raises(ValueError, match="no neuron model"):
        te.simulate(tiny, x[:2], y[:2], cfg, progress=False)  # auto: the event path's error


def test_fused_threaded_input_trains_equal_one_call(mnist_small):
    from bioconv import encoding
    from bioconv.engines import fused

    x = mnist_small[0] - 0.2
    rates, signs = encoding.input_rates_hz(x, ir.Input((1, 28, 28), rate_scale=400.0))
    cfg = SimConfig(duration=30 * ms, seed=9)
    one = encoding.spike_trains(rates, signs, 1e-3, cfg.n_steps, cfg.coding, cfg.seed, 5)
    np.testing.assert_array_equal(fused._spike_trains_threaded(rates, signs, 1e-3, cfg, 5, threads=3), one)


def test_fused_conv_output_layer_and_strided_conv(mnist_small):
    """Channel-last hidden convs, a strided conv and a conv output layer (torch-order state) match the event path."""
    x, y = mnist_small
    rng = np.random.default_rng(4)
    c1 = ir.Conv2d("c1", (1, 28, 28), rng.normal(0.1, 0.4, (3, 1, 3, 3)), rng.normal(0.05, 0.05, 3), padding=1)
    c2 = ir.Conv2d("c2", (3, 28, 28), rng.normal(0.05, 0.3, (4, 3, 4, 4)), rng.normal(0, 0.05, 4), stride=2,
                   padding=1)
    c3 = ir.Conv2d("c3", (4, 14, 14), rng.normal(0.05, 0.3, (2, 4, 3, 3)), np.zeros(2))
    graph = ir.Graph(ir.Input((1, 28, 28), rate_scale=500.0), (c1, c2, c3)).with_models(neuron=IF(), synapse=Delta())
    for layer in graph.spiking_layers:
        graph = graph.replace_layer(layer.name, threshold=0.5)
    cfg = SimConfig(duration=40 * ms, bin=10 * ms, readout="voltage")
    ref = te.simulate(graph, x - 0.1, np.zeros(len(x), int), cfg, propagation="event", progress=False)
    got = te.simulate(graph, x - 0.1, np.zeros(len(x), int), cfg, propagation="fused", progress=False)
    assert all(ref.counts[k].sum() > 0 for k in ref.counts)
    for name in ref.counts:
        np.testing.assert_array_equal(got.counts[name], ref.counts[name])
    np.testing.assert_array_equal(got.output_v, ref.output_v)
