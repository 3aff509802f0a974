r"""Source of the fused numba kernel, generated from the models layer, and its on-disk cache.

:func:`kernel` writes one Python module per set of layer dynamics (the *signatures* of
:class:`bioconv.models.Dynamics`: statements, not constants' values) to
``<cache>/bioconv_fused/bioconv_fused_<hash>.py`` and imports it (``<cache>`` is numba's
cache directory, ``$NUMBA_CACHE_DIR``, when set, else ``~/.cache/bioconv``); its functions are
``numba.njit(cache=True)``, so numba keeps the compiled machine code next to it
(``$NUMBA_CACHE_DIR`` when set) and a second process loads it instead of compiling. The
source file is written only if it does not exist yet (atomically), so its timestamp and
numba's cache index stay valid and repeated runs add no files.

Generated per signature ``m`` (one branch of each step function):

* ``update``: for neurons ``lo..hi`` of a layer, the state statements of
  ``Dynamics.update`` on scalar locals in Brian2's order (``_lio_*`` constants read from
  the layer's coefficient row), the refractory clamp of the ``frozen`` states, the
  threshold statements, ``lastspike`` and the spike flag;
* ``reset``: the reset statements of the neurons ``spk[a:b]`` that spiked (one call per layer
  and step: a call per spike would pay numba's atomic reference counting of every array argument);
* ``readout``: the readout variable (``v`` or ``psi + r``) of one neuron.

The static part of the kernel (spike lists, synaptic delivery, gated max-pool, counting,
recording) is :data:`STATIC` in :mod:`bioconv.engines.fused_static`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

from bioconv.models import Dynamics

#: bump when the generated source changes in a way its hash would not show
VERSION = 5


def cache_dir() -> Path:
    """Where generated kernels live: ``<numba cache dir>/bioconv_fused``, or ``~/.cache/bioconv/bioconv_fused``."""
    import numba

    base = numba.config.CACHE_DIR or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                  "bioconv")
    return Path(base) / "bioconv_fused"


def _branch(m: int, dyn: Dynamics, lines: list[str], body: Sequence[str], indent: str = "    ") -> None:
    lines.append(f"{indent}{'if' if m == 0 else 'elif'} m == {m}:")
    lines.extend(indent + "    " + b for b in body)


def _stmt(var: str, op: str, expr: str) -> str:
    return f"{var} {op} {expr}"


def _neuron_code(dyn: Dynamics) -> list[str]:
    """Statements for neuron ``q`` of the slices ``s0, s1, ...`` (states), ``fr`` (spike flags),
    ``ls``/``nf`` (lastspike, not-refractory flags); ``I_bias``, ``theta`` already set."""
    code = [f"{name} = s{s}[q]" for s, name in enumerate(dyn.states)]
    code += [_stmt(*st) for st in dyn.update]
    refractory = dyn.ref_steps > 0 and dyn.spiking
    if refractory:  # selects, not branches, so that the loop still vectorizes
        code.append("notref = (t - ls[q]) >= ref")
        for name in dyn.frozen:
            code.append(f"{name} = {name} if notref else s{dyn.states.index(name)}[q]")
    code += [f"s{s}[q] = {name}" for s, name in enumerate(dyn.states)]
    if dyn.spiking:
        code += [_stmt(*st) for st in dyn.threshold]
        if refractory:
            code += ["_cond = _cond & notref", "ls[q] = t if _cond else ls[q]", "nf[q] = notref & (not _cond)"]
        code.append("fr[q] = np.uint8(_cond)")
    else:
        code.append("fr[q] = np.uint8(0)")
    return code


def _slices(dyn: Dynamics, a: str, b: str) -> list[str]:
    out = [f"s{s} = S[{s}, {a}:{b}]" for s in range(len(dyn.states))] + [f"fr = fired[{a}:{b}]"]
    if dyn.ref_steps > 0 and dyn.spiking:
        out += [f"ls = last[{a}:{b}]", f"nf = nr[{a}:{b}]"]
    return out


def _update_body(dyn: Dynamics) -> list[str]:
    """Per-neuron update of a layer, in blocks of ``hw`` neurons. ``uniform``: bias and θ are
    constant within a block (a channel of a channel-first layer), read once per block; else they
    repeat with period ``hw`` (a channel-last layer's channels; ``hw`` = the layer's size when
    they are per neuron) and are read from the layer's first block, which stays in cache. Either
    way the inner loop vectorizes."""
    consts = sorted(dyn.constants)
    body = [f"{name} = c[{j}]" for j, name in enumerate(consts)]
    neuron = _neuron_code(dyn)
    body.append("if uniform:")
    body.append("    for base in range(lo, hi, hw):")
    body += ["        " + x for x in _slices(dyn, "base", "base + hw")]
    body += ["        I_bias = bias[base]", "        theta = th[base]", "        for q in range(hw):"]
    body += ["            " + x for x in neuron]
    body.append("else:")
    body += ["    bs = bias[lo:lo + hw]", "    ts = th[lo:lo + hw]", "    for base in range(lo, hi, hw):"]
    body += ["        " + x for x in _slices(dyn, "base", "base + hw")]
    body += ["        for q in range(hw):", "            I_bias = bs[q]", "            theta = ts[q]"]
    body += ["            " + x for x in neuron]
    return body


def _reset_body(dyn: Dynamics) -> list[str]:
    if not dyn.spiking or not dyn.reset:
        return ["pass"]
    body = [f"{name} = S[{s}, k]" for s, name in enumerate(dyn.states)] + ["theta = th[k]"]
    body += [_stmt(*st) for st in dyn.reset]
    written = {st[0] for st in dyn.reset}
    body += [f"S[{s}, k] = {name}" for s, name in enumerate(dyn.states) if name in written]
    return ["for q in range(a, b):", "    k = spk[q]"] + ["    " + x for x in body]


def _readout_body(dyn: Dynamics) -> list[str]:
    return [f"{name} = S[{s}, k]" for s, name in enumerate(dyn.states)] + [f"return {dyn.readout}"]


def source(signatures: Sequence[Dynamics]) -> str:
    """The kernel module for the given distinct dynamics (index = signature id ``m``)."""
    from bioconv.engines.fused_static import STATIC

    lines = ["# generated by bioconv.engines.fused_codegen; do not edit", "import numba", "import numpy as np",
             "from bioconv.engines.fused_intrinsics import trailing_zeros", "",
             "", "@numba.njit(cache=True, fastmath=False, nogil=True)",
             "def update(m, S, lo, hi, bias, th, c, fired, last, nr, t, ref, hw, uniform):"]
    for m, dyn in enumerate(signatures):
        _branch(m, dyn, lines, _update_body(dyn))
    lines.append("    return")  # (a module without any signature still compiles: the spike-list scan's tests use one)
    lines += ["", "", "@numba.njit(cache=True, fastmath=False, nogil=True)", "def reset(m, S, spk, a, b, th):"]
    for m, dyn in enumerate(signatures):
        _branch(m, dyn, lines, _reset_body(dyn))
    lines.append("    return")
    lines += ["", "", "@numba.njit(cache=True, fastmath=False, nogil=True)", "def readout(m, S, k):"]
    for m, dyn in enumerate(signatures):
        _branch(m, dyn, lines, _readout_body(dyn))
    lines.append("    return 0.0")
    return "\n".join(lines) + "\n\n" + STATIC


def kernel(signatures: Sequence[Dynamics]):
    """The compiled kernel module for ``signatures`` (generated once, cached on disk)."""
    text = source(signatures)
    digest = hashlib.sha1(f"{VERSION}\n{text}".encode()).hexdigest()[:16]
    name = f"bioconv_fused_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
