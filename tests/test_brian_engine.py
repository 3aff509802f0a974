"""Brian2 engine: runtime (numpy) against an independent reference of the documented update
order, standalone against runtime, run_args without recompiling, memory preflight."""

from __future__ import annotations

import os

import numpy as np
import pytest
from brian2 import ms

from bioconv import encoding, ir, memory
from bioconv.connectivity import layer_synapses
from bioconv.engines import brian2 as engine
from bioconv.neurons import IF, LIF, SRM
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta


def dyadic(rng, shape, scale=32, lo=-12, hi=16):
    """Weights that are multiples of 1/scale: every sum is exact in float64, so spike
    counts cannot depend on the order in which Brian2 adds synaptic inputs."""
    return rng.integers(lo, hi, shape) / scale


def tiny_graph(seed=0, neuron=None, synapse=None, in_shape=(1, 6, 6)):
    rng = np.random.default_rng(seed)
    c = in_shape[0]
    conv = ir.Conv2d("conv1", in_shape, dyadic(rng, (3, c, 3, 3)), dyadic(rng, 3, 128, 2, 12), padding=(1, 1))
    pool = ir.AvgPool2d("pool1", (3, 6, 6), scale=1.5)
    flat = ir.Flatten("flat", (3, 3, 3))
    fc = ir.Dense("fc", dyadic(rng, (4, 27), 16), dyadic(rng, 4, 128, -2, 4), threshold=np.array([1.0, 0.75, 1.25, 1.0]))
    return ir.Graph(ir.Input(in_shape, rate_scale=400.0), (conv, pool, flat, fc), neuron or IF(), synapse or Delta())


def reference_if(graph, images, config):
    """Direct numpy simulation of the update order in the engine's docstring (IF + delta)."""
    layers = graph.spiking_layers
    conns = [layer_synapses(layer).to_scipy().toarray() for layer in layers]
    bias = [engine_bias(layer) for layer in layers]
    theta = [np.broadcast_to(np.asarray(l.threshold, float), (int(np.prod(l.output_shape)),)) for l in layers]
    rates, signs = encoding.input_rates_hz(images, graph.input)
    trains = encoding.spike_trains(rates, signs, 1e-3, config.n_steps, config.coding, config.seed)
    counts = [np.zeros((len(images), a.shape[0]), int) for a in conns]
    for n in range(len(images)):
        v = [np.zeros(a.shape[0]) for a in conns]
        for k in range(config.n_steps):
            v = [1.0 * b * 0.001 / 0.001 + 1.0 * x for b, x in zip(bias, v)]  # groups
            spk = [x > th for x, th in zip(v, theta)]  # thresholds
            pre = [trains[n, k].astype(float)] + [s.astype(float) for s in spk[:-1]]
            v = [x + a @ p for x, a, p in zip(v, conns, pre)]  # synapses, same step
            for l, s in enumerate(spk):  # resets
                counts[l][n] += s
                v[l][s] = 0.0 if graph.neuron.reset == "zero" else v[l][s] - theta[l][s]
    return {layer.name: c for layer, c in zip(layers, counts)}


def engine_bias(layer):
    from bioconv.engines.brian2_build import layer_bias

    return layer_bias(layer)


@pytest.fixture
def images():
    rng = np.random.default_rng(7)
    return rng.integers(0, 9, (4, 1, 6, 6)) / 8, np.array([0, 1, 2, 3])


CFG = SimConfig(duration=20 * ms, dt=1 * ms, bin=5 * ms, record_times=("fc",))


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_runtime_matches_reference_update_order(images, reset):
    x, y = images
    graph = tiny_graph(neuron=IF(reset=reset))
    res = engine.simulate(graph, x, y, CFG)
    ref = reference_if(graph, x, CFG)
    for name, counts in ref.items():
        np.testing.assert_array_equal(res.counts[name], counts, err_msg=name)
    assert res.counts["conv1"].sum() > 50 and res.counts["fc"].sum() > 0  # the net is active


