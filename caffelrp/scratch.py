"""Scratch buffers for the large temporaries of convolutions: im2col matrices and the products a
relevance rule forms on them.

Why keep them: glibc serves an allocation above 32 MB with a fresh mmap and returns it to the
system when it is freed, so every call touched new pages again. VGG-16's first convolutions work
on column matrices of 115 MB per image; on this project's virtual machines a first touch costs up
to 15x a second one (measured: 0.075 s vs 0.005 s for 115 MB right after other memory was freed),
which made the relevance pass of conv1_2 vary between 0.1 s and 0.55 s. A buffer kept per role is
touched once and reused by every later layer and call.

``take(role, shape)`` returns a float32 array of that shape whose contents are undefined; the next
``take`` of the same role in the same thread may return the same memory, so a caller uses one role
per temporary that is alive at the same time and never lets a scratch array escape its function.
Small requests (below ``MIN_BYTES``) are plain allocations: numpy's own cache serves them well.
``COLUMNS`` is the role of a convolution's column matrix in its forward pass, its gradient and its
relevance rule alike: none of them runs inside another, so one buffer serves all three.
The buffers are per thread, so nets used from several Python threads do not share them.
``release()`` frees this thread's buffers (they are at most a few hundred MB per role: the column
budget of ``caffelrp.layers.conv``).

The same first-touch cost hits every blob a pass makes (VGG-16 at batch 8: about 0.7 GB of new
arrays per forward, each freed by the next). ``reusing()`` installs, for the arrays a pass makes,
numpy's allocator from ``src/arena.pyx``: freed blocks of 1 MB and more are kept, up to
``CAFFELRP_ARENA_BYTES`` bytes (default: a quarter of the memory, at most 4 GiB; 0 keeps none),
and serve later requests of the same size. ``release()`` returns them too.
"""
import contextlib
import functools
import os
import threading

import numpy as np

from .errors import CaffeLRPError
from .kernels import arena

MIN_BYTES = 4 << 20
COLUMNS = "columns"

_local = threading.local()


def _buffers():
    pool = getattr(_local, "buffers", None)
    if pool is None:
        pool = _local.buffers = {}
    return pool


def take(role, shape):
    """A float32 array of ``shape`` (contents undefined) in this thread's ``role`` buffer."""
    size = 1
    for d in shape:
        size *= int(d)
    if size * 4 < MIN_BYTES:
        return np.empty(shape, dtype=np.float32)
    pool = _buffers()
    buf = pool.get(role)
    if buf is None or buf.size < size:
        pool.pop(role, None)   # free the smaller one before allocating its successor
        buf = pool[role] = np.empty(size, dtype=np.float32)
    return buf[:size].reshape(shape)


def held_bytes():
    """Bytes held by this thread's buffers."""
    return sum(buf.nbytes for buf in _buffers().values())


def release():
    """Free this thread's scratch buffers (they are made again when next needed) and the freed
    blocks the passes' allocator keeps."""
    _buffers().clear()
    arena.release()


# ------------------------------------------------------------ the allocator of the passes
ARENA_ENV = "CAFFELRP_ARENA_BYTES"
ARENA_MAX_DEFAULT = 4 << 30
_arena_limit = None   # resolved at first use


class ArenaSettingError(CaffeLRPError, ValueError):
    """CAFFELRP_ARENA_BYTES is not a byte count."""


def _default_arena_limit():
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 4 * ARENA_MAX_DEFAULT
    return min(ARENA_MAX_DEFAULT, memory // 4)


def arena_limit():
    """Bytes of freed blocks the passes' allocator keeps at most."""
    global _arena_limit
    if _arena_limit is None:
        value = os.environ.get(ARENA_ENV, "").strip()
        if value and not value.isdigit():
            raise ArenaSettingError("%s must be a number of bytes (0: keep no freed blocks), "
                                    "got %r" % (ARENA_ENV, value))
        set_arena_limit(int(value) if value else _default_arena_limit())
    return _arena_limit


def set_arena_limit(nbytes):
    """Keep at most ``nbytes`` of freed blocks for the next pass (0: keep none)."""
    global _arena_limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise ArenaSettingError("the arena limit is a byte count >= 0, got %r" % (nbytes,))
    _arena_limit = int(nbytes)
    arena.set_limit(_arena_limit)


@contextlib.contextmanager
def reusing():
    """Within: new numpy arrays (of this thread / context) come from the allocator that keeps
    freed large blocks. Arrays made here stay valid after it; they free through it wherever they
    die. Nesting is harmless."""
    if arena_limit() == 0:
        yield
        return
    previous = arena.install()
    try:
        yield
    finally:
        arena.restore(previous)


def reusing_memory(method):
    """Decorator: run ``method`` within ``reusing()``."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with reusing():
            return method(*args, **kwargs)
    return wrapper
