"""The fused kernel on graphs with several inputs per layer: the event path's counts, spike for spike.

The graph (``_dag`` of test_graph_normalize) has a Concat read by a conv layer, a residual Add
whose branches read different populations, and signed input (the ``_neg`` pathway). Both
engines deliver the projections of a population in :func:`bioconv.projections.projections`
order, so float64 counts must be identical for every model and both schedules.
"""

from __future__ import annotations

import numpy as np
import pytest
from brian2 import Hz, ms

from bioconv.engines import fused
from bioconv.engines import torch as te
from bioconv.neurons import IF, LIF, SRM
from bioconv.normalize import activation_stats, max_norm
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta
from test_graph_normalize import _dag

MODELS = [
    pytest.param(IF(reset="zero"), Delta(), id="if-zero"),
    pytest.param(IF(reset="subtract"), Alpha(tau_s=2 * ms), id="if-subtract-alpha"),
    pytest.param(LIF(tau_m=20 * ms, refractory=2 * ms), Delta(), id="lif-refractory"),
    pytest.param(SRM(tau_s=1 * ms, tau_r=2 * ms), Delta(), id="srm"),
]


@pytest.fixture(scope="module")
def dag():
    rng = np.random.default_rng(3)
    graph = _dag(rng)
    x = rng.uniform(-0.3, 1.0, (3, 1, 6, 6))
    return max_norm(graph, activation_stats(graph, np.abs(x)), target_rate=300 * Hz, input_rate=300 * Hz), x


@pytest.mark.parametrize("schedule", ["brian2", "reset-first"])
@pytest.mark.parametrize("neuron,synapse", MODELS)
def test_fused_equals_event_on_a_dag(dag, neuron, synapse, schedule):
    graph, x = dag
    graph = graph.with_models(neuron=neuron, synapse=synapse, schedule=schedule)
    if isinstance(neuron, SRM):  # the SRM does not integrate: lower thresholds so every layer spikes
        for layer in graph.spiking_layers:
            graph = graph.replace_layer(layer.name, threshold=layer.threshold * 0.2)
    cfg = SimConfig(duration=60 * ms, record_times=("res",))
    assert fused.unsupported(graph, cfg) is None
    ev = te.simulate(graph, x, np.zeros(len(x)), cfg, propagation="event", progress=False)
    fu = te.simulate(graph, x, np.zeros(len(x)), cfg, propagation="fused", progress=False)
    assert min(int(c.sum()) for c in ev.counts.values()) > 0, {k: int(c.sum()) for k, c in ev.counts.items()}
    for name, counts in ev.counts.items():
        np.testing.assert_array_equal(fu.counts[name], counts, err_msg=name)
    def ordered(times):  # (image, neuron, t) sorted by image, then time, then neuron
        img, nrn, t = times
        order = np.lexsort((nrn, t, img))
        return np.stack([img[order], nrn[order], t[order]])

    np.testing.assert_array_equal(ordered(fu.spike_times["res"]), ordered(ev.spike_times["res"]))


def test_current_input_feeding_a_later_layer_is_named(dag):
    graph, _ = dag
    graph = graph.with_models(neuron=IF(), synapse=Delta())
    why = fused.unsupported(graph, SimConfig(duration=10 * ms, coding="current"))
    assert why is not None and "input also feeding ['b']" in why
