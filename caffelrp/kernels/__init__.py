"""Compiled Cython kernels of caffelrp (built from ``src/<name>.pyx``; their common bounds checks
in ``src/kernel_limits.pxd``).

``im2col`` (im2col / col2im), ``pooling``, ``lrn``, ``gemm`` (the threaded sgemm of every matrix
product), ``relevance`` (the original's AVE-pooling and LRN relevance rules) and ``lrp_ratios``
(the rules' elementwise ratios): nogil, OpenMP-parallel loops over C-contiguous float32 arrays;
every kernel takes a trailing ``num_threads`` argument and writes into output arrays the caller
allocates. Shape/dtype checking beyond the cheap O(1) checks inside each kernel is the job of the
Python callers in ``caffelrp.layers`` and ``caffelrp.rules``.
"""
