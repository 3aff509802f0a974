"""Load a user's own PyTorch model for ``bioconv convert --model MODULE:FACTORY STATE_DICT``.

``MODULE`` is an importable module (``mypkg.nets``) or a Python file (``nets.py``);
``FACTORY()`` must return the ``nn.Module`` (untrained), whose weights are then loaded from
``STATE_DICT`` (a file written by ``torch.save(model.state_dict(), path)``, loaded with
``weights_only=True``). The model is converted like any other: ``nn.Sequential`` module by
module, anything else with ``torch.fx`` (:mod:`bioconv.fx_import`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch


def _import(module: str) -> Any:
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise FileNotFoundError(f"--model: no Python file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, mod)
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"--model: cannot import module {module!r} ({exc}); give a module on the Python path or "
                         "a .py file") from exc


def load_user_model(spec: str, weights: str | os.PathLike, dataset: str,
                    data_dir: str | None = None) -> tuple[torch.nn.Module, dict]:
    """``(model, meta)``: the model of ``spec`` = ``"MODULE:FACTORY"`` with the state_dict ``weights``.

    ``meta`` holds what a bioconv checkpoint records (``dataset``, ``input_shape``,
    ``preprocessing``, ``arch``), with the input shape read from the dataset.
    """
    from bioconv.data import load_dataset, preprocessing

    module, sep, factory = str(spec).rpartition(":")
    if not sep or not module or not factory:
        raise ValueError(f"--model must be MODULE:FACTORY (e.g. mynets:make_lenet or nets.py:make), got {spec!r}")
    fn = getattr(_import(module), factory, None)
    if not callable(fn):
        raise ValueError(f"--model: {module!r} has no callable {factory!r}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model: {spec}() returned {type(model).__name__}, not a torch nn.Module")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"no state_dict file at {path}; write one with torch.save(model.state_dict(), path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ValueError(f"{path} is not a readable state_dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit {spec}() ({exc})") from exc
    shape = load_dataset(dataset, "test", data_dir).input_shape
    meta = {"dataset": dataset, "input_shape": list(shape), "preprocessing": preprocessing(dataset),
            "arch": factory, "spec": spec}
    return model.eval(), meta
