"""ANN checkpoints: one ``torch.save`` file with the state dict and JSON-like metadata.

The file is a dict ``{"format": "bioconv-ann", "version": 1, "state_dict": ...,
"meta": {...}}``. ``meta`` holds plain Python values only (it loads with
``weights_only=True``): ``spec``, ``arch``, ``dataset``, ``input_shape``,
``n_classes``, ``preprocessing``, ``seed``, ``test_accuracy``, ``versions``,
``train_time_s`` and the training settings. The model is rebuilt from ``spec``.
Writes are atomic (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from bioconv.atomic import atomic_path

FORMAT = "bioconv-ann"
FORMAT_VERSION = 1
REQUIRED_META = ("spec", "arch", "dataset", "input_shape", "n_classes")


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import bioconv

    return {"bioconv": bioconv.__version__, "torch": str(torch.__version__), "numpy": np.__version__,
            "python": platform.python_version()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serializable")


def save_checkpoint(model: torch.nn.Module, meta: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically; returns the path.

    ``meta`` must contain at least :data:`REQUIRED_META`; ``versions`` is added if absent.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}; it needs {list(REQUIRED_META)}")
    meta = {**dict(meta), "input_shape": [int(s) for s in meta["input_shape"]]}
    meta.setdefault("versions", versions())
    try:  # plain JSON types only, so the file loads with weights_only=True
        meta = json.loads(json.dumps(meta, default=_plain))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata must be JSON-serializable: {exc}") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "state_dict": state, "meta": meta}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (in eval mode) and return ``(model, meta)``."""
    from bioconv.ann import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `bioconv train --out {path}`")
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for corrupt files
        raise ValueError(f"{path} is not a readable bioconv checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bioconv ANN checkpoint (expected format {FORMAT!r}); "
                         "create one with `bioconv train`")
    version = doc.get("version")
    if type(version) is not int:
        raise ValueError(f"{path} stores its checkpoint version as {type(version).__name__} {version!r}, not an "
                         "integer; the file is corrupt, retrain with `bioconv train`")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint version {version}, this bioconv reads "
                         f"version {FORMAT_VERSION}; retrain with `bioconv train`")
    if not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("state_dict"), dict):
        raise ValueError(f"{path}: 'meta' and 'state_dict' must be dicts; the file is corrupt, retrain with "
                         "`bioconv train`")
    meta = dict(doc["meta"])
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"{path}: checkpoint metadata lacks {missing} (it needs {list(REQUIRED_META)}); the file "
                         "was not written by `bioconv train`, retrain with it")
    bad = [k for k, v in doc["state_dict"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: weights {bad} contain NaN or Inf (training diverged?); retrain, e.g. with a "
                         "lower --lr")
    try:
        act = meta.get("activation") or {}
        clips = act.get("clips")  # a network trained for the spike budget
        softlif = {"activation": "softlif", "softlif": act["softlif"]} if act.get("softlif") else {}
        model = build_model(meta["spec"], tuple(meta["input_shape"]), int(meta["n_classes"]), clips=clips, **softlif)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint metadata does not describe a model ({exc}); retrain with "
                         "`bioconv train`") from exc
    try:
        model.load_state_dict(doc["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit spec {meta['spec']!r} ({exc})") from exc
    return model.eval(), meta

