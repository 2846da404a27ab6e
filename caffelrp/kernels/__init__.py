"""Compiled Cython kernels of caffelrp (built from ``src/<name>.pyx``).

Each submodule (``im2col``, ``pooling``, ``lrn``) holds nogil, OpenMP-parallel loops over
C-contiguous float32 arrays; every kernel takes a trailing ``num_threads`` argument and writes
into output arrays the caller allocates. Shape/dtype checking beyond the cheap O(1) checks inside
each kernel is the job of the Python wrappers in ``caffelrp.layers``.
"""
