"""What the thread-count-independent GEMM costs, and what Caffe-exact mode costs.

    python benchmarks/bench_determinism.py [--repeats 7] [--caffe-blas PATH]

1. GEMM on CaffeNet's forward shapes (per image and group): caffelrp's matmul (fixed-size blocks
   handed to the threads) at 1 and 2 threads, against ONE single-threaded sgemm call for the
   whole product (scipy.linalg.blas.sgemm on the same OpenBLAS), which is what the 1-thread
   path did before the blocks were fixed. The ratio block/one-call at 1 thread is the price of
   determinism when nothing runs in parallel.
2. CaffeNet forward + LRP (f100) at batch 1 on a padded reference image, default mode and, with
   --caffe-blas, Caffe-exact mode, in the same turns (median of --repeats).
Medians of repeated runs, every variant timed in the same turn.
"""
import argparse
import json
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.linalg import blas

import common  # noqa: F401  (puts this checkout's caffelrp first on sys.path)

import caffelrp
from caffelrp.attribution import relevance
from caffelrp.kernels.gemm import matmul

# (M, K, N): conv1..conv5 of CaffeNet per image and group, fc6 at batch 8
SHAPES = [("conv1", 96, 363, 3025), ("conv2", 128, 1200, 729), ("conv3", 384, 2304, 169),
          ("conv4", 192, 1728, 169), ("conv5", 128, 1728, 169), ("fc6 b8", 8, 9216, 4096)]


def median_times(fns, repeats):
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def bench_gemm(repeats):
    print("%-8s %12s %12s %12s %10s" % ("shape", "1 call", "blocks 1T", "blocks 2T",
                                        "1T ratio"))
    rng = np.random.default_rng(0)
    for name, m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        # scipy's Fortran sgemm: C^T = B^T A^T on the same memory (no copies)
        at, bt = np.asfortranarray(a.T), np.asfortranarray(b.T)
        t = median_times({
            "one": lambda: blas.sgemm(1.0, bt, at),
            "b1": lambda: matmul(a, b, c, 1),
            "b2": lambda: matmul(a, b, c, 2)}, repeats)
        print("%-8s %9.2f ms %9.2f ms %9.2f ms %10.2f" % (name, t["one"] * 1e3, t["b1"] * 1e3,
                                                         t["b2"] * 1e3, t["b1"] / t["one"]))


def bench_caffenet(repeats, library):
    ref = Path(os.environ.get("CAFFELRP_SHARED_REFERENCE", "../shared/reference"))
    spec = importlib.util.spec_from_file_location("gen", ref / "caffemodel_gen.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    manifest = json.loads((ref / "models/caffenet/manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "caffenet.caffemodel"
        weights.write_bytes(gen.net_param_bytes(manifest, 1))
        net = caffelrp.Net(ref / "models/caffenet/deploy.prototxt", weights)
    x = np.load(ref / "expected/caffenet/scooter10/input.npy")[None]

    def run(path):
        caffelrp.set_caffe_blas(path)
        net.forward(x)
        relevance(net, x, rule=100, target=[1])
        caffelrp.set_caffe_blas(None)

    fns = {"default": lambda: run(None)}
    if library:
        fns["caffe-exact"] = lambda: run(library)
    t = median_times(fns, repeats)
    for name, v in t.items():
        print("CaffeNet forward + LRP f100, batch 1, %-12s %7.3f s  (x%.2f)"
              % (name, v, v / t["default"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--caffe-blas", metavar="PATH")
    args = p.parse_args()
    print("threads available:", os.cpu_count())
    bench_gemm(args.repeats)
    caffelrp.set_num_threads(2)
    bench_caffenet(max(3, args.repeats // 2), args.caffe_blas)


if __name__ == "__main__":
    main()
