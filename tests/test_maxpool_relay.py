"""The spiking max-pool passes its winning input's rate (relay), identically in the torch and Brian2 engines."""

from __future__ import annotations

import numpy as np
import pytest
from brian2 import ms

from bioconv import ir
from bioconv.engines import brian2 as b2
from bioconv.engines import torch as te
from bioconv.neurons import IF, LIF
from bioconv.simulation import SimConfig
from bioconv.synapses import Delta


def _pool_graph(neuron, rates_per_step=(0.11, 0.23, 0.37, 0.19)) -> ir.Graph:
    """Four bias-driven conv neurons (rates ≈ bias·dt/θ) in one 2×2 max-pool window, then a readout."""
    n = len(rates_per_step)
    # bias 1 adds 1 to v per step (dt = τ = 1 ms); θ = 1/rate gives each neuron its rate per step
    theta = (1.0 / np.asarray(rates_per_step)).reshape(1, 2, 2)
    conv = ir.Conv2d("conv", (1, 2, 2), np.zeros((1, 1, 1, 1)), np.array([1.0]), threshold=theta)
    pool = ir.MaxPool2d("pool", (1, 2, 2), 2, 2)
    flat = ir.Flatten("flat", (1, 1, 1))
    out = ir.Dense("out", np.ones((1, 1)), np.zeros(1))
    assert n == 4
    return ir.Graph(ir.Input((1, 2, 2)), (conv, pool, flat, out), neuron=neuron, synapse=Delta())


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_pool_rate_equals_winner_rate(reset):
    graph = _pool_graph(IF(reset=reset))
    cfg = SimConfig(duration=1000 * ms, record_times=("conv", "pool"))
    x = np.zeros((1, 1, 2, 2))
    res = te.simulate(graph, x, np.zeros(1), cfg, propagation="event", progress=False)
    conv, pool = res.counts["conv"][0], res.counts["pool"][0]
    assert 300 < conv.max() < 500  # the winner fires at a few hundred Hz
    assert abs(pool[0] - conv.max()) <= 0.02 * conv.max()
    # one for one, one step later: the pool's spike times are the winner's plus dt
    (_, i_c, t_c), (_, _, t_p) = res.spike_times["conv"], res.spike_times["pool"]
    winner = t_c[i_c == int(conv.argmax())]
    np.testing.assert_allclose(t_p, (winner + 1.0)[winner + 1.0 < 1000.0])


@pytest.mark.parametrize("neuron", [IF(reset="zero"), IF(reset="subtract"), LIF(tau_m=20 * ms)],
                         ids=["if-zero", "if-subtract", "lif"])
def test_relay_independent_of_neuron_model(neuron):
    """A LIF graph's pool is still a relay (no leak): its count equals the max input count."""
    graph = _pool_graph(neuron)
    res = te.simulate(graph, np.zeros((1, 1, 2, 2)), np.zeros(1), SimConfig(duration=400 * ms),
                      propagation="event", progress=False)
    conv, pool = res.counts["conv"][0], res.counts["pool"][0]
    assert conv.max() - 1 <= pool[0] <= conv.max()


def test_pool_spikes_identical_in_brian2_with_changing_winner(rng):
    """Random conv weights and Bernoulli input: the winner changes; Brian2 and torch give the same spikes."""
    conv = ir.Conv2d("conv", (1, 6, 6), rng.normal(0.3, 0.4, (3, 1, 3, 3)), rng.normal(0.0, 20.0, 3), padding=1)
    pool = ir.MaxPool2d("pool", (3, 6, 6), 2, 2)
    flat = ir.Flatten("flat", (3, 3, 3))
    out = ir.Dense("out", rng.normal(0, 0.5, (4, 27)), np.zeros(4))
    graph = ir.Graph(ir.Input((1, 6, 6), rate_scale=500.0), (conv, pool, flat, out), neuron=IF(), synapse=Delta())
    x = rng.uniform(0, 1, (2, 1, 6, 6))
    cfg = SimConfig(duration=80 * ms, record_times=("pool",))
    t = te.simulate(graph, x, np.zeros(2), cfg, propagation="event", progress=False)
    b = b2.simulate(graph, x, np.zeros(2), cfg, device="runtime")
    assert t.counts["pool"].sum() > 50
    for name in ("conv", "pool", "out"):
        np.testing.assert_array_equal(t.counts[name], b.counts[name])
    for k in range(3):
        np.testing.assert_array_equal(t.spike_times["pool"][k], b.spike_times["pool"][k])
    # the pool's count is the window's max count (minus spikes still in flight at the end)
    win_max = t.counts["conv"].reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)).reshape(2, -1)
    assert np.all(t.counts["pool"] <= win_max) and np.all(t.counts["pool"] >= win_max - 1)
