"""Where the time of a pass goes, by kind of work: GEMM, im2col/col2im, the LRP element-wise
kernels, pooling/LRN kernels, numpy functions, and the rest (Python glue, numpy operators and
array methods).

    python benchmarks/profile_layers.py [--models caffenet googlenet] [--batches 1 8]
                                        [--ig-steps 50] [--repeats 3] [--threads N]
                                        [--label before] [--write FILE]

Seeded random (He-scaled) weights, a random input. For each model, batch and workload (formula
100 beta 1; Integrated Gradients with ``--ig-steps`` fixed steps at batch 1) the pass runs
``--repeats`` times uninstrumented (its median is "total"), then once instrumented: every compiled
kernel that a caffelrp module calls (the names it imported from ``caffelrp.kernels.*``) and every
``np.<function>`` call made from a caffelrp module is wrapped in a timer (~1 us a call). The
GEMM rate counts 2*m*n*k per ``matmul`` call. "rest" = instrumented total minus every timed
call: Python code between the calls, and numpy work done by operators and array methods
(``a * b``, ``x.sum()``, ``x.astype``) that the wrappers do not see.
"""
import argparse
import collections
import sys
import tempfile
import time
import types

import numpy as np

from common import (MEAN_BGR, command, emit, load_average, median_time, random_input,
                    seeded_net)

import caffelrp

CATEGORIES = {"gemm": "GEMM", "im2col": "im2col/col2im", "lrp_ratios": "LRP element-wise",
              "relevance": "LRP element-wise", "pooling": "pooling/LRN", "lrn": "pooling/LRN",
              "resample": "other kernels"}
COLUMNS = ["GEMM", "im2col/col2im", "LRP element-wise", "pooling/LRN", "numpy functions",
           "rest (Python, numpy operators)"]


class Recorder:
    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self.gemm_flops = 0
        self.depth = 0        # nested timed calls are counted once, in the outermost

    def timed(self, category, fn, flops=None):
        def wrapper(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - t
                self.calls[category] += 1
                if flops is not None:
                    self.gemm_flops += flops(*args)
                self.depth -= 1
        return wrapper


def _matmul_flops(a, b, *rest):
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


class _TimedUfunc:
    """A ufunc whose calls are timed; its methods (reduce, at, ...) pass through."""

    def __init__(self, ufunc, call):
        self._ufunc, self._call = ufunc, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._ufunc, name)


class _TimedNumpy:
    """``np`` as a caffelrp module sees it, with its functions timed (types and constants as
    they are, so isinstance checks and dtypes still work)."""

    def __init__(self, recorder):
        self._recorder = recorder
        self._cache = {}

    def __getattr__(self, name):
        value = getattr(np, name)
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)) or (
                callable(value) and type(value).__name__ in ("_ArrayFunctionDispatcher",)):
            if name not in self._cache:
                self._cache[name] = self._recorder.timed("numpy functions", value)
            return self._cache[name]
        if isinstance(value, np.ufunc):
            if name not in self._cache:
                self._cache[name] = _TimedUfunc(value, self._recorder.timed("numpy functions",
                                                                            value))
            return self._cache[name]
        return value       # types, constants, submodules


def instrument(recorder):
    """Wrap the kernels and numpy as every loaded caffelrp module sees them; returns undo."""
    undo = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("caffelrp.") or name.startswith("caffelrp.kernels"):
            continue
        for attr, value in list(vars(module).items()):
            origin = getattr(value, "__module__", "") or ""
            if value is np:
                undo.append((module, attr, value))
                setattr(module, attr, _TimedNumpy(recorder))
            elif origin.startswith("caffelrp.kernels.") and callable(value):
                kernel = origin.rsplit(".", 1)[1]
                category = CATEGORIES.get(kernel, "other kernels")
                undo.append((module, attr, value))
                setattr(module, attr, recorder.timed(
                    category, value, _matmul_flops if kernel == "gemm" else None))

    def restore():
        for module, attr, value in undo:
            setattr(module, attr, value)
    return restore


def profile(fn, repeats):
    total = median_time(fn, repeats)
    recorder = Recorder()
    restore = instrument(recorder)
    try:
        t = time.perf_counter()
        fn()
        instrumented = time.perf_counter() - t
    finally:
        restore()
    timed = sum(recorder.seconds.values())
    recorder.seconds["rest (Python, numpy operators)"] = instrumented - timed
    return total, instrumented, recorder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["caffenet", "googlenet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="kernel threads (default: caffelrp's)")
    parser.add_argument("--label", default="", help="a word for the heading (before / after)")
    parser.add_argument("--write")
    args = parser.parse_args()
    if args.threads:
        caffelrp.set_num_threads(args.threads)
    threads = caffelrp.get_num_threads()
    loads = [load_average()]
    lines = ["## Profile by kind of work%s (issue 17)" % (" (%s)" % args.label if args.label
                                                         else ""), "",
             "Command: `%s` (threads %d; total = median of %d uninstrumented runs, the columns "
             "from one instrumented run, ms; load average %%s)." % (
                 command(__file__), threads, args.repeats), "",
             "| model | workload | batch | total ms | per image ms | %s | GEMM calls | GEMM "
             "GFLOP/s |" % " | ".join(COLUMNS),
             "|---|---|---|---|---|%s---|---|" % ("---|" * len(COLUMNS))]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            workloads = []
            for batch in args.batches:
                x = random_input(net, batch, seed=batch)
                workloads.append(("f100 beta 1", batch, lambda x=x: net.relevance(
                    x, rule=100, eps=1.0, beta=1.0, target="top1")))
            x1 = random_input(net, 1)
            workloads.append(("IG %d steps" % args.ig_steps, 1, lambda: net.integrated_gradients(
                x1, target="top1", baseline="black", mean=MEAN_BGR, steps=args.ig_steps)))
            for what, batch, fn in workloads:
                total, instrumented, rec = profile(fn, args.repeats)
                loads.append(load_average())
                scale = total / instrumented     # the columns as shares of the median total
                gemm_s = rec.seconds["GEMM"]
                row = "| %s | %s | %d | %.1f | %.1f | %s | %d | %.0f |" % (
                    key, what, batch, 1e3 * total, 1e3 * total / batch,
                    " | ".join("%.1f" % (1e3 * scale * rec.seconds[c]) for c in COLUMNS),
                    rec.calls["GEMM"], rec.gemm_flops / gemm_s / 1e9 if gemm_s else 0)
                lines.append(row)
                print(row, flush=True)
    lines[2] = lines[2] % "/".join("%.1f" % v for v in loads)
    emit(lines + [""], args.write)


if __name__ == "__main__":
    main()
