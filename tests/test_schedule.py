"""Schedules (:data:`bioconv.models.SCHEDULES`): Brian2's order and ``"reset-first"``, in every engine.

With reset to zero and delta synapses, Brian2's default order (thresholds → synapses →
resets) erases the input that arrives in the step in which a neuron fires; ``"reset-first"``
keeps it. Both are checked against hand-computed spike times, and every engine against
Brian2 itself (which runs ``"reset-first"`` through ``Network.schedule``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brian2 import ms

from bioconv import ir
from bioconv.engines import brian2 as b2
from bioconv.engines import torch as te
from bioconv.graphio import GraphFileError, load_graph, save_graph
from bioconv.models import SCHEDULES, brian2_schedule, make_dynamics
from bioconv.neurons import IF, LIF, SRM
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta
from engine_helpers import random_graph, scale_to_spike

torch.set_num_threads(1)


def one_neuron(schedule: str, reset: str = "zero") -> ir.Graph:
    """An input neuron that fires every step (1000 Hz at dt = 1 ms) onto one IF neuron, w = 0.3, θ = 1."""
    layer = ir.Dense(name="out", weight=np.array([[0.3]]), bias=np.zeros(1))
    graph = ir.Graph(ir.Input((1,), rate_scale=1000.0), (layer,), IF(reset=reset), Delta())
    return graph.with_models(schedule=schedule)


# v after each step's input: 0.3, 0.6, 0.9, 1.2; the threshold sees 1.2 in step 4.
# Brian2's order: step 4 spikes, its input (→ 1.5) is erased by the reset: a spike every 5 steps.
# reset-first: step 4 spikes, resets, then takes its input (→ 0.3): a spike every 4 steps.
EXPECTED_TIMES = {"brian2": np.arange(4, 100, 5), "reset-first": np.arange(4, 100, 4)}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_reset_to_zero_spike_times_by_hand(schedule):
    graph = one_neuron(schedule)
    x, y = np.ones((1, 1)), np.zeros(1, dtype=np.int64)
    cfg = SimConfig(duration=100 * ms, record_times=("out",))
    for propagation in ("event", "fused"):
        res = te.simulate(graph, x, y, cfg, dtype="float64", progress=False, propagation=propagation)
        _, _, steps = res.spike_times["out"]
        np.testing.assert_array_equal(np.rint(steps).astype(int), EXPECTED_TIMES[schedule], err_msg=propagation)
    ref = b2.simulate(graph, x, y, cfg)
    assert int(ref.counts["out"].sum()) == len(EXPECTED_TIMES[schedule])


def test_subtract_reset_is_the_same_in_both_schedules():
    """Reset by subtraction commutes with the synaptic addition: same spikes in both orders."""
    x, y = np.ones((1, 1)), np.zeros(1, dtype=np.int64)
    cfg = SimConfig(duration=100 * ms)
    counts = [te.simulate(one_neuron(s, "subtract"), x, y, cfg, progress=False).counts["out"] for s in SCHEDULES]
    np.testing.assert_array_equal(counts[0], counts[1])


@pytest.mark.parametrize("neuron,synapse", [
    pytest.param(IF(reset="zero"), Delta(), id="if-zero-delta"),
    pytest.param(LIF(tau_m=20 * ms, refractory=2 * ms), Delta(), id="lif-zero-ref-delta"),
    pytest.param(IF(reset="zero"), Alpha(tau_s=5 * ms), id="if-zero-alpha"),
    pytest.param(SRM(tau_s=5 * ms, tau_r=2 * ms), Delta(), id="srm"),
])
def test_reset_first_every_engine_equals_brian2_runtime(neuron, synapse):
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test")
    x, y = ds.images[:2], ds.labels[:2]
    graph = scale_to_spike(random_graph("4c3-mp2-8c3-p2-10FC", seed=3), ds.images[:50], target=1.0)
    factor = 0.1 if isinstance(neuron, SRM) else 0.5 if isinstance(neuron, LIF) else 1.0
    for layer in graph.spiking_layers:
        if not isinstance(layer, ir.MaxPool2d):
            graph = graph.replace_layer(layer.name, threshold=layer.threshold * factor)
    graph = graph.with_models(neuron=neuron, synapse=synapse, schedule="reset-first")
    cfg = SimConfig(duration=40 * ms, bin=10 * ms, readout="voltage")
    options = {"batch_size": 1} if float(getattr(neuron, "refractory", 0)) > 0 else {}
    ref = b2.simulate(graph, x, y, cfg, **options)
    assert all(c.sum() > 0 for c in ref.counts.values())
    brian2_order = te.simulate(graph.with_models(schedule="brian2"), x, y, cfg, dtype="float64", progress=False)
    if isinstance(neuron, IF) and isinstance(synapse, Delta):  # the one case where the order matters here
        assert any(np.any(brian2_order.counts[k] != ref.counts[k]) for k in ref.counts)
    for propagation in ("event", "fused"):
        got = te.simulate(graph, x, y, cfg, dtype="float64", progress=False, propagation=propagation)
        for name in ref.counts:
            np.testing.assert_array_equal(ref.counts[name], got.counts[name], err_msg=f"{propagation} {name}")
        np.testing.assert_allclose(ref.output_v, got.output_v, rtol=0, atol=1e-13)


def test_schedule_is_validated_stored_and_named():
    assert brian2_schedule("reset-first") == ["start", "groups", "thresholds", "resets", "synapses", "end"]
    assert make_dynamics(IF(), Delta(), 1e-3, "reset-first").reset_first
    assert not make_dynamics(IF(), Delta(), 1e-3).reset_first
    with pytest.raises(ValueError, match="unknown schedule 'resets-first'"):
        one_neuron("resets-first")
    with pytest.raises(ValueError, match="unknown schedule"):
        make_dynamics(IF(), Delta(), 1e-3, "nope")


def test_schedule_round_trips_through_bcv(tmp_path):
    path = save_graph(one_neuron("reset-first"), tmp_path / "g.bcv")
    assert load_graph(path).schedule == "reset-first"
    # a file written before schedules existed reads as Brian2's order
    import json
    import zipfile

    with np.load(path) as data:
        doc = json.loads(bytes(data["graph.json"]).decode())
        arrays = {k: data[k] for k in data.files if k != "graph.json"}
    for value, expect in ((None, "brian2"), ("sideways", None)):
        doc.pop("schedule", None)
        if value is not None:
            doc["schedule"] = value
        payload = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **{"graph.json": payload}, **arrays)
        if expect is None:
            with pytest.raises(GraphFileError, match="unknown schedule 'sideways'"):
                load_graph(path)
        else:
            assert load_graph(path).schedule == expect
    assert zipfile.is_zipfile(path)


@pytest.mark.slow
@pytest.mark.standalone
def test_reset_first_cpp_standalone_weight_shared_equals_torch():
    """cpp_standalone (weight-shared conv synapses, Network.schedule) under "reset-first" equals the torch engine."""
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test")
    x, y = ds.images[:2], ds.labels[:2]
    graph = scale_to_spike(random_graph("4c3-mp2-8c3-p2-10FC", seed=3), ds.images[:50], target=1.0)
    graph = graph.with_models(neuron=IF(reset="zero"), synapse=Delta(), schedule="reset-first")
    cfg = SimConfig(duration=40 * ms, bin=10 * ms)
    ref = b2.simulate(graph, x, y, cfg, device="cpp", workers=1, conv="procedural")
    got = te.simulate(graph, x, y, cfg, dtype="float64", progress=False)
    for name in ref.counts:
        np.testing.assert_array_equal(ref.counts[name], got.counts[name], err_msg=name)