def test_simresult_fields_and_shapes(images):
    x, y = images
    res = engine.simulate(tiny_graph(), x, y, CFG)
    assert res.engine == "brian2" and list(res.counts) == ["conv1", "pool1", "fc"]
    assert res.counts["conv1"].shape == (4, 108) and res.counts["fc"].shape == (4, 4)
    assert res.output_counts.shape == (4, CFG.n_bins, 4)
    assert np.all(np.diff(res.output_counts, axis=1) >= 0)
    np.testing.assert_array_equal(res.output_counts[:, -1], res.counts["fc"])
    img, nrn, t = res.spike_times["fc"]
    assert len(img) == res.counts["fc"].sum() and t.min() >= 0 and t.max() < 20
    np.testing.assert_array_equal(np.bincount(img * 4 + nrn, minlength=16).reshape(4, 4), res.counts["fc"])
    assert res.accuracy_vs_time().shape == (CFG.n_bins,)
    assert res.meta["n_synapses"] > 0 and res.timings["run_s"] > 0
    table = res.to_table()
    assert len(table) == 4 * 3


def test_repeated_runs_identical_and_seed_matters(images):
    x, y = images
    a = engine.simulate(tiny_graph(), x, y, CFG)
    b = engine.simulate(tiny_graph(), x, y, CFG)
    c = engine.simulate(tiny_graph(), x, y, SimConfig(duration=20 * ms, dt=1 * ms, bin=5 * ms, seed=1))
    for name in a.counts:
        np.testing.assert_array_equal(a.counts[name], b.counts[name])
    assert not np.array_equal(a.counts["conv1"], c.counts["conv1"])


@pytest.mark.parametrize("neuron", [IF(), LIF(tau_m=10 * ms, reset="subtract", refractory=2 * ms)], ids=["if", "lif-refractory"])
def test_batches_do_not_change_results(images, neuron):
    """Input trains are seeded per dataset index and every state (refractoriness included) is
    reset between images, so batch size and first_index change nothing."""
    x, y = images
    graph = tiny_graph(neuron=neuron)
    whole = engine.simulate(graph, x, y, CFG)
    single = engine.simulate(graph, x, y, CFG, batch_size=1)
    tail = engine.simulate(graph, x[2:], y[2:], CFG, first_index=2)
    for name in whole.counts:
        np.testing.assert_array_equal(whole.counts[name], single.counts[name], err_msg=name)
        np.testing.assert_array_equal(whole.counts[name][2:], tail.counts[name], err_msg=name)


def test_other_models_codings_and_readout_run(images):
    x, y = images
    signed = x - 0.5
    for neuron, synapse in [(LIF(tau_m=10 * ms), Alpha(tau_s=2 * ms)), (SRM(tau_s=2 * ms, tau_r=2 * ms), Delta())]:
        cfg = SimConfig(duration=20 * ms, dt=1 * ms, bin=5 * ms, readout="voltage")
        res = engine.simulate(tiny_graph(neuron=neuron, synapse=synapse), signed, y, cfg)
        assert res.output_v.shape == (4, 4, 4) and np.isfinite(res.output_v).all()
        assert res.meta["signed"] and res.counts["conv1"].sum() > 0
    cur = engine.simulate(tiny_graph(), x, y, SimConfig(duration=20 * ms, dt=1 * ms, coding="current"))
    again = engine.simulate(tiny_graph(), x, y, SimConfig(duration=20 * ms, dt=1 * ms, coding="current", seed=5))
    assert cur.counts["conv1"].sum() > 0
    np.testing.assert_array_equal(cur.counts["conv1"], again.counts["conv1"])  # deterministic input


def test_signed_input_uses_negative_weights():
    """A pixel of -x must inhibit exactly as much as +x excites (same trains, negated weights)."""
    graph = tiny_graph(neuron=IF(reset="subtract"))
    graph = graph.replace_layer("conv1", bias=np.zeros(3))
    x = np.full((1, 1, 6, 6), 0.5)
    pos = engine.simulate(graph, x, [0], SimConfig(duration=20 * ms, dt=1 * ms), signed=True)
    neg_graph = graph.replace_layer("conv1", weight=-graph.layer("conv1").weight)
    neg = engine.simulate(neg_graph, -x, [0], SimConfig(duration=20 * ms, dt=1 * ms))
    np.testing.assert_array_equal(pos.counts["conv1"], neg.counts["conv1"])
    assert pos.counts["conv1"].sum() > 0


