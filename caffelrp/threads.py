"""How many threads caffelrp's kernels use.

The Cython kernels take the count explicitly (OpenMP ``prange(num_threads=...)``). The GEMM kernel
calls scipy's OpenBLAS from each OpenMP thread, so that OpenBLAS must run single-threaded (one
thread pool, not two fighting over the cores); numpy's OpenBLAS, used for the small remaining
products, follows the chosen count. The default is every core, or ``CAFFELRP_NUM_THREADS``.
"""
import ctypes
import os

_ENV = "CAFFELRP_NUM_THREADS"
# Names of OpenBLAS's thread-count setter in the builds numpy and scipy ship (symbol suffixes
# differ between the 32- and 64-bit-integer builds).
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def _default_threads():
    value = os.environ.get(_ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError("%s must be a positive integer, got %r" % (_ENV, value)) from None
        if n < 1:
            raise ValueError("%s must be a positive integer, got %r" % (_ENV, value))
        return n
    return os.cpu_count() or 1


def _loaded_openblas_libraries():
    """Paths of the OpenBLAS shared libraries mapped into this process (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _is_gemm_blas(path):
    """Is this the OpenBLAS behind scipy.linalg.cython_blas (the one the GEMM kernel calls)?"""
    return "scipy.libs" in path or "/scipy/" in path


def _set_blas_threads(n, gemm_blas=False):
    """Resize numpy's OpenBLAS pool (or, with gemm_blas, scipy's) to n threads."""
    import numpy  # noqa: F401  (makes sure numpy's OpenBLAS is loaded before looking for it)
    done = False
    for path in _loaded_openblas_libraries():
        if _is_gemm_blas(path) != gemm_blas:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int] if not name.endswith("64_") else [ctypes.c_int64]
                setter(n)
                done = True
                break
    return done


_num_threads = _default_threads()


def make_gemm_blas_single_threaded():
    """Called once the GEMM kernel (and with it scipy's OpenBLAS) is loaded."""
    import scipy.linalg.cython_blas  # noqa: F401
    _set_blas_threads(1, gemm_blas=True)


def get_num_threads():
    """The number of threads the kernels use."""
    return _num_threads


# Below this many output values a kernel runs on one thread: waking the pool costs more than it saves.
SMALL_WORK = 1 << 15


def threads_for(work):
    """Thread count for a kernel call producing ``work`` values."""
    return 1 if work < SMALL_WORK else _num_threads


def set_num_threads(n):
    """Use ``n`` threads in the kernels and, where it can be reached, in numpy's OpenBLAS."""
    global _num_threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError("the number of threads must be a positive integer, got %r" % (n,))
    _num_threads = n
    _set_blas_threads(n)

if os.environ.get(_ENV, "").strip():
    _set_blas_threads(_num_threads)
