"""Where a command's wall time goes, for the benchmarks (issue 17, target 1).

With ``CAFFELRP_TIMINGS=FILE`` in the environment, ``python -m caffelrp explain ...`` writes a
JSON object to FILE when it returns: the seconds spent in each named phase (summed over its
calls, per thread: the writer thread's phases overlap the main thread's) and the monotonic clock
when ``main`` started and returned. Linux's monotonic clock is one clock for every process, so a
benchmark that reads it just before starting the command gets interpreter start + imports
(``main_start`` minus its own reading) and the interpreter's exit (the process's end minus
``main_end``) as well: the parts add up to the whole command.

Without the variable, ``phase`` costs one dictionary update per call (a few per image).
"""
import json
import os
import threading
import time
from contextlib import contextmanager

ENV = "CAFFELRP_TIMINGS"

_totals = {}
_lock = threading.Lock()


@contextmanager
def phase(name):
    """Add the wall time of the ``with`` body to phase ``name``."""
    start = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        with _lock:
            _totals[name] = _totals.get(name, 0.0) + elapsed


def totals():
    """{phase: seconds} so far (a copy)."""
    with _lock:
        return dict(_totals)


def write(main_start, main_end):
    """Write the totals and the clock readings to ``$CAFFELRP_TIMINGS`` (if set)."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        return
    record = {"main_start": main_start, "main_end": main_end, "phases": totals()}
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
