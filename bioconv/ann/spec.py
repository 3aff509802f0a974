"""One small grammar for the source papers' architecture strings, e.g. ``28x28-64c3BN-p2-D0.1-2048FC-10FC``.

Tokens, separated by ``-``:

========================  ====================================================
``28x28``, ``32x32x3``    input H x W [x C] (optional, first token; ``*`` also works)
``64c3``, ``64c3BN``      conv, 64 filters 3x3, stride 1, "same" padding (k // 2); ``BN`` adds BatchNorm
``p2``                    2x2 average pooling, stride 2
``mp2``                   2x2 max pooling, stride 2
``D0.1``                  dropout p = 0.1 (spatial ``Dropout2d`` on feature maps, ``Dropout`` after FC)
``2048FC``, ``512FCBN``   fully connected layer (a ``Flatten`` is inserted before the first one)
========================  ====================================================

ReLU follows every conv/FC layer except the last one; BN sits between the layer
and its ReLU. :func:`parse_spec` gives a tuple of frozen token objects;
:func:`build_sequential` turns them into a named ``torch.nn.Sequential``
(``conv1, bn1, relu1, pool1, drop1, flatten, fc1, ...``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Union

GRAMMAR_HELP = ("tokens: HxW[xC] input, NcK[BN] conv, pK avg pool, mpK max pool, Dp dropout, "
                "NFC[BN] dense; e.g. 28x28-32c3-p2-32c3-p2-32FC-10FC")


@dataclass(frozen=True)
class InputTok:
    shape: tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class ConvTok:
    channels: int
    kernel: int
    bn: bool = False


@dataclass(frozen=True)
class PoolTok:
    kind: Literal["avg", "max"]
    kernel: int


@dataclass(frozen=True)
class DropTok:
    p: float


@dataclass(frozen=True)
class DenseTok:
    units: int
    bn: bool = False


Token = Union[InputTok, ConvTok, PoolTok, DropTok, DenseTok]

_PATTERNS = [
    (re.compile(r"^(\d+)[x*](\d+)(?:[x*](\d+))?$"), lambda m: InputTok((int(m[3] or 1), int(m[1]), int(m[2])))),
    (re.compile(r"^(\d+)c(\d+)(BN)?$"), lambda m: ConvTok(int(m[1]), int(m[2]), bool(m[3]))),
    (re.compile(r"^(m?)p(\d+)$"), lambda m: PoolTok("max" if m[1] else "avg", int(m[2]))),
    (re.compile(r"^D(\d*\.?\d+)$"), lambda m: DropTok(float(m[1]))),
    (re.compile(r"^(\d+)FC(BN)?$"), lambda m: DenseTok(int(m[1]), bool(m[2]))),
]


def parse_spec(spec: str) -> tuple[Token, ...]:
    """Parse a spec string into tokens; ``ValueError`` names the bad token and the grammar."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty architecture spec; {GRAMMAR_HELP}")
    tokens: list[Token] = []
    for i, raw in enumerate(re.sub(r"\s+", "", spec).split("-")):
        for pattern, make in _PATTERNS:
            m = pattern.match(raw)
            if m:
                tok = make(m)
                break
        else:
            raise ValueError(f"cannot parse token {raw!r} in spec {spec!r}; {GRAMMAR_HELP}")
        if isinstance(tok, InputTok) and i != 0:
            raise ValueError(f"input token {raw!r} must come first in spec {spec!r}")
        if isinstance(tok, DropTok) and not 0.0 <= tok.p < 1.0:
            raise ValueError(f"dropout {raw!r} must have 0 <= p < 1")
        if isinstance(tok, (ConvTok, PoolTok)) and (tok.kernel <= 0 or getattr(tok, "channels", 1) <= 0):
            raise ValueError(f"token {raw!r}: sizes must be positive")
        if isinstance(tok, DenseTok) and tok.units <= 0:
            raise ValueError(f"token {raw!r}: sizes must be positive")
        tokens.append(tok)
    weighted = [t for t in tokens if isinstance(t, (ConvTok, DenseTok))]
    if not weighted:
        raise ValueError(f"spec {spec!r} has no conv or FC layer")
    seen_fc = False
    for tok in tokens:
        seen_fc = seen_fc or isinstance(tok, DenseTok)
        if seen_fc and isinstance(tok, (ConvTok, PoolTok)):
            raise ValueError(f"spec {spec!r}: conv/pool layers after an FC layer are not supported")
    return tuple(tokens)


def format_spec(tokens: tuple[Token, ...]) -> str:
    """The canonical spec string of ``tokens`` (inverse of :func:`parse_spec`)."""
    out = []
    for t in tokens:
        if isinstance(t, InputTok):
            c, h, w = t.shape
            out.append(f"{h}x{w}" + (f"x{c}" if c != 1 else ""))
        elif isinstance(t, ConvTok):
            out.append(f"{t.channels}c{t.kernel}" + ("BN" if t.bn else ""))
        elif isinstance(t, PoolTok):
            out.append(("mp" if t.kind == "max" else "p") + str(t.kernel))
        elif isinstance(t, DropTok):
            out.append(f"D{t.p:g}")
        else:
            out.append(f"{t.units}FC" + ("BN" if t.bn else ""))
    return "-".join(out)


