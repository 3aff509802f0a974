"""brian2cuda code generation of a residual Add, a Concat and the gated max-pool (run in .venv-cuda)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

import brian2cuda  # noqa: E402,F401  -- this file runs only in .venv-cuda


def _graph():
    from bioconv import ir
    from bioconv.neurons import IF
    from bioconv.synapses import Delta

    rng = np.random.default_rng(0)
    c1 = ir.Conv2d("c1", (1, 8, 8), rng.normal(0, .8, (4, 1, 3, 3)), np.zeros(4), padding=1)
    b1 = ir.Conv2d("b1", (4, 8, 8), rng.normal(0, .3, (4, 4, 3, 3)), np.zeros(4), padding=1, spiking=False)
    skip = ir.Conv2d("skip", (4, 8, 8), np.ones((4, 1, 1, 1)), np.zeros(4), groups=4, inputs=("c1",), spiking=False)
    add = ir.Add("add1", (4, 8, 8), ("b1", "skip"))
    mp = ir.MaxPool2d("mp", (4, 8, 8), 2, 2)
    ap = ir.AvgPool2d("ap", (4, 8, 8), 2, 2, inputs=("c1",))
    cat = ir.Concat("cat", ((4, 4, 4), (4, 4, 4)), ("mp", "ap"))
    fl = ir.Flatten("fl", (8, 4, 4))
    fc = ir.Dense("fc", rng.normal(0, .2, (5, 128)), np.zeros(5))
    return ir.Graph(ir.Input((1, 8, 8), rate_scale=300.0), (c1, b1, skip, add, mp, ap, cat, fl, fc),
                    neuron=IF(), synapse=Delta())


def test_residual_concat_and_maxpool_generate(tmp_path):
    from brian2 import ms

    from bioconv.engines.brian2 import Simulator
    from bioconv.engines.cuda_build import kernels
    from bioconv.simulation import SimConfig

    sim = Simulator(_graph(), SimConfig(duration=10 * ms), device="cuda", build_dir=tmp_path / "p", batch_size=2)
    directory = sim.build(compile=False)
    found = set(kernels(directory))
    for syn in ("b1_syn", "skip_syn", "mp_syn", "ap_syn", "fc_syn_mp", "fc_syn_ap"):
        assert f"_run_kernel_{syn}_pre_codeobject" in found, syn
    assert "_run_kernel_mp_syn_image_reset_codeobject" in found  # the gate's counts are reset per image
    code = (directory / "code_objects" / "mp_syn_pre_codeobject.cu").read_text()
    assert "cmax" in code and "winner" in code
    assert set(sim.manifest["params"]) >= {"b1_syn.w", "skip_syn.w", "fc_syn_mp.w", "fc_syn_ap.w", "add1.I_bias"}
