"""Bad inputs get clear errors (no traceback), and output paths are checked before the slow work."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from bioconv import cli, ir
from bioconv.ann import build_model
from bioconv.ann.checkpoint import save_checkpoint
from bioconv.graphio import GraphFileError, load_graph, save_graph
from bioconv.outpaths import check_output_path
from bioconv.units import parse_rate, parse_time


def _graph() -> ir.Graph:
    rng = np.random.default_rng(0)
    return ir.Graph(ir.Input((3,)), (ir.Dense("fc1", rng.normal(size=(2, 3)), np.zeros(2)),))


def _rewrite(path, change) -> None:
    """Load the .bcv archive, change its JSON document, write it back."""
    with np.load(path) as data:
        doc = json.loads(bytes(data["graph.json"]).decode())
        arrays = {k: data[k] for k in data.files if k != "graph.json"}
    change(doc)
    payload = json.dumps(doc).encode()
    with open(path, "wb") as fh:
        np.savez(fh, **{"graph.json": np.frombuffer(payload, dtype=np.uint8)}, **arrays)


def test_empty_bcv(tmp_path):
    path = tmp_path / "empty.bcv"
    path.write_bytes(b"")
    with pytest.raises(GraphFileError, match="it is empty"):
        load_graph(path)


@pytest.mark.parametrize("field, value, match", [
    ("meta", [1, 2], "field 'meta' is a list, not a dict"),
    ("version", "1", "version as str '1', not an integer"),
    ("layers", {"a": 1}, "field 'layers' is a dict"),
])
def test_malformed_bcv(tmp_path, field, value, match):
    path = save_graph(_graph(), tmp_path / "g.bcv")
    _rewrite(path, lambda doc: doc.__setitem__(field, value))
    with pytest.raises(GraphFileError, match=match):
        load_graph(path)


def test_old_bcv_without_inputs_fields_still_loads(tmp_path):
    """Files written before layers had ``inputs``/``groups``/``clip`` read as sequential graphs."""
    graph = _graph()
    path = save_graph(graph, tmp_path / "old.bcv")

    def strip(doc):
        for spec in doc["layers"]:
            for key in ("inputs", "spiking", "clip"):
                spec.pop(key, None)

    _rewrite(path, strip)
    back = load_graph(path)
    assert back.is_sequential and back.layers[0].inputs == ()
    np.testing.assert_array_equal(back.layers[0].weight, graph.layers[0].weight)


@pytest.mark.parametrize("text, kind, match", [
    ("-5ms", "time", "must be > 0"),
    ("0ms", "time", "must be > 0"),
    ("-200Hz", "rate", "must be > 0"),
    ("1e400ms", "time", "too large"),
    ("5 parsecs", "time", "not a time with a unit"),
])
def test_quantities(text, kind, match):
    with pytest.raises(ValueError, match=match):
        (parse_time if kind == "time" else parse_rate)(text)


def _ckpt(tmp_path, change=None, name="c.pt"):
    model = build_model("4c3-p2-10FC", (1, 8, 8), 10)
    path = save_checkpoint(model, {"spec": "4c3-p2-10FC", "arch": "t", "dataset": "digits",
                                   "input_shape": [1, 8, 8], "n_classes": 10}, tmp_path / name)
    if change:
        doc = torch.load(path, weights_only=True)
        change(doc)
        torch.save(doc, path)
    return path


def test_checkpoint_without_spec(tmp_path, capsys):
    path = _ckpt(tmp_path, lambda d: d["meta"].pop("spec"))
    assert cli.main(["evaluate", str(path)]) == 2
    assert "lacks ['spec']" in capsys.readouterr().err


def test_checkpoint_version_string(tmp_path, capsys):
    path = _ckpt(tmp_path, lambda d: d.__setitem__("version", "1"))
    assert cli.main(["evaluate", str(path)]) == 2
    assert "version as str '1'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_weights(tmp_path, capsys, bad):
    def poison(doc):
        key = next(k for k in doc["state_dict"] if k.endswith("weight"))
        doc["state_dict"][key].view(-1)[0] = bad

    path = _ckpt(tmp_path, poison)
    assert cli.main(["evaluate", str(path)]) == 2
    assert "NaN or Inf" in capsys.readouterr().err


def test_batch_size_zero(tmp_path, capsys):
    path = save_graph(_graph(), tmp_path / "g.bcv")
    assert cli.main(["simulate", str(path), "--engine", "torch", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    ckpt = _ckpt(tmp_path)
    assert cli.main(["evaluate", str(ckpt), "--batch-size", "0"]) == 2


@pytest.fixture
def bad_outs(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    return {"directory": (tmp_path, "existing directory"), "below a file": (a_file / "out.x", "which is a file"),
            "deep below a file": (a_file / "a" / "b" / "out.x", "which is a file")}


@pytest.mark.parametrize("case", ["directory", "below a file", "deep below a file"])
def test_check_output_path(bad_outs, case):
    path, match = bad_outs[case]
    with pytest.raises(ValueError, match=match):
        check_output_path(path)


@pytest.mark.parametrize("command", ["simulate", "convert", "train"])
@pytest.mark.parametrize("case", ["directory", "below a file"])
def test_out_is_checked_before_the_work(tmp_path, bad_outs, capsys, command, case):
    path, match = bad_outs[case]
    if command == "simulate":
        out = path if case == "directory" else path.with_suffix(".csv")
        argv = ["simulate", str(save_graph(_graph(), tmp_path / "g.bcv")), "--engine", "torch", "--out", str(out)]
    elif command == "convert":
        argv = ["convert", str(_ckpt(tmp_path)), "--norm", "max", "--out", str(path)]
    else:
        argv = ["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "1", "--out", str(path)]
    start = time.perf_counter()
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err
    assert time.perf_counter() - start < 5.0  # nothing slow ran first


def test_simulate_duration_overflow(tmp_path, capsys):
    path = save_graph(_graph(), tmp_path / "g.bcv")
    assert cli.main(["simulate", str(path), "--engine", "torch", "--duration", "1e400ms"]) == 2
    assert "too large" in capsys.readouterr().err