def resolve_input(tokens: tuple[Token, ...], input_shape=None) -> tuple[tuple[Token, ...], tuple[int, int, int]]:
    """Split off the input token and reconcile it with ``input_shape`` (C, H, W)."""
    spec_shape = tokens[0].shape if isinstance(tokens[0], InputTok) else None
    body = tokens[1:] if spec_shape else tokens
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        if spec_shape and spec_shape != shape:
            raise ValueError(f"spec input {spec_shape} (C, H, W) does not match input_shape {shape}")
        return body, shape
    if spec_shape is None:
        raise ValueError("the spec has no input token (e.g. 28x28) and no input_shape was given")
    return body, spec_shape


def build_sequential(tokens: tuple[Token, ...], input_shape, n_classes: int | None = None,
                     activation: str = "relu", levels: int | None = None, clips=None, softlif=None):
    """A named ``torch.nn.Sequential`` for ``tokens``; checks shapes and the output size.

    ``activation``/``levels``: the hidden layers' activation (:func:`bioconv.ann.activations.make_activation`:
    ``"relu"``, or ``"clip"`` with a spike budget of ``levels``); ``clips``: the ceilings of a trained
    ``"clip"`` network, one per hidden layer, which become ``nn.Hardtanh(0, c)``; ``softlif``: the
    parameters of ``"softlif"`` activations (:class:`bioconv.ann.activations.SoftLIF`, named ``lif<k>``).
    """
    import torch.nn as nn

    from bioconv.ann.activations import make_activation

    n_hidden = sum(isinstance(t, (ConvTok, DenseTok)) for t in tokens) - 1
    if clips is not None and len(clips) != n_hidden:
        raise ValueError(f"{len(clips)} activation ceilings given for {n_hidden} hidden layers")
    ceilings = iter(clips) if clips is not None else None

    def act():
        return make_activation(activation, levels, None if ceilings is None else float(next(ceilings)), softlif)

    act_name = "lif" if activation == "softlif" else "relu"

    body, (c, h, w) = resolve_input(tokens, input_shape)
    last = max(i for i, t in enumerate(body) if isinstance(t, (ConvTok, DenseTok)))
    modules: "OrderedDict[str, nn.Module]" = OrderedDict()
    count = {"conv": 0, "fc": 0, "pool": 0, "drop": 0}
    flat: int | None = None
    for i, tok in enumerate(body):
        if isinstance(tok, ConvTok):
            count["conv"] += 1
            k = count["conv"]
            modules[f"conv{k}"] = nn.Conv2d(c, tok.channels, tok.kernel, padding=tok.kernel // 2)
            c, h, w = tok.channels, h + 2 * (tok.kernel // 2) - tok.kernel + 1, w + 2 * (tok.kernel // 2) - tok.kernel + 1
            if tok.bn:
                modules[f"bn{k}"] = nn.BatchNorm2d(c)
            if i != last:
                modules[f"{act_name}{k}"] = act()
        elif isinstance(tok, PoolTok):
            count["pool"] += 1
            if tok.kernel > min(h, w):
                raise ValueError(f"pool p{tok.kernel} is larger than the feature map {h}x{w}")
            cls = nn.AvgPool2d if tok.kind == "avg" else nn.MaxPool2d
            modules[f"pool{count['pool']}"] = cls(tok.kernel)
            h, w = h // tok.kernel, w // tok.kernel
        elif isinstance(tok, DropTok):
            count["drop"] += 1
            modules[f"drop{count['drop']}"] = nn.Dropout(tok.p) if flat is not None else nn.Dropout2d(tok.p)
        else:
            if flat is None:
                modules["flatten"] = nn.Flatten()
                flat = c * h * w
            count["fc"] += 1
            k = count["fc"]
            modules[f"fc{k}"] = nn.Linear(flat, tok.units)
            flat = tok.units
            if tok.bn:
                modules[f"fcbn{k}"] = nn.BatchNorm1d(tok.units)
            if i != last:
                modules[f"fc{act_name}{k}"] = act()
        if min(h, w) <= 0:
            raise ValueError(f"the feature map shrinks to {h}x{w}; the input is too small for this spec")
    n_out = flat if flat is not None else c * h * w
    if flat is None:
        raise ValueError("the spec must end with an FC layer giving the class scores (e.g. ...-10FC)")
    if n_classes is not None and n_out != n_classes:
        raise ValueError(f"the last layer gives {n_out} outputs but the dataset has {n_classes} classes; "
                         f"end the spec with {n_classes}FC")
    return nn.Sequential(modules)
