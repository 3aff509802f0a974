r"""Exact integration of affine ODE systems with a singular matrix (Brian2 state updater).

Brian2's ``exact`` (``LinearStateUpdater``) solves :math:`\dot X = MX + B` by shifting to the
fixed point :math:`-M^{-1}B`, which does not exist for integrators such as the IF neuron
(:math:`\dot v = I_\mathrm{bias}/\tau + I_\mathrm{syn}`: the row of ``v`` in M is zero).
This updater instead exponentiates the augmented matrix

.. math::
    \exp\left(\begin{bmatrix} M & B \\ 0 & 0 \end{bmatrix} dt\right) =
    \begin{bmatrix} e^{M dt} & \int_0^{dt} e^{Ms}\,ds\,B \\ 0 & 1 \end{bmatrix},

which is exact for any constant M and B (sympy handles Jordan blocks). It is
registered with Brian2 as ``method="exact_affine"``.
"""

from __future__ import annotations

import sympy as sp
from brian2.parsing.sympytools import sympy_to_str
from brian2.stateupdaters.base import (
    StateUpdateMethod,
    UnsupportedEquationsException,
    extract_method_options,
)
from brian2.stateupdaters.exact import get_linear_system
from brian2.utils.caching import cached

METHOD_NAME = "exact_affine"


class AffineExactStateUpdater(StateUpdateMethod):
    """Exact update for :math:`\\dot X = MX + B` with constant M, B (M may be singular)."""

    @cached
    def __call__(self, equations, variables=None, method_options=None):
        extract_method_options(method_options, {})
        if equations.is_stochastic:
            raise UnsupportedEquationsException("exact_affine cannot solve stochastic equations")
        varnames, matrix, constants = get_linear_system(equations, variables or {})
        if matrix.shape == (0, 0):
            return ""
        for entry in list(matrix) + list(constants):
            if entry.has(sp.Symbol("t", real=True)):
                raise UnsupportedEquationsException(f"'{sympy_to_str(entry)}' depends on t")
        n = len(varnames)
        dt = sp.Symbol("dt", real=True, positive=True)
        augmented = matrix.row_join(constants).col_join(sp.zeros(1, n + 1))
        try:
            propagator = (augmented * dt).exp()
        except NotImplementedError as exc:
            raise UnsupportedEquationsException(str(exc)) from exc
        propagator = propagator.applyfunc(lambda x: sp.factor_terms(sp.cancel(sp.signsimp(x))))
        symbols = [sp.Symbol(name, real=True) for name in varnames] + [sp.Integer(1)]
        state = sp.Matrix(symbols)
        code = []
        for row, name in enumerate(varnames):
            update = (propagator[row, :] * state)[0, 0]
            if update.has(sp.I):
                raise UnsupportedEquationsException("complex solution not supported")
            code.append(f"_{name} = {sympy_to_str(update)}")
        code += [f"{name} = _{name}" for name in varnames]
        return "\n".join(code)

    def can_integrate(self, equations, variables, method_options=None):  # pragma: no cover - brian2 API
        try:
            self(equations, variables, method_options)
        except UnsupportedEquationsException:
            return False
        return True


def register() -> None:
    """Register ``exact_affine`` with Brian2 (idempotent)."""
    if METHOD_NAME not in StateUpdateMethod.stateupdaters:
        StateUpdateMethod.register(METHOD_NAME, AffineExactStateUpdater())


register()
