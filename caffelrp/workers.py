"""``explain --workers N`` (and the -c/-f mode's): the batches of a run shared by N forked worker
processes on this machine, each running the kernels on one thread (issue 17, target 1).

Why processes: one process with T kernel threads loses time at every parallel region's end (a
thread waits for the slowest, or for one that lost its core to the helpers that read and write
the files), and the outputs' CPU (JPEG decode, resampling, PNG encoding) then costs both cores.
N single-threaded processes never wait for each other and each does its own reading and writing
in turn with its compute. Measured on CaffeNet, batch 8, 2 cores: two 1-thread processes
explain an image every 29.0 ms, one 2-thread process every 31.7 ms (BENCHMARKS.md).

The workers are forked after the net is loaded: they share its weights (copy-on-write pages) and
need no import or load of their own. A forked child may use OpenMP only on one thread when the
parent ran a parallel region (libgomp's thread pool does not survive ``fork``; two threads hang),
so every worker runs one kernel thread. The results do not depend on the thread count (README
"Fidelity"), so the files are the same bytes as a one-process run's.

A worker takes the next batch from a shared counter (a slow batch does not hold up the others),
explains it with ``work(index)`` and sends ``(done, failure messages)`` back through its pipe.

Interruption: Ctrl-C reaches every process of the terminal's group; the parent also sends SIGTERM
to its workers (``kill`` of the parent alone). A worker stops at its first signal (later ones
are ignored, so the atomic writer's clean-up is not interrupted), the parent collects what was
finished and raises KeyboardInterrupt. A worker that dies (killed, out of memory) or raises
stops the run: the others are stopped and WorkerError names the worker, its images and the
cause. Temporary files a killed worker left are removed.
"""
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import wait

from .errors import CaffeLRPError
from .files import remove_orphaned_temporaries
from .phases import phase
from .threads import set_num_threads

# the bytes one worker's batch holds, per image and per blob element of the net: the forward's
# blobs, as much again for the relevance or gradient, and the layers' scratch. Peak growth
# measured at batch 8, formula 100, one thread: CaffeNet 0.28 GB, GoogLeNet 0.75, VGG-16 2.41;
# this estimate gives 0.20 / 2.03 / 2.93 (safe for the large nets, where it matters)
BYTES_PER_ELEMENT = 24
STOP_TIMEOUT = 30.0       # seconds a stopped worker has to finish its current file


class WorkerError(CaffeLRPError):
    """A worker process died or raised; the message names it, its images and the cause."""


def can_fork():
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def available_memory():
    """Bytes of memory available for new allocations (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker_memory(net, batch_size):
    """The memory one worker's batch of ``batch_size`` images needs (an estimate, bytes)."""
    elements = sum(math.prod(int(d) for d in shape[1:])
                   for shape in net.blob_shapes.values() if shape)
    return BYTES_PER_ELEMENT * elements * int(batch_size)


