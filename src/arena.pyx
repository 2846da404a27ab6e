# cython: language_level=3
"""A numpy data allocator that keeps freed large buffers for the next pass (caffelrp/memory.py).

A forward pass allocates every blob afresh; blocks of 32 MB and more come from mmap, so each one
costs a page fault per 4 KB page (the kernel zeroes it) on its first write, and returns to the
system when freed: the next pass faults on all of it again. On VGG-16 at batch 8 that is about
0.7 GB per forward. Here, freed blocks of at least ``MIN_BLOCK`` bytes are kept (up to a byte
limit) and handed out again for a request of the same size or up to an eighth smaller, so a
repeated pass of one shape writes into memory that is already mapped.

The handler follows numpy's NEP 49 (``PyDataMem_SetHandler``): numpy calls it for array data
only, in the context (thread / contextvars context) that installed it; an array remembers the
handler that made it and frees through it, wherever it dies. Every block carries a 64-byte
header (its capacity and a magic word), so ``realloc`` and ``free`` know what they hold.
Thread safety: one lock around the cache (numpy may free from any thread). Allocations are
reported to tracemalloc in numpy's domain, as numpy's own allocator does.
"""
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_acquire_lock,
                               PyThread_release_lock, WAIT_LOCK)
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, strncpy

cdef extern from "sys/mman.h" nogil:
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE

