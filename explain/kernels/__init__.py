"""Kernels for the explanation math that is not a model call: NumPy on the CPU, Triton on CUDA."""
