"""explain's pipeline around the compute: the next batch's images read and preprocessed ahead by
one helper thread, the finished batch's output files written behind by another, while the main
thread runs the net (issue 17, target 1: reading + preprocessing and the outputs -- PNG encoding,
.npy, sidecar -- took a third of the relevance time when they ran in turn with it).

``OutputWriter.submit(job, label)`` queues a function; one thread runs the jobs in the order they
were submitted. The queue is bounded (``depth`` jobs), so the main thread waits when it gets that
far ahead and the memory the pending jobs hold stays bounded.

Errors: a job handles the failures it expects itself (explain lists an image whose outputs
cannot be written and goes on). Anything else a job raises (a bug, MemoryError) stops the writer;
the exception, with a note naming the job's ``label`` (the image), is raised again in the main
thread at its next ``submit`` or at ``close``.

Interruption: ``cancel()`` (explain calls it on Ctrl-C and on any error) drops the jobs not yet
started and waits for the one running. Every file is written through ``files.write_atomically``
(a temporary file and a rename, the temporary removed on any exception), so after ``cancel``
returns no file is half written; the thread is never left to die inside a write at exit.

``Prefetch(items, prepare)`` yields ``(item, prepare(item))`` in order with the next item's
``prepare`` already running in a helper thread; its kernels use one thread (``threads.limited``),
the main thread's kernels keep theirs.

Both helpers run at a lower priority (``background``: nice + BACKGROUND_NICE, Linux): their work
(~16 ms of CPU an image for CaffeNet's outputs) then goes into the moments a core is idle -- Python
between the kernels, a thread waiting at a kernel's end -- instead of taking a core from a kernel
whose other threads then wait for it. When they fall behind, the main thread waits for them (the
bounded queue, the prefetched batch) and they get the cores.
"""
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .phases import phase
from .threads import limited

_STOP = object()
# CFS weights: nice 10 gets ~1/10 of a core a nice-0 thread wants, and all of an idle one
BACKGROUND_NICE = 10


def background():
    """Lower the calling thread's priority by BACKGROUND_NICE (Linux, where a thread's nice
    value is its own; elsewhere, or where it cannot be changed, nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except (AttributeError, OSError):
        pass


def _add_note(error, text):
    """``error.add_note(text)`` (Python 3.11+: shown with the traceback); before 3.11 the same
    ``__notes__`` list, which the traceback does not show."""
    if hasattr(error, "add_note"):
        error.add_note(text)
    else:
        error.__notes__ = list(getattr(error, "__notes__", [])) + [text]


class OutputWriter:
    def __init__(self, depth=16):
        self._queue = queue.Queue(maxsize=max(int(depth), 1))
        self._error = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caffelrp-writer", daemon=True)
        self._thread.start()

    def _run(self):
        background()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, label = item
            if self._cancelled.is_set() or self._error is not None:
                continue          # drained without running: cancel() or an earlier error
            try:
                with phase("writer"):
                    job()
            except BaseException as e:   # noqa: B902 -- raised again in the main thread
                if label:
                    _add_note(e, "while writing the outputs of %s" % label)
                self._error = e

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            self._cancelled.set()
            raise error

    def submit(self, job, label=""):
        """Queue ``job()`` (waits while ``depth`` jobs are pending); raises an earlier job's
        unexpected error."""
        self._raise_error()
        if not self._thread.is_alive():
            raise RuntimeError("the output writer is closed")
        with phase("writer wait"):
            while True:
                try:
                    self._queue.put((job, label), timeout=0.1)
                    return
                except queue.Full:
                    self._raise_error()     # a failed writer drains its queue: no deadlock

    def close(self):
        """Wait until every queued job has run; raise a job's unexpected error."""
        if self._thread.is_alive():
            with phase("writer wait"):
                self._queue.put(_STOP)
                self._thread.join()
        self._raise_error()

    def cancel(self):
        """Drop the jobs not started, wait for the running one (no half-written file)."""
        self._cancelled.set()
        if self._thread.is_alive():
            while True:                 # make room for the stop mark: discard pending jobs
                try:
                    self._queue.put_nowait(_STOP)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
            self._thread.join()
        self._error = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.cancel()
        return False


class Prefetch:
    """``for item, prepared in Prefetch(items, prepare)``: ``prepare(item)`` of the next item runs
    in a helper thread while the loop body works on the current one. ``close()`` (also on
    leaving a ``with``) cancels what is not started and waits for the helper."""

    def __init__(self, items, prepare):
        self._items = list(items)
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caffelrp-prefetch",
                                        initializer=background)

    def _helper(self, item):
        with limited(1), phase("prefetch (helper thread)"):
            return self._prepare(item)

    def __iter__(self):
        ahead = self._pool.submit(self._helper, self._items[0]) if self._items else None
        for k, item in enumerate(self._items):
            with phase("prefetch wait"):
                prepared = ahead.result()
            if k + 1 < len(self._items):
                ahead = self._pool.submit(self._helper, self._items[k + 1])
            yield item, prepared

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close()
        return False
