"""Kernels for the explanation math that is not a model call: NumPy on the CPU, Triton on CUDA.

`get_kernels(name)` returns a module with project, scaled_l1, knn_agreement and
masked_argmin (see numpy_kernels.py for the contract). The Session picks the name
from its execution provider (`ExecutionInfo.kernels`).
"""

from __future__ import annotations

from types import ModuleType

from edgeinfer.errors import UsageError


def get_kernels(name: str = "numpy") -> ModuleType:
    if name == "numpy":
        from edgeinfer.explain.kernels import numpy_kernels

        return numpy_kernels
    if name == "triton":
        from edgeinfer.explain.kernels import triton_kernels

        return triton_kernels
    raise UsageError(f"unknown kernel family {name!r}; use 'numpy' or 'triton'")
