"""How many threads caffelrp's kernels use.

The Cython kernels take the count explicitly (OpenMP ``prange(num_threads=...)``); the GEMMs run in
numpy's OpenBLAS, whose pool is resized through its C entry point where it can be found. The default
is every core, or ``CAFFELRP_NUM_THREADS`` when set.
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


def _set_blas_threads(n):
    import numpy  # noqa: F401  (makes sure numpy's OpenBLAS is loaded before looking for it)
    done = False
    for path in _loaded_openblas_libraries():
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


def get_num_threads():
    """The number of threads the kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads in the kernels and, where it can be reached, in numpy's OpenBLAS."""
    global _num_threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError("the number of threads must be a positive integer, got %r" % (n,))
    _num_threads = n
    _set_blas_threads(n)

if os.environ.get(_ENV, "").strip():
    _set_blas_threads(_num_threads)
