"""The IR (shape checks, thresholds, numpy forward) and the .bcv graph file (exact round trip, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from brian2 import ms

from bioconv import ir
from bioconv.graphio import FORMAT_VERSION, GraphFileError, load_graph, save_graph
from bioconv.neurons import IF, LIF
from bioconv.synapses import Alpha

REPO = Path(__file__).resolve().parents[1]


def conv(name="conv1", cin=2, cout=3, k=3, shape=(2, 6, 6), rng=None, **kw):
    rng = rng or np.random.default_rng(0)
    return ir.Conv2d(name, shape, rng.normal(size=(cout, cin, k, k)), rng.normal(size=cout), **kw)


def small_graph(rng) -> ir.Graph:
    """Every layer type, every threshold kind, non-default models and metadata."""
    c1 = conv("conv1", 2, 3, 3, (2, 6, 6), rng, stride=1, padding=1, threshold=np.array([1.0, 2.0, 0.5]))
    p1 = ir.AvgPool2d("pool1", (3, 6, 6), 2, 2, scale=1.25, threshold=0.8)
    c2 = ir.Conv2d("conv2", (3, 3, 3), rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
                   rng.normal(size=4).astype(np.float32), threshold=rng.uniform(0.5, 2, size=(4, 2, 2)))
    p2 = ir.MaxPool2d("pool2", (4, 2, 2), (2, 2), (1, 1), threshold=np.ones(4))
    fl = ir.Flatten("flatten", (4, 1, 1))
    d1 = ir.Dense("fc1", rng.normal(size=(5, 4)), rng.normal(size=5), threshold=1.5)
    return ir.Graph(ir.Input((2, 6, 6), rate_scale=400.0), (c1, p1, c2, p2, fl, d1), neuron=IF(reset="subtract"),
                    synapse=Alpha(tau_s=2 * ms), layer_neurons={"conv2": LIF(tau_m=10 * ms, refractory=1 * ms)},
                    meta={"norm": "mcr", "lambda": [1.5, 2.25], "nested": {"gains": {"conv1": 1.1}}, "ok": True})


# --- layer validation ------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda r: ir.Conv2d("c", (2, 6, 6), r.normal(size=(3, 2, 3)), r.normal(size=3)), "must be 4-D"),
    (lambda r: ir.Conv2d("c", (4, 6, 6), r.normal(size=(3, 2, 3, 3)), r.normal(size=3)), "does not match weight"),
    (lambda r: ir.Conv2d("c", (2, 6), r.normal(size=(3, 2, 3, 3)), r.normal(size=3)), "does not match weight"),
    (lambda r: ir.Conv2d("c", (2, 6, 6), r.normal(size=(3, 2, 3, 3)), r.normal(size=4)), "bias shape"),
    (lambda r: ir.Conv2d("c", (2, 2, 2), r.normal(size=(3, 2, 3, 3)), r.normal(size=3)), "kernel larger"),
    (lambda r: conv(rng=r, threshold=np.ones(5)), "threshold shape"),
    (lambda r: conv(rng=r, threshold=0.0), "must be finite and > 0"),
    (lambda r: conv(rng=r, threshold=np.array([1.0, np.nan, 1.0])), "must be finite and > 0"),
    (lambda r: conv(rng=r, stride=(1, 2, 3)), "stride must be"),
    (lambda r: conv(rng=r, padding=1.5), "padding must be"),
    (lambda r: ir.Conv2d("c", (2, 6, 6), np.full((3, 2, 3, 3), np.nan), r.normal(size=3)), "NaN or inf"),
    (lambda r: ir.Dense("d", r.normal(size=5), r.normal(size=5)), "must be 2-D"),
    (lambda r: ir.Dense("d", r.normal(size=(5, 4)), r.normal(size=4)), "bias shape"),
    (lambda r: ir.Dense("d", r.normal(size=(5, 4)), np.array([0, 0, np.inf, 0, 0.0])), "NaN or inf"),
    (lambda r: ir.Dense("d", r.normal(size=(5, 4)), r.normal(size=5), threshold=np.ones(4)), "threshold shape"),
    (lambda r: ir.AvgPool2d("p", (3, 4), 2, 2), r"\(C, H, W\)"),
    (lambda r: ir.AvgPool2d("p", (3, 4, 4), 5, 1), "larger than input"),
    (lambda r: ir.AvgPool2d("p", (3, 4, 4), 2, 2, scale=np.inf), "scale must be finite"),
    (lambda r: ir.MaxPool2d("p", (3, 1, 4), 2, 2), "larger than input"),
    (lambda r: ir.MaxPool2d("p", (3, 4, 4), 2, 2, threshold=-1.0), "> 0"),
    (lambda r: ir.Input((1, 0, 28)), "must be positive"),
    (lambda r: ir.Input(()), "must be positive"),
    (lambda r: ir.Input((1, 28, 28), rate_scale=0.0), "rate_scale"),
    (lambda r: ir.Input((1, 28, 28), rate_scale=float("nan")), "rate_scale"),
])
def test_layer_errors(make, match, rng):
    with pytest.raises(ValueError, match=match):
        make(rng)


def test_output_shapes(rng):
    assert conv(rng=rng).output_shape == (3, 4, 4)
    assert conv(rng=rng, padding=1).output_shape == (3, 6, 6)
    assert conv(rng=rng, stride=2, padding=1, shape=(2, 7, 7)).output_shape == (3, 4, 4)
    assert ir.AvgPool2d("p", (3, 7, 7), 2, 2).output_shape == (3, 3, 3)
    assert ir.MaxPool2d("p", (3, 7, 7), 3, 1).output_shape == (3, 5, 5)
    assert ir.Flatten("f", (3, 2, 2)).output_shape == (12,)
    assert ir.Dense("d", rng.normal(size=(5, 12)), np.zeros(5)).input_shape == (12,)
    th = conv(rng=rng, threshold=np.ones((3, 4, 4)))  # per-neuron thresholds are accepted
    assert th.threshold.shape == (3, 4, 4)


def test_graph_errors(rng):
    c = conv(rng=rng)
    inp = ir.Input((2, 6, 6))
    with pytest.raises(ValueError, match="at least one layer"):
        ir.Graph(inp, ())
    with pytest.raises(ValueError, match="unique"):
        ir.Graph(inp, (c, ir.AvgPool2d("conv1", (3, 4, 4))))
    with pytest.raises(ValueError, match="unique"):
        ir.Graph(inp, (conv("input", rng=rng),))
    with pytest.raises(ValueError, match="shape mismatch at layer 'fc1'"):
        ir.Graph(inp, (c, ir.Flatten("flatten", (3, 4, 4)), ir.Dense("fc1", rng.normal(size=(2, 47)), np.zeros(2))))
    with pytest.raises(ValueError, match="shape mismatch at layer 'conv1'"):
        ir.Graph(ir.Input((1, 6, 6)), (c,))
    with pytest.raises(ValueError, match="not Flatten"):
        ir.Graph(inp, (c, ir.Flatten("flatten", (3, 4, 4))))
    with pytest.raises(ValueError, match="unknown layers"):
        ir.Graph(inp, (c,), layer_neurons={"conv9": IF()})


def test_graph_accessors(rng):
    g = small_graph(rng)
    assert [l.name for l in g.spiking_layers] == ["conv1", "pool1", "conv2", "pool2", "fc1"]
    assert g.output_shape == (5,) and g.layer("pool1").scale == 1.25
    assert g.neuron_for("conv2") == LIF(tau_m=10 * ms, refractory=1 * ms) and g.neuron_for("conv1") == IF("subtract")
    with pytest.raises(KeyError, match="no layer 'nope'"):
        g.layer("nope")
    with pytest.raises(KeyError, match="no layer"):
        g.replace_layer("nope", threshold=2.0)
    g2 = g.replace_layer("fc1", threshold=3.0)
    assert g2.layer("fc1").threshold == 3.0 and g.layer("fc1").threshold == 1.5
    with pytest.raises(ValueError, match="threshold"):
        g.replace_layer("fc1", threshold=-3.0)
    g3 = g.with_models(neuron=IF(), note="x")
    assert g3.neuron == IF() and g3.synapse == g.synapse and g3.meta["note"] == "x" and "note" not in g.meta


# --- numpy forward ---------------------------------------------------------------------------

def test_forward_thresholds_scale_activations(rng):
    c = conv(rng=rng, padding=1)
    th = np.array([0.5, 2.0, 4.0])
    base = ir.Graph(ir.Input((2, 6, 6)), (c, ir.Flatten("f", (3, 6, 6)),
                                          ir.Dense("fc", rng.normal(size=(2, 108)), rng.normal(size=2))))
    folded = base.replace_layer("conv1", weight=c.weight / th[:, None, None, None], bias=c.bias / th)
    with_th = base.replace_layer("conv1", threshold=th)
    x = rng.uniform(0, 1, size=(4, 2, 6, 6))
    a, b = base.forward(x), with_th.forward(x)
    np.testing.assert_allclose(b["conv1"], folded.forward(x)["conv1"], rtol=1e-12)
    np.testing.assert_allclose(b["conv1"], a["conv1"] / th[:, None, None], rtol=1e-12)  # ReLU(z/θ) = ReLU(z)/θ
    assert b["conv1"].min() >= 0 and a["fc"].min() < 0  # the output layer stays linear
    assert base.forward(x, relu_last=True)["fc"].min() >= 0
    assert list(base.forward(x, upto="conv1")) == ["conv1"]
    with pytest.raises(ValueError, match="input batch shape"):
        base.forward(np.zeros((1, 2, 5, 5)))


def test_forward_pools_match_definition(rng):
    x = rng.uniform(0, 1, size=(2, 3, 4, 4))
    avg = ir.Graph(ir.Input((3, 4, 4)), (ir.AvgPool2d("p", (3, 4, 4), 2, 2, scale=2.0),)).forward(x)["p"]
    mx = ir.Graph(ir.Input((3, 4, 4)), (ir.MaxPool2d("p", (3, 4, 4), 2, 2),)).forward(x)["p"]
    blocks = x.reshape(2, 3, 2, 2, 2, 2)
    np.testing.assert_allclose(avg, 2.0 * blocks.mean(axis=(3, 5)))
    np.testing.assert_allclose(mx, blocks.max(axis=(3, 5)))


# --- graph file ------------------------------------------------------------------------------

def _assert_same(a: ir.Graph, b: ir.Graph) -> None:
    assert a.input.shape == b.input.shape and a.input.rate_scale == b.input.rate_scale
    assert a.neuron == b.neuron and a.synapse == b.synapse and dict(a.layer_neurons) == dict(b.layer_neurons)
    assert dict(a.meta) == dict(b.meta)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert type(la) is type(lb) and la.name == lb.name
        for f in la.__dataclass_fields__:
            va, vb = getattr(la, f), getattr(lb, f)
            if isinstance(va, np.ndarray):
                assert isinstance(vb, np.ndarray) and va.dtype == vb.dtype and np.array_equal(va, vb), f
            else:
                assert va == vb and type(va) is type(vb), (f, va, vb)


def test_round_trip_exact(tmp_path, rng):
    g = small_graph(rng)
    path = save_graph(g, tmp_path / "sub" / "net.bcv")
    back = load_graph(path)
    _assert_same(g, back)
    x = rng.uniform(0, 1, size=(3, 2, 6, 6))
    np.testing.assert_array_equal(g.forward(x)["fc1"], back.forward(x)["fc1"])
    save_graph(back, path)  # overwrite in place
    _assert_same(g, load_graph(path))
    assert [p.name for p in path.parent.iterdir()] == ["net.bcv"]  # no temporary files left


def test_round_trip_ann_graph(tmp_path, rng):
    g = ir.Graph(ir.Input((4,)), (ir.Dense("fc1", rng.normal(size=(3, 4)), rng.normal(size=3)),))
    _assert_same(g, load_graph(save_graph(g, tmp_path / "ann.bcv")))


def test_load_without_torch(tmp_path, rng):
    path = save_graph(small_graph(rng), tmp_path / "net.bcv")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from bioconv.graphio import load_graph\n"
            f"g = load_graph({str(path)!r}); print(len(g.layers), 'torch' in sys.modules and sys.modules['torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "None"]


def _rewrite(path: Path, out: Path, edit) -> Path:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    doc = json.loads(bytes(arrays.pop("graph.json")).decode())
    doc = edit(doc)
    payload = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8) if doc is not None else None
    with open(out, "wb") as fh:
        np.savez(fh, **({"graph.json": payload} if payload is not None else {}), **arrays)
    return out


def _set(doc, **kw):
    return {**doc, **kw}


@pytest.mark.parametrize("edit, match", [
    (lambda d: _set(d, version=FORMAT_VERSION + 1), f"version {FORMAT_VERSION + 1}"),
    (lambda d: _set(d, format="something-else"), "not a bioconv graph file"),
    (lambda d: _set(d, layers=[{**d["layers"][0], "type": "Conv3d"}]), "unknown layer type 'Conv3d'"),
    (lambda d: {k: v for k, v in d.items() if k != "layers"}, "missing a field"),
    (lambda d: _set(d, input={"shape": [2, 6, 6]}), "missing a field"),
    (lambda d: None, "not a readable"),
])
def test_bad_graph_files(tmp_path, rng, edit, match):
    path = save_graph(small_graph(rng), tmp_path / "good.bcv")
    bad = _rewrite(path, tmp_path / "bad.bcv", edit)
    with pytest.raises(GraphFileError, match=match):
        load_graph(bad)


def test_corrupt_bytes(tmp_path, rng):
    path = save_graph(small_graph(rng), tmp_path / "good.bcv")
    (tmp_path / "garbage.bcv").write_bytes(b"this is not a zip file")
    (tmp_path / "half.bcv").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for name in ("garbage.bcv", "half.bcv"):
        with pytest.raises(GraphFileError, match="not a readable bioconv graph file"):
            load_graph(tmp_path / name)
    assert issubclass(GraphFileError, ValueError)
    with pytest.raises(FileNotFoundError, match="bioconv convert"):
        load_graph(tmp_path / "missing.bcv")
