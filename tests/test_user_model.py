"""`bioconv convert --model MODULE:FACTORY STATE_DICT`: a user's own model through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioconv import cli
from bioconv.graphio import load_graph

MODULE = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.skip = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.relu(x + self.skip(x))
        return self.fc(x.mean((2, 3)))

def make():
    return Net()
'''


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "usernets.py").write_text(MODULE)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("usernets_test", tmp_path / "usernets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.make()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    return tmp_path, model


def test_convert_user_model(user_files, capsys):
    tmp_path, model = user_files
    out = tmp_path / "net.bcv"
    rc = cli.main(["convert", str(tmp_path / "net.pt"), "--model", f"{tmp_path / 'usernets.py'}:make",
                   "--dataset", "digits", "--norm", "max", "--calib", "40", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    graph = load_graph(out)
    assert graph.meta["source"] == "torch.fx" and graph.meta["normalization"]["method"] == "max"
    assert "Add" in {type(l).__name__ for l in graph.layers} and len(graph.meta["folded_pools"]) == 1


@pytest.mark.parametrize("argv, match", [
    (["--model", "nomodule_xyz:make", "--dataset", "digits"], "cannot import module 'nomodule_xyz'"),
    (["--model", "USER:missing", "--dataset", "digits"], "has no callable 'missing'"),
    (["--model", "USER:make"], "--model needs --dataset"),
    (["--model", "nocolon", "--dataset", "digits"], "MODULE:FACTORY"),
])
def test_convert_user_model_errors(user_files, capsys, argv, match):
    tmp_path, _ = user_files
    argv = [a.replace("USER", str(tmp_path / "usernets.py")) for a in argv]
    rc = cli.main(["convert", str(tmp_path / "net.pt"), *argv, "--norm", "max", "--out", str(tmp_path / "o.bcv")])
    assert rc == 2
    assert match in capsys.readouterr().err
