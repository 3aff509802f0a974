r"""The update code of a neuron/synapse model, taken from Brian2's own code generation.

Brian2 integrates a group by (1) asking the state updater (``exact_affine``,
:mod:`bioconv.integration`) for *abstract code* such as ``_v = ...; v = _v``, then (2)
turning it into statements with :func:`brian2.codegen.translation.make_statements`, which
pulls loop invariants out as scalar constants ``_lio_1, _lio_2, ...`` (computed once per
step from ``dt``), and (3) printing the vector statements in that order for numpy, C++ or
CUDA. This module runs steps (1) and (2) on the model's own ``Equations`` (with a
stand-in for the group's variables), so every engine evaluates *the same expressions in
the same order* as Brian2: ``v = (((_lio_3*I_bias) + (_lio_4*I_syn)) + (_lio_5*v)) +
(_lio_6*x_syn)`` is the same sequence of IEEE float64 operations in torch, numba and
Brian2's compiled code (built without fast-math or FMA contraction,
:mod:`bioconv.devices`).

The scalar constants are evaluated in Python floats with the C library's ``exp``
(:mod:`math`), as Brian2's C++ code does. (Brian2's numpy runtime uses numpy's own
``exp``, which differs from the C library in the last bit for a few % of arguments; a
constant may then differ by one ulp from the runtime's.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

Statement = tuple[str, str, str]  # (variable, op, expression): op is "=", "+=", "-=", "*=", "/="


class _Owner:
    name = "bioconv_model"


def _variables(equations: Any, suffix: str = "") -> dict:
    """Stand-ins for a group's Brian2 ``Variable`` objects (what make_statements inspects)."""
    from brian2 import second
    from brian2.core.variables import ArrayVariable, Subexpression
    from brian2.equations.equations import SUBEXPRESSION

    owner, out = _Owner(), {}
    for name in equations.names:
        eq = equations[name]
        key = name + suffix
        if eq.type == SUBEXPRESSION:
            out[key] = Subexpression(key, owner, str(eq.expr), None, dimensions=eq.dim, dtype=np.float64)
        else:
            const = "constant" in eq.flags
            out[key] = ArrayVariable(key, owner, 1, None, dimensions=eq.dim, dtype=np.float64, constant=const,
                                     read_only=const)
    out["dt"] = ArrayVariable("dt", owner, 1, None, dimensions=second.dim, dtype=np.float64, read_only=True,
                              constant=True, scalar=True)
    return out


def _resolve(code: str, variables: dict) -> dict:
    """Add Brian2's default functions, constants and units used in ``code`` to ``variables``."""
    from brian2.core.functions import DEFAULT_CONSTANTS, DEFAULT_FUNCTIONS
    from brian2.core.namespace import DEFAULT_UNITS
    from brian2.core.variables import Constant
    from brian2.units.fundamentalunits import get_dimensions
    from brian2.utils.stringtools import get_identifiers

    assigned = {line.split("=")[0].strip(" +-*/") for line in code.splitlines() if "=" in line}
    for ident in get_identifiers(code):
        if ident in variables or ident in assigned:
            continue
        if ident in DEFAULT_FUNCTIONS:
            variables[ident] = DEFAULT_FUNCTIONS[ident]
        elif ident in DEFAULT_CONSTANTS:
            variables[ident] = DEFAULT_CONSTANTS[ident]
        elif ident in DEFAULT_UNITS:
            unit = DEFAULT_UNITS[ident]
            variables[ident] = Constant(ident, float(unit), dimensions=get_dimensions(unit), owner=None)
        else:
            raise ValueError(f"model code {code!r} uses {ident!r}, which is neither a model variable nor a Brian2 name")
    return variables


def _render(expr: str) -> str:
    from brian2.parsing.rendering import NodeRenderer

    return NodeRenderer().render_expr(expr)


@dataclass(frozen=True)
class Program:
    """Scalar constants (name -> Brian2 expression, in order) and vector statements (Brian2 order)."""

    scalars: tuple[tuple[str, str], ...]
    vector: tuple[Statement, ...]

    def constants(self, dt_s: float) -> dict[str, float]:
        """Evaluate the scalar constants at time step ``dt_s`` (seconds) in Python floats."""
        from brian2.core.functions import timestep
        from brian2.core.namespace import DEFAULT_UNITS

        ns: dict[str, Any] = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "timestep": timestep,
                              "dt": float(dt_s)}
        out: dict[str, float] = {}
        for name, expr in self.scalars:
            for ident in _identifiers(expr):
                if ident not in ns and ident in DEFAULT_UNITS:
                    ns[ident] = float(DEFAULT_UNITS[ident])
            value = eval(_render(expr), {"__builtins__": {}}, {**ns, **out})  # noqa: S307 - Brian2's own code
            out[name] = float(value) if not isinstance(value, (int, np.integer)) else int(value)
        return out


def _identifiers(expr: str) -> set[str]:
    from brian2.utils.stringtools import get_identifiers

    return set(get_identifiers(expr))


def _statements(code: str, variables: Mapping[str, Any]) -> Program:
    from brian2.codegen.translation import make_statements

    variables = _resolve(code, dict(variables))
    scalar, vector = make_statements(code, variables, np.float64, optimise=True)
    for stmt in scalar:
        if stmt.op not in (":=",):
            raise ValueError(f"unexpected scalar statement {stmt}")
    return Program(tuple((s.var, s.expr) for s in scalar),
                   tuple((s.var, "=" if s.op == ":=" else s.op, _render(s.expr)) for s in vector))


def state_update(neuron: Any, synapse: Any) -> Program:
    """Brian2's state-update statements of ``neuron`` with ``synapse`` (no refractory line)."""
    from brian2.stateupdaters.base import StateUpdateMethod

    import bioconv.integration  # noqa: F401  (registers "exact_affine")

    eqs = neuron.equations() + synapse.post_equations(neuron)
    variables = _variables(eqs)
    code = StateUpdateMethod.apply_stateupdater(eqs, variables, neuron.method)
    return _statements(code, variables)


def threshold(neuron: Any, synapse: Any) -> Program:
    """The threshold condition as statements ending in ``_cond = ...`` (subexpressions first)."""
    eqs = neuron.equations() + synapse.post_equations(neuron)
    return _statements(f"_cond = {neuron.threshold}", _variables(eqs))


def reset(neuron: Any, synapse: Any) -> Program:
    """The reset statements (e.g. ``v = 0``, ``v -= theta``, ``r -= 2.0*theta``)."""
    eqs = neuron.equations() + synapse.post_equations(neuron)
    return _statements(neuron.reset_code, _variables(eqs))


def on_pre(neuron: Any, synapse: Any) -> Program:
    """The on_pre statement ``<target>_post += <expression of w>`` of ``synapse`` onto ``neuron``."""
    from brian2.core.variables import ArrayVariable

    eqs = neuron.equations() + synapse.post_equations(neuron)
    variables = _variables(eqs, suffix="_post")
    variables["w"] = ArrayVariable("w", _Owner(), 1, None, dtype=np.float64)
    return _statements(synapse.on_pre(neuron), variables)


def unless_refractory(neuron: Any, synapse: Any) -> tuple[str, ...]:
    """State variables flagged ``(unless refractory)``: frozen, and not written by synapses, while refractory."""
    eqs = neuron.equations() + synapse.post_equations(neuron)
    return tuple(name for name in eqs.diff_eq_names if "unless refractory" in eqs[name].flags)
