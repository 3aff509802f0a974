"""``bioconv bench torch`` end to end on a few images: it runs every mode, prints the ratios and
reports the spike-count agreement it measured (exact for the float64 modes)."""

from __future__ import annotations

import argparse
import re

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
    for row in list(torch_bench._configs()) + ["IF subtract, gated max-pool"]:  # one row per configuration
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
