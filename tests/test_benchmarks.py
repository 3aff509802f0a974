"""``bioconv bench torch`` end to end on a few images: it runs every mode, prints the ratios and
reports the spike-count agreement it measured (exact for the float64 modes)."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest


@pytest.mark.standalone
@pytest.mark.parametrize("pools", ["fold"])
def test_bench_torch_small(capsys, mnist_dir, pools):
    from bioconv.benchmarks import torch_bench

    args = argparse.Namespace(ckpt=None, n=6, duration="30ms", dt="1ms", workers=1, device="cpu",
                              data_dir=str(mnist_dir), pools=pools, configs=True)
    assert torch_bench.main(args) == 0
    out = capsys.readouterr().out
    assert "pools folded" in out
    for row in list(torch_bench._configs()) + ["IF subtract, gated max-pool", "IF subtract, residual Add"]:  # one row per configuration
        assert re.search(rf"{re.escape(row)}\s+[\d.]+\s+[\d.]+x\s+[\d.]+", out), row
    for mode in ("float64 (fused)", "float32 (fused)", "float32 (dense)", "float64 (event)"):
        assert re.search(rf"torch {re.escape(mode)}\s+[\d.]+\s+[\d.]+x", out), out
    agreement = {m.group(1): float(m.group(2))
                 for m in re.finditer(r"identical spike counts, torch (\w+ \w+) vs brian2 cpp: ([\d.]+) of", out)}
    assert set(agreement) == {"float64 fused", "float32 fused", "float32 dense", "float64 event"}, out
    assert agreement["float64 fused"] == 1.0 and agreement["float64 event"] == 1.0, out
    assert min(agreement.values()) >= 0.999, out


def test_maxpool_network_replaces_the_first_average_pool():
    from bioconv import ir
    from bioconv.benchmarks.brian2_bench import random_cnn7
    from bioconv.benchmarks.torch_bench import maxpool_network

    spiking = random_cnn7()
    pools = [layer for layer in spiking.layers if isinstance(layer, ir.AvgPool2d)]
    folded = maxpool_network(spiking, "fold")
    kinds = {layer.name: type(layer) for layer in folded.layers}
    assert kinds[pools[0].name] is ir.MaxPool2d
    assert not any(isinstance(layer, ir.AvgPool2d) for layer in folded.layers)  # the others folded
    kept = maxpool_network(spiking, "spiking")
    assert [type(layer) for layer in kept.layers].count(ir.AvgPool2d) == len(pools) - 1


def test_residual_network_adds_a_skip_around_a_hidden_conv():
    """The Add's activation is ReLU(L's convolution + half the k×k average of L's input)."""
    import numpy as np

    from bioconv import ir
    from bioconv.benchmarks.brian2_bench import random_cnn7
    from bioconv.benchmarks.torch_bench import residual_network
    from bioconv.pool_folding import prepare_pools

    graph = prepare_pools(random_cnn7(), "fold")
    res = residual_network(graph)
    add = next(layer for layer in res.layers if isinstance(layer, ir.Add))
    conv, skip = (res.layer(name) for name in add.inputs)
    assert graph.is_sequential and not res.is_sequential
    assert skip.groups == skip.input_shape[0] and not conv.spiking and not skip.spiking
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 28, 28))
    a, b = graph.forward(x), res.forward(x)
    np.testing.assert_allclose(np.maximum(b[conv.name], 0), a[add.name], rtol=1e-12)  # the same convolution
    src, k = a[graph.sources(add.name)[0]], skip.stride[0]
    n, c, h, w = src.shape
    pooled = src.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))
    np.testing.assert_allclose(b[add.name], np.maximum(b[conv.name] + 0.5 * pooled, 0), rtol=1e-9, atol=1e-12)
    assert res.layers[-1].name == graph.layers[-1].name


@pytest.mark.parametrize("coding", ["current", "bernoulli"])
def test_peer_bench_bioconv_side_runs_in_both_precisions(mnist_dir, coding):
    """The bioconv half of ``bench peer`` (SpikingJelly itself is an optional extra): float64 and
    float32 runs of the same max-norm IF-subtract job agree on nearly every prediction."""
    import torch

    from bioconv.ann import build_model
    from bioconv.benchmarks.peer_bench import _bioconv, interleaved
    from bioconv.data import load_dataset

    torch.manual_seed(0)
    model = build_model("8c3-p2-8c3-p2-10FC", (1, 28, 28), 10).eval()
    meta = {"input_shape": [1, 28, 28]}
    train, test = load_dataset("mnist", "train", str(mnist_dir)), load_dataset("mnist", "test", str(mnist_dir))
    jobs = {d: _bioconv(model, meta, train.images[:50], 30, 10, coding, d) for d in ("float64", "float32")}
    runs = interleaved(jobs, test.images[:20], test.labels[:20], 10, repeats=2)
    assert list(runs) == ["float64", "float32"]
    for acc, rate in runs.values():
        assert 0.0 <= acc <= 1.0 and rate > 0
    assert abs(runs["float64"][0] - runs["float32"][0]) <= 0.1, runs


def test_peer_bench_interleaves_the_engines_and_keeps_each_ones_best_round():
    """Warm-up batches first, then rounds that time every engine once in turn (so a drift of the
    machine's speed hits all engines alike); each engine's best round gives its images/s."""
    import time

    from bioconv.benchmarks.peer_bench import interleaved

    calls = []
    delays = {"a": [0.0, 0.05, 0.01, 0.03], "b": [0.0, 0.02, 0.04, 0.06]}  # warm-up, then 3 rounds

    def job(name):
        def run(images, labels):
            calls.append((name, len(images)))
            time.sleep(delays[name][sum(c[0] == name for c in calls) - 1])
            return 0.5
        return run

    images, labels = np.zeros((8, 1)), np.zeros(8, int)
    out = interleaved({"a": job("a"), "b": job("b")}, images, labels, batch=2, repeats=3)
    assert calls == [("a", 2), ("b", 2)] + [("a", 8), ("b", 8)] * 3
    assert out["a"][0] == 0.5 and out["b"][0] == 0.5
    assert 8 / 0.01 * 0.5 < out["a"][1] <= 8 / 0.01  # best round of a: 0.01 s (sleep overshoot allowed)
    assert 8 / 0.02 * 0.5 < out["b"][1] <= 8 / 0.02