cdef extern from "Python.h" nogil:
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void* (*malloc) (void *ctx, size_t size) noexcept nogil
        void* (*calloc) (void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void* (*realloc) (void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free) (void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    int _import_array() except -1
    object PyDataMem_SetHandler(object handler)

_import_array()

cdef enum:
    HEADER = 64               # bytes before the data: keeps numpy's 16-byte alignment and more
    SLOTS = 512               # cached blocks at most
    PAGE = 4096

cdef uint64_t MAGIC = 0xCAFF31A5E7A11C0
# numpy's tracemalloc domain for array data: tracemalloc sees these arrays as it sees numpy's own
cdef unsigned int NPY_TRACE_DOMAIN = 389047
cdef size_t MIN_BLOCK = 1 << 20   # smaller blocks come from malloc's own free lists quickly

cdef struct Header:
    uint64_t magic
    size_t capacity           # data bytes the block holds (without the header)

cdef void* cached_ptr[SLOTS]
cdef size_t cached_cap[SLOTS]
cdef int cached_count = 0
cdef size_t cached_bytes = 0
cdef size_t limit_bytes = 0
# counters for tests and benchmarks
cdef uint64_t hits = 0, misses = 0
cdef PyThread_type_lock lock = PyThread_allocate_lock()
cdef PyDataMem_Handler handler


cdef inline Header* header_of(void *data) noexcept nogil:
    return <Header*>((<char*>data) - HEADER)


cdef void* fresh(size_t size, bint zeroed) noexcept nogil:
    if size > (<size_t>-1) - HEADER:
        return NULL
    cdef char *base = <char*>(calloc(1, size + HEADER) if zeroed else malloc(size + HEADER))
    if base == NULL:
        return NULL
    cdef Header *h = <Header*>base
    h.magic = MAGIC
    h.capacity = size
    cdef size_t start, end
    if size >= MIN_BLOCK and not zeroed:
        # as numpy's own allocator: transparent huge pages for large data (whole pages only)
        start = ((<size_t>base) + PAGE - 1) & ~(<size_t>(PAGE - 1))
        end = ((<size_t>base) + size + HEADER) & ~(<size_t>(PAGE - 1))
        if end > start:
            madvise(<void*>start, end - start, MADV_HUGEPAGE)
    return base + HEADER


cdef void* take(size_t size) noexcept nogil:
    """A cached block holding ``size`` bytes, wasting at most an eighth of it, or NULL."""
    global cached_count, cached_bytes, hits
    cdef int i, best = -1
    cdef void *p
    PyThread_acquire_lock(lock, WAIT_LOCK)
    for i in range(cached_count):
        if cached_cap[i] >= size and cached_cap[i] - size <= cached_cap[i] // 8:
            if best < 0 or cached_cap[i] < cached_cap[best]:
                best = i
    if best < 0:
        PyThread_release_lock(lock)
        return NULL
    p = cached_ptr[best]
    cached_bytes -= cached_cap[best]
    cached_count -= 1
    cached_ptr[best] = cached_ptr[cached_count]
    cached_cap[best] = cached_cap[cached_count]
    hits += 1
    PyThread_release_lock(lock)
    return p


cdef inline void* tracked(void *p, size_t size) noexcept nogil:
    if p != NULL:
        PyTraceMalloc_Track(NPY_TRACE_DOMAIN, <size_t>p, size)
    return p


cdef void* arena_malloc(void *ctx, size_t size) noexcept nogil:
    global misses
    cdef void *p
    if size >= MIN_BLOCK:
        p = take(size)
        if p != NULL:
            return tracked(p, size)
        misses += 1
    return tracked(fresh(size, False), size)


cdef void* arena_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    # zeroed memory: the system's calloc (fresh mmap pages are zero already, nothing to clear)
    if elsize != 0 and nelem > (<size_t>-1) // elsize:
        return NULL
    return tracked(fresh(nelem * elsize, True), nelem * elsize)


cdef void arena_free(void *ctx, void *data, size_t size) noexcept nogil:
    global cached_count, cached_bytes
    if data == NULL:
        return
    PyTraceMalloc_Untrack(NPY_TRACE_DOMAIN, <size_t>data)
    cdef Header *h = header_of(data)
    cdef size_t cap = h.capacity
    if cap >= MIN_BLOCK:
        PyThread_acquire_lock(lock, WAIT_LOCK)
        if cached_count < SLOTS and cached_bytes + cap <= limit_bytes:
            cached_ptr[cached_count] = data
            cached_cap[cached_count] = cap
            cached_count += 1
            cached_bytes += cap
            PyThread_release_lock(lock)
            return
        PyThread_release_lock(lock)
    h.magic = 0
    free(<void*>h)


cdef void* arena_realloc(void *ctx, void *data, size_t new_size) noexcept nogil:
    if data == NULL:
        return arena_malloc(ctx, new_size)
    cdef Header *h = header_of(data)
    if new_size <= h.capacity:
        return tracked(data, new_size)    # Track of a known pointer updates its size
    cdef void *p = arena_malloc(ctx, new_size)
    if p == NULL:
        return NULL             # the old block stays valid, as realloc's contract says
    memcpy(p, data, h.capacity)
    arena_free(ctx, data, h.capacity)
    return p


strncpy(handler.name, b"caffelrp_arena", 126)
handler.version = 1
handler.allocator.ctx = NULL
handler.allocator.malloc = arena_malloc
handler.allocator.calloc = arena_calloc
handler.allocator.realloc = arena_realloc
handler.allocator.free = arena_free

# numpy's name for a handler capsule; the capsule lives as long as this module
HANDLER = PyCapsule_New(<void*>&handler, b"mem_handler", NULL)


def install():
    """Make this the allocator of new numpy arrays in the current context; returns the handler
    it replaces (for ``restore``)."""
    return PyDataMem_SetHandler(HANDLER)


def restore(previous):
    """Give the current context back the handler ``install`` returned."""
    PyDataMem_SetHandler(previous)


def set_limit(size_t nbytes):
    """Keep at most ``nbytes`` of freed blocks (0: keep none); blocks over it are released."""
    global limit_bytes
    limit_bytes = nbytes
    release(nbytes)


def release(size_t keep=0):
    """Return cached blocks to the system until at most ``keep`` bytes stay cached."""
    global cached_count, cached_bytes
    cdef void *p
    while True:
        PyThread_acquire_lock(lock, WAIT_LOCK)
        if cached_count == 0 or cached_bytes <= keep:
            PyThread_release_lock(lock)
            return
        cached_count -= 1
        p = cached_ptr[cached_count]
        cached_bytes -= cached_cap[cached_count]
        PyThread_release_lock(lock)
        header_of(p).magic = 0
        free(<void*>header_of(p))


def stats():
    """(cached blocks, cached bytes, limit, hits, misses) of the cache."""
    return cached_count, cached_bytes, limit_bytes, hits, misses
