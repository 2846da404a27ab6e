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
"""
import threading

import numpy as np

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
    """Free this thread's scratch buffers (they are made again when next needed)."""
    _buffers().clear()
