"""LLVM intrinsics the fused kernel's generated module imports (numba has no built-in for them)."""

from __future__ import annotations

from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def trailing_zeros(typingctx, word):
    """Number of trailing zero bits of a ``uint64`` (``llvm.cttz``, one ``tzcnt`` instruction); 64 for zero."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], llvm_ir.Constant(llvm_ir.IntType(1), 0))

    return types.uint64(types.uint64), codegen
