"""The models layer (:mod:`bioconv.models`) and every engine built on it, spike for spike against Brian2.

The torch engine's event path and fused kernel evaluate the statements Brian2's own code
generation produces for each model, so float64 spike counts (and, with the voltage and
integrating readouts, output potentials) equal Brian2's for every neuron and synapse model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brian2 import ms

from bioconv import ir
from bioconv.connectivity import layer_synapses
from bioconv.engines import brian2 as b2
from bioconv.engines import torch as te
from bioconv.models import SCHEDULE, make_dynamics, readout_dynamics
from bioconv.neurons import IF, LIF, SRM
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta, Exponential
from engine_helpers import random_graph, scale_to_spike

torch.set_num_threads(1)

MODELS = [
    pytest.param(IF(reset="zero"), Delta(), id="if-zero-delta"),
    pytest.param(IF(reset="subtract", refractory=2 * ms), Exponential(tau_s=5 * ms), id="if-subtract-ref-exp"),
    pytest.param(LIF(tau_m=20 * ms, reset="subtract"), Alpha(tau_s=5 * ms), id="lif-subtract-alpha"),
    pytest.param(LIF(tau_m=20 * ms, refractory=2 * ms), Delta(), id="lif-zero-ref-delta"),
    pytest.param(SRM(tau_s=5 * ms, tau_r=2 * ms), Delta(), id="srm"),
]


@pytest.fixture(scope="module")
def mnist():
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test")
    return ds.images, ds.labels


def network(arch, images, neuron, synapse):
    graph = scale_to_spike(random_graph(arch, seed=11), images[:50], target=1.0)
    graph = graph.with_models(neuron=neuron, synapse=synapse)
    factor = 0.1 if isinstance(neuron, SRM) else 0.5 if isinstance(neuron, LIF) else 1.0
    for layer in graph.spiking_layers:
        graph = graph.replace_layer(layer.name, threshold=layer.threshold * factor)
    return graph


def same_counts(a, b) -> None:
    assert list(a.counts) == list(b.counts)
    for name in a.counts:
        np.testing.assert_array_equal(a.counts[name], b.counts[name], err_msg=name)


def test_dynamics_are_brian2_statements():
    """LIF + alpha: Brian2's loop-invariant constants and statement order; on_pre factor; roles."""
    dyn = make_dynamics(LIF(refractory=2 * ms), Alpha(tau_s=5 * ms), 1e-3)
    assert dyn.states == ("v", "I_syn", "x_syn") and dyn.target == "x_syn" and dyn.frozen == ("v",)
    assert dyn.ref_steps == 2 and dyn.readout == "v" and SCHEDULE[0] == "groups"
    assert [s[0] for s in dyn.update][-3:] == ["I_syn", "v", "x_syn"]
    values = np.array(list(dyn.constants.values()))
    for decay in (np.exp(-1 / 20), np.exp(-1 / 5)):  # e^{-dt/tau_m}, e^{-dt/tau_s} are among the propagator's constants
        assert np.isclose(values, decay, rtol=1e-14, atol=0).any()
    np.testing.assert_allclose(dyn.weights(np.array([1.0])), [200.0])
    srm = make_dynamics(SRM(tau_s=5 * ms), Delta(), 1e-4)
    assert srm.readout == "psi + r" and srm.target == "y" and srm.reset == (("r", "-=", "2.0 * theta"),)
    assert not readout_dynamics(SRM(), Delta(), 1e-3).spiking
    with pytest.raises(ValueError, match="SRM"):
        make_dynamics(SRM(), Exponential(), 1e-3)


@pytest.mark.parametrize("neuron,synapse", MODELS)
def test_every_model_event_and_fused_equal_brian2_runtime(mnist, neuron, synapse):
    x, y = mnist[0][:2], mnist[1][:2]
    graph = network("tiny", mnist[0], neuron, synapse)
    cfg = SimConfig(duration=40 * ms, bin=10 * ms, readout="voltage")
    options = {"batch_size": 1} if float(neuron.refractory) > 0 else {}
    ref = b2.simulate(graph, x, y, cfg, **options)
    assert all(c.sum() > 0 for c in ref.counts.values())
    for propagation in ("event", "fused"):
        got = te.simulate(graph, x, y, cfg, dtype="float64", progress=False, propagation=propagation)
        same_counts(ref, got)
        np.testing.assert_allclose(ref.output_v, got.output_v, rtol=0, atol=1e-13)


