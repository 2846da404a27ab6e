"""How many threads caffelrp's kernels use.

The Cython kernels take the count explicitly (OpenMP ``prange(num_threads=...)``). The GEMM kernel
calls scipy's OpenBLAS from each OpenMP thread, so that OpenBLAS must run single-threaded (one
thread pool, not two fighting over the cores); numpy's OpenBLAS follows the chosen count. Both are
reached through threadpoolctl. The default is every core, or ``CAFFELRP_NUM_THREADS`` (read and
checked at first use, not at import). Counts above MAX_PER_CORE x the cores are clamped with a
warning: OpenMP and OpenBLAS cannot create that many threads (100000 crashed the process).

The results do not depend on the count (the kernels cut their work into fixed-size blocks,
README "Fidelity"), except in Caffe-exact mode, where the given OpenBLAS splits its products by
its own thread count, as it did for the original.
"""
import os
import threading
import warnings
from contextlib import contextmanager

from .limits import UsageError

_ENV = "CAFFELRP_NUM_THREADS"
_WAIT_POLICY = "OMP_WAIT_POLICY"
MAX_PER_CORE = 4


class ThreadCountError(UsageError, ValueError):
    """A thread count (argument or CAFFELRP_NUM_THREADS) that is not a positive integer (a usage
    error: exit 2 on the command line)."""


def max_threads():
    """The largest count used: MAX_PER_CORE threads per core."""
    return MAX_PER_CORE * (os.cpu_count() or 1)


def _clamped(n, where):
    limit = max_threads()
    if n > limit:
        warnings.warn("%s: %d threads is more than %d per core; using %d"
                      % (where, n, MAX_PER_CORE, limit), RuntimeWarning, stacklevel=3)
        return limit
    return n


def _from_environment():
    value = os.environ.get(_ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ThreadCountError("%s must be a positive integer (a thread count), got %r"
                               % (_ENV, value))
    return _clamped(n, _ENV)


def passive_wait_for_the_command(argv=None, environ=None):
    """``python -m caffelrp ...`` runs its OpenMP threads passive (``OMP_WAIT_POLICY=PASSIVE``)
    unless the user chose a policy: a finished parallel region's threads sleep instead of
    spinning. The command runs a writer and a preprocessing thread next to the kernels' team, and
    every spinning thread takes a core from them (and from any other process): on this project's
    2-core machines a 2-thread resample pass took 12-17 ms spinning against 2.5 ms passive under
    load (BENCHMARKS.md, "Folder throughput"). libgomp reads the variable once, when it is loaded
    (by the first kernel import), so this runs in ``caffelrp/__init__`` before that. While
    ``python -m`` locates the module it runs, ``sys.argv[0]`` is ``"-m"``: this is the package
    being imported for its own command; as a library, caffelrp leaves the policy alone."""
    import sys
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if argv[:1] == ["-m"] and _WAIT_POLICY not in environ:
        environ[_WAIT_POLICY] = "PASSIVE"
        return True
    return False


def _is_gemm_blas(path):
    """Is this the OpenBLAS behind scipy.linalg.cython_blas (the one the GEMM kernel calls)?"""
    return "scipy.libs" in path or "/scipy/" in path


def _set_blas_threads(n, gemm_blas=False):
    """Resize numpy's OpenBLAS pool (or, with gemm_blas, scipy's) to n threads; True if found."""
    import numpy  # noqa: F401  (numpy's OpenBLAS must be loaded to be found)
    from threadpoolctl import ThreadpoolController
    done = False
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and _is_gemm_blas(lib.filepath) == gemm_blas:
            lib.set_num_threads(n)
            done = True
    return done


_num_threads = None   # resolved at first use


def make_gemm_blas_single_threaded():
    """Called once the GEMM kernel (and with it scipy's OpenBLAS) is loaded."""
    import scipy.linalg.cython_blas  # noqa: F401
    return _set_blas_threads(1, gemm_blas=True)


def get_num_threads():
    """The number of threads the kernels use."""
    global _num_threads
    if _num_threads is None:
        n = _from_environment()
        if os.environ.get(_ENV, "").strip():
            _set_blas_threads(n)
        _num_threads = n
    return _num_threads


# Below this many output values a kernel runs on one thread: waking the pool costs more than it saves.
SMALL_WORK = 1 << 15


_local = threading.local()


def threads_for(work):
    """Thread count for a kernel call producing ``work`` values (at most this thread's
    ``limited`` count)."""
    if work < SMALL_WORK:
        return 1
    n, limit = get_num_threads(), getattr(_local, "limit", None)
    return n if limit is None else min(n, limit)


@contextmanager
def limited(n):
    """Kernel calls made by this Python thread inside the ``with`` use at most ``n`` threads
    (a helper thread next to the main one, e.g. explain's preprocessing of the next batch, must
    not start a second OpenMP team as large as the main thread's on the same cores)."""
    previous = getattr(_local, "limit", None)
    _local.limit = n
    try:
        yield
    finally:
        _local.limit = previous


def set_num_threads(n):
    """Use ``n`` threads in the kernels and in numpy's OpenBLAS (at most MAX_PER_CORE per core,
    larger counts are clamped with a warning)."""
    global _num_threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ThreadCountError("the number of threads must be a positive integer, got %r" % (n,))
    n = _clamped(n, "set_num_threads")
    _num_threads = n
    _set_blas_threads(n)
