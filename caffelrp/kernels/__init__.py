"""Compiled Cython kernels of caffelrp (built from ``src/<name>.pyx``; their common bounds checks
in ``src/kernel_limits.pxd``).

``im2col`` (im2col / col2im), ``pooling``, ``lrn``, ``gemm`` (the threaded sgemm of every matrix
product), ``relevance`` (the original's AVE-pooling and LRN relevance rules) and ``lrp_ratios``
(the rules' elementwise ratios): nogil, OpenMP-parallel loops over C-contiguous float32 arrays;
every kernel takes a trailing ``num_threads`` argument and writes into output arrays the caller
allocates. Shape/dtype checking beyond the cheap O(1) checks inside each kernel is the job of the
Python callers in ``caffelrp.layers`` and ``caffelrp.rules``.
"""

import importlib.util
import os
import sys


def _load_cython_blas():
    """Load scipy.linalg.cython_blas (the sgemm the GEMM kernel calls) by its file, without
    running ``scipy/linalg/__init__.py``: that package import costs ~0.2 s (numpy.testing, the
    whole of scipy.linalg), a third of the CLI's start-up, for nothing the kernels use. Where the
    file cannot be found this way the kernel's ordinary import does the usual thing."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return
    try:
        from importlib.machinery import EXTENSION_SUFFIXES
        folder = os.path.join(os.path.dirname(importlib.util.find_spec("scipy").origin), "linalg")
        files = [os.path.join(folder, "cython_blas" + s) for s in EXTENSION_SUFFIXES]
        spec = importlib.util.spec_from_file_location(
            name, next(f for f in files if os.path.isfile(f)))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception:      # any failure: the ordinary import follows, with its own error
        sys.modules.pop(name, None)


_load_cython_blas()