def test_small_dt_and_integrating_readout(mnist):
    """dt = 0.1 ms, LIF + exponential synapses, with the integrating readout: counts and output potentials."""
    x, y = mnist[0][:2], mnist[1][:2]
    graph = network("tiny", mnist[0], LIF(tau_m=20 * ms), Exponential(tau_s=5 * ms))
    cfg = SimConfig(duration=20 * ms, dt=0.1 * ms, bin=5 * ms, readout="integrate")
    ref = b2.simulate(graph, x, y, cfg)
    out = graph.spiking_layers[-1].name
    assert ref.counts[out].sum() == 0 and ref.counts[graph.spiking_layers[0].name].sum() > 0
    for propagation in ("event", "fused"):
        got = te.simulate(graph, x, y, cfg, dtype="float64", progress=False, propagation=propagation)
        same_counts(ref, got)
        np.testing.assert_array_equal(ref.output_v, got.output_v)
        np.testing.assert_array_equal(ref.predictions(), got.predictions())


def test_fused_equals_event_for_current_input_maxpool_and_recording(mnist):
    """The fused kernel covers current input, the gated max-pool relay and spike-time recording."""
    x, y = mnist[0][:3], mnist[1][:3]
    graph = scale_to_spike(random_graph("4c3-mp2-8c3-p2-10FC", seed=3), mnist[0][:50], target=1.0)
    graph = graph.with_models(neuron=LIF(tau_m=20 * ms, refractory=2 * ms, reset="subtract"), synapse=Delta())
    names = [layer.name for layer in graph.spiking_layers]
    for coding in ("current", "bernoulli"):
        cfg = SimConfig(duration=50 * ms, coding=coding, record_times=(names[0], names[1]))
        ev = te.simulate(graph, x, y, cfg, progress=False, propagation="event")
        fu = te.simulate(graph, x, y, cfg, progress=False, propagation="fused")
        same_counts(ev, fu)
        assert ev.counts[names[1]].sum() > 0
        for name in cfg.record_times:
            for a, b in zip(ev.spike_times[name], fu.spike_times[name]):
                np.testing.assert_array_equal(a, b)
    # the relay repeats each passed spike: pool count = the gate's passes (GatedMaxPool.run)
    pool = graph.spiking_layers[1]
    cfg = SimConfig(duration=50 * ms, record_times=(names[0],))
    fu = te.simulate(graph, x[:1], y[:1], cfg, progress=False, propagation="fused")
    img, nrn, t = fu.spike_times[names[0]]
    spikes = np.zeros((cfg.n_steps, int(np.prod(pool.input_shape))), np.int8)
    spikes[np.rint(t).astype(int), nrn] = 1
    passed = layer_synapses(pool).run(spikes)
    np.testing.assert_array_equal(fu.counts[pool.name][0], passed[:-1].sum(axis=0))


def test_alpha_and_exponential_psp_charge_equal_weight():
    """One input spike of weight w into a non-leaky IF: the charge delivered to v tends to w."""
    for synapse in (Alpha(tau_s=2 * ms), Exponential(tau_s=2 * ms)):
        dyn = make_dynamics(IF(), synapse, 1e-4)
        state = {name: torch.zeros(1, 1, dtype=torch.float64) for name in dyn.states}
        state[dyn.target] += float(dyn.weights(np.array([0.7]))[0])
        from bioconv.engines.torch_models import step

        for t in range(2000):  # 200 ms = 100 tau_s
            step(dyn, state, torch.zeros(1, 1, dtype=torch.float64), torch.full((1, 1), 1e9, dtype=torch.float64),
                 None, t)
        assert abs(float(state["v"]) - 0.7) < 1e-9, synapse


@pytest.mark.slow
@pytest.mark.standalone
@pytest.mark.parametrize("neuron,synapse", [
    pytest.param(IF(reset="subtract", refractory=2 * ms), Exponential(tau_s=5 * ms), id="if-ref-exp"),
    pytest.param(LIF(tau_m=20 * ms, reset="subtract"), Alpha(tau_s=5 * ms), id="lif-alpha"),
    pytest.param(SRM(tau_s=5 * ms, tau_r=2 * ms), Delta(), id="srm"),
])
def test_model_families_vs_cpp_standalone(mnist, neuron, synapse):
    """One cpp_standalone compile per model family (the IF/LIF-delta builds are in test_engine_agreement)."""
    x, y = mnist[0][:2], mnist[1][:2]
    graph = network("tiny", mnist[0], neuron, synapse)
    cfg = SimConfig(duration=40 * ms, bin=10 * ms, readout="voltage")
    options = {"batch_size": 1} if float(neuron.refractory) > 0 else {"batch_size": 2}
    ref = b2.simulate(graph, x, y, cfg, device="cpp", workers=1, **options)
    got = te.simulate(graph, x, y, cfg, dtype="float64", progress=False)
    same_counts(ref, got)
    np.testing.assert_array_equal(ref.output_v, got.output_v)