def auto_count(threads, batches, memory_per_worker, available=None):
    """The worker count of ``--workers auto``: one per kernel thread, at most one per batch, and
    no more than the available memory holds (with a quarter kept free); 1 where fork is not
    available (then the one-process pipeline runs)."""
    if not can_fork():
        return 1
    count = min(int(threads), int(batches))
    available = available_memory() if available is None else available
    if available is not None and memory_per_worker > 0:
        count = min(count, int(0.75 * available // memory_per_worker))
    return max(1, count)


def _child(conn, counter, total, work):
    """A worker's whole life: batches until none is left, then exit (never returns)."""
    state = {"stopping": False, "reporting": False}

    def stop(signum, frame):
        if state["stopping"]:      # the first signal stops the worker, later ones do nothing
            return
        state["stopping"] = True
        if not state["reporting"]:  # a finished batch is reported before the worker stops
            raise KeyboardInterrupt
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code, index = 0, None
    try:
        set_num_threads(1)
        while True:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            if index >= total:
                break
            conn.send(("start", index))
            done, failures = work(index)
            state["reporting"] = True
            conn.send(("result", index, done, failures))
            index = None
            state["reporting"] = False
            if state["stopping"]:
                raise KeyboardInterrupt
        conn.send(("finished",))
    except KeyboardInterrupt:
        code = 130
        _send(conn, ("stopped", index))
    except BaseException as e:    # noqa: B902 -- reported to the parent, which stops the run
        code = 1
        _send(conn, ("error", index, "".join(traceback.format_exception(
            type(e), e, e.__traceback__))))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            conn.close()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)     # not the parent's atexit handlers or ``finally`` blocks


def _send(conn, message):
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass


def _describe_exit(code):
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal %d" % -code
        hint = " (the kernel's out-of-memory killer?)" if -code == signal.SIGKILL else ""
        return "was killed by %s%s" % (name, hint)
    if code == 130:
        return "was stopped by a signal (SIGINT or SIGTERM)"
    return "exited with code %s" % code


class Workers:
    """``start()`` forks ``count`` workers that run ``work(index)`` for index in
    range(total); ``collect(...)`` passes their reports on until they are done. Fork before any
    other thread of this process starts (a thread's locks, stderr's among them, would stay held
    in the children)."""

    def __init__(self, count, total, work):
        self.count, self.total, self.work = int(count), int(total), work
        self.workers = []
        self.started = time.time()

    def start(self):
        context = multiprocessing.get_context("fork")
        counter = context.Value("l", 0)
        for number in range(1, self.count + 1):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(sender, counter, self.total,
                                                           self.work),
                                      name="caffelrp-worker-%d" % number, daemon=True)
            process.start()
            sender.close()
            self.workers.append(_Worker(number, process, receiver))
        return self

    def collect(self, on_start, on_result, names, out_dirs):
        """``on_start(index)`` and ``on_result(index, done, failures)`` run in this process as
        the workers report; ``names(index)`` describes a batch's images for error messages;
        ``out_dirs``: the folders they write to (a killed worker's temporary files are removed).
        Raises KeyboardInterrupt after Ctrl-C (once the workers have stopped and their finished
        batches are reported) and WorkerError when a worker died or raised."""
        try:
            with phase("workers"):
                problem = _collect(self.workers, on_start, on_result)
        finally:   # after Ctrl-C, an error in a callback or a failed worker: stop the others
            _stop_all(self.workers, on_start, on_result)
            for folder in out_dirs:     # what a killed worker was writing
                remove_orphaned_temporaries(folder, self.started)
        if problem is not None:
            worker, index, cause = problem
            where = (" while explaining %s" % names(index)) if index is not None else ""
            raise WorkerError("worker process %d (pid %d)%s %s; the images finished before "
                              "have complete outputs (rerun with --resume, and --workers 1 or "
                              "a smaller --batch-size if memory ran out)"
                              % (worker.number, worker.process.pid, where, cause))


class _Worker:
    def __init__(self, number, process, conn):
        self.number, self.process, self.conn = number, process, conn
        self.current = None       # the batch it works on
        self.ended = False        # it sent its last message (finished, stopped or error)
        self.error = None


def _handle(worker, message, on_start, on_result):
    kind = message[0]
    if kind == "start":
        worker.current = message[1]
        on_start(message[1])
    elif kind == "result":
        worker.current = None
        on_result(*message[1:])
    else:
        worker.ended = True
        if kind == "stopped":
            worker.current = message[1]
        elif kind == "error":
            worker.error = (message[1], "raised an unexpected error:\n" + message[2])


def _drain(worker, on_start, on_result):
    """Read every message a worker sent before its pipe closed."""
    try:
        while worker.conn.poll():
            _handle(worker, worker.conn.recv(), on_start, on_result)
    except (EOFError, OSError):
        pass


def _collect(workers, on_start, on_result):
    """Until every worker has exited: pass its reports on. (worker, batch, cause) of the first
    worker that died or raised, else None."""
    running = {w.process.sentinel: w for w in workers}
    pipes = {w.conn: w for w in workers}
    while running:
        for ready in wait(list(pipes) + list(running)):
            if ready in pipes:
                worker = pipes[ready]
                try:
                    _handle(worker, ready.recv(), on_start, on_result)
                except (EOFError, OSError):
                    del pipes[ready]
            elif ready in running:
                worker = running.pop(ready)
                _drain(worker, on_start, on_result)
                pipes.pop(worker.conn, None)
                worker.process.join()
                if worker.error is not None:
                    return worker, worker.error[0], worker.error[1]
                if not worker.ended or worker.process.exitcode != 0:
                    return worker, worker.current, _describe_exit(worker.process.exitcode)
    return None


def _stop_all(workers, on_start, on_result):
    """Ask the running workers to stop, wait for them (finishing their current file), and
    report what they finished."""
    for worker in workers:
        if worker.process.is_alive():
            try:
                os.kill(worker.process.pid, signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + STOP_TIMEOUT
    for worker in workers:
        while worker.process.is_alive() and time.monotonic() < deadline:
            _drain(worker, on_start, on_result)
            worker.process.join(0.05)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        _drain(worker, on_start, on_result)