def test_memory_preflight_refuses_huge_network():
    big = ir.Conv2d("big", (64, 300, 300), np.zeros((64, 64, 3, 3)), np.zeros(64), padding=(1, 1))
    graph = ir.Graph(ir.Input((64, 300, 300)), (big,), IF(), Delta())
    est = memory.estimate(graph)
    assert est.n_synapses > 3e9 and est.bytes > 2e11
    with pytest.raises(MemoryError, match=r"GiB.*limit.*smaller network.*GPU.*build-then-run"):
        memory.preflight(graph)
    with pytest.raises(MemoryError):
        engine.Simulator(graph, SimConfig(), device="cpp", conv="explicit").run(np.zeros((1, 64, 300, 300), np.float32), [0])
    small = memory.preflight(tiny_graph(), limit_bytes=10**9)
    assert 0 < small.bytes < 10**6


def test_unknown_record_times_layer_is_a_clear_error(images):
    x, y = images
    with pytest.raises(ValueError, match="record_times names unknown layers"):
        engine.simulate(tiny_graph(), x, y, SimConfig(duration=5 * ms, record_times=("nope",)))


# --------------------------------------------------------------------------- standalone
@pytest.fixture(scope="module")
def cpp_sim():
    """One cpp_standalone build (cached in .cache/brian/standalone/<key> between test runs)."""
    return engine.Simulator(tiny_graph(), CFG, device="cpp", workers=2, batch_size=3)


@pytest.mark.standalone
def test_standalone_identical_to_runtime(cpp_sim, images):
    x, y = images
    rt = engine.simulate(tiny_graph(), x, y, CFG)
    sa = cpp_sim.run(x, y)
    for name in rt.counts:
        np.testing.assert_array_equal(sa.counts[name], rt.counts[name], err_msg=name)
    np.testing.assert_array_equal(sa.output_counts, rt.output_counts)
    for a, b in zip(sa.spike_times["fc"], rt.spike_times["fc"]):
        np.testing.assert_array_equal(a, b)
    again = cpp_sim.run(x, y)
    np.testing.assert_array_equal(again.counts["conv1"], sa.counts["conv1"])


@pytest.mark.standalone
def test_standalone_new_parameters_without_recompile(cpp_sim, images):
    x, y = images
    cpp_sim.run(x[:1], y[:1])  # make sure it is built
    binary = cpp_sim.directory / "main"
    mtime = os.path.getmtime(binary)
    g = tiny_graph()
    new = g.replace_layer("conv1", weight=g.layer("conv1").weight * 1.5, bias=g.layer("conv1").bias / 2)
    new = new.replace_layer("fc", threshold=0.5).replace_layer("pool1", scale=2.0)
    sa = cpp_sim.run(x, y, graph=new)
    assert os.path.getmtime(binary) == mtime
    rt = engine.simulate(new, x, y, CFG)  # runtime == a fresh build (see test above)
    for name in rt.counts:
        np.testing.assert_array_equal(sa.counts[name], rt.counts[name], err_msg=name)
    old = engine.simulate(g, x, y, CFG)
    assert not np.array_equal(old.counts["fc"], sa.counts["fc"])
    with pytest.raises(ValueError, match="structure or neuron model"):
        cpp_sim.run(x, y, graph=g.with_models(neuron=IF(tau=2 * ms)))  # tau is compiled in
    # a new Simulator for the same structure reuses the compiled binary
    reused = engine.Simulator(tiny_graph(), CFG, device="cpp", batch_size=3)
    res = reused.run(x, y)
    assert reused.directory == cpp_sim.directory and res.timings["compile_s"] == 0.0

