"""Grouped / dilated / padded convolutions and multi-input projections against torch.nn.functional."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioconv import ir, projections
from bioconv.connectivity import fan_in, layer_synapse_count, layer_synapses, layer_weights
from bioconv.forward import conv2d


CASES = [  # (c_in, c_out, kernel, stride, padding, groups, dilation, padding_mode)
    (4, 4, 3, 1, 1, 4, 1, "zeros"),       # depthwise
    (4, 6, 3, 2, 2, 2, 2, "zeros"),       # grouped + dilated + strided
    (3, 5, 3, 1, 1, 1, 1, "reflect"),
    (3, 2, 3, 2, 1, 1, 1, "replicate"),
    (2, 4, 5, 1, 2, 2, 1, "circular"),
    (2, 3, 2, 1, 0, 1, 3, "zeros"),
]


def _torch_conv(x, layer):
    t = torch.from_numpy(x)
    pad = layer.padding
    if layer.padding_mode != "zeros":
        t = F.pad(t, (pad[1], pad[1], pad[0], pad[0]), mode=layer.padding_mode)
        pad = (0, 0)
    return F.conv2d(t, torch.from_numpy(layer.weight), torch.from_numpy(layer.bias), stride=layer.stride,
                    padding=pad, dilation=layer.dilation, groups=layer.groups).numpy()


@pytest.mark.parametrize("case", CASES)
def test_conv_synapses_and_forward_match_torch(case, rng):
    c_in, c_out, k, s, p, g, d, mode = case
    layer = ir.Conv2d("c", (c_in, 9, 8), rng.normal(size=(c_out, c_in // g, k, k)), rng.normal(size=c_out),
                      stride=s, padding=p, groups=g, dilation=d, padding_mode=mode)
    x = rng.normal(size=(2, c_in, 9, 8))
    ref = _torch_conv(x, layer)
    assert ref.shape[1:] == layer.output_shape
    conn = layer_synapses(layer)
    got = conn.matvec(x.reshape(2, -1)) + np.repeat(layer.bias, int(np.prod(layer.output_shape[1:])))
    np.testing.assert_allclose(got, ref.reshape(2, -1), atol=1e-10)
    np.testing.assert_allclose(conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, g, layer.dilation,
                                      mode), ref, atol=1e-10)
    np.testing.assert_array_equal(layer_weights(layer), conn.w)
    assert layer_synapse_count(layer) == len(conn)
    np.testing.assert_array_equal(fan_in(layer), np.bincount(conn.j, minlength=conn.n_post))


def test_projections_split_a_concat(rng):
    a = ir.Conv2d("a", (1, 4, 4), rng.normal(size=(2, 1, 1, 1)), np.zeros(2))
    b = ir.Conv2d("b", (1, 4, 4), rng.normal(size=(3, 1, 1, 1)), np.zeros(3), inputs=("input",))
    cat = ir.Concat("cat", ((2, 4, 4), (3, 4, 4)), ("a", "b"))
    c = ir.Conv2d("c", (5, 4, 4), rng.normal(size=(2, 5, 3, 3)), np.ones(2), padding=1)
    graph = ir.Graph(ir.Input((1, 4, 4)), (a, b, cat, c))
    projs = projections.projections(graph, "c")
    assert [(p.name, p.source, p.synapses.n_pre) for p in projs] == [("c_syn_a", "a", 32), ("c_syn_b", "b", 48)]
    acts = rng.uniform(size=(1, 80))
    whole = layer_synapses(c).matvec(acts)
    parts = projs[0].synapses.matvec(acts[:, :32]) + projs[1].synapses.matvec(acts[:, 32:])
    np.testing.assert_allclose(parts, whole)
    weights = projections.projection_weights(graph, "c")
    np.testing.assert_array_equal(weights["c_syn_b"], projs[1].synapses.w)


def test_add_bias_is_the_sum_of_branch_biases(rng):
    c = ir.Conv2d("c", (1, 3, 3), rng.normal(size=(2, 1, 1, 1)), np.array([1.0, 2.0]))
    b1 = ir.Conv2d("b1", (2, 3, 3), rng.normal(size=(2, 2, 1, 1)), np.array([0.5, -1.0]), spiking=False)
    b2 = ir.Conv2d("b2", (2, 3, 3), np.ones((2, 1, 1, 1)), np.array([0.25, 0.0]), groups=2, inputs=("c",),
                   spiking=False)
    add = ir.Add("add", (2, 3, 3), ("b1", "b2"))
    graph = ir.Graph(ir.Input((1, 3, 3)), (c, b1, b2, add))
    np.testing.assert_array_equal(projections.bias(graph, "add"), np.repeat([0.75, -1.0], 9))
    assert [p.name for p in projections.projections(graph, "add")] == ["b1_syn", "b2_syn"]


@pytest.mark.parametrize("build, match", [
    (lambda c, rng: (c, ir.Dense("d", rng.normal(size=(2, 4)), np.zeros(2), spiking=False)), "feed exactly one Add"),
    (lambda c, rng: (c, ir.Add("add", (4,), ("c",))), "must be a branch layer"),
    (lambda c, rng: (c, ir.Dense("d", rng.normal(size=(2, 4)), np.zeros(2), inputs=("nope",))), "reads 'nope'"),
])
def test_graph_refuses_bad_wiring(build, match, rng):
    c = ir.Dense("c", rng.normal(size=(4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=match):
        ir.Graph(ir.Input((3,)), build(c, rng))
