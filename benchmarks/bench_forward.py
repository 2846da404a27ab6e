"""Load and forward times of caffelrp next to OpenCV's Caffe importer, in one run.

    python benchmarks/bench_forward.py [--repeats 7] [--models caffenet googlenet vgg16]
                                       [--write BENCHMARKS.md]

Weights are seeded random (He-scaled) files written to a temp folder in the format of the real zoo
files. Every figure is the median of ``--repeats`` runs after one warm-up run; both libraries use all
cores (the OpenCV thread count is set to caffelrp's). Peak memory of loading is measured in a fresh
subprocess (growth of its peak RSS, VmHWM, during the load), relative to the file size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from common import MODELS, REPO, command, emit, median_time, write_seeded_weights

import caffelrp

# VmHWM (this process image's peak RSS) rather than ru_maxrss, which Linux carries over from the
# forked parent across exec.
LOAD_PROBE = r"""
import sys, time, json
import caffelrp
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
before = peak()
t = time.perf_counter()
net = caffelrp.Net(sys.argv[1], sys.argv[2])
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "peak_growth_bytes": peak() - before}))
"""


def bench_model(key, folder, repeats, batches):
    import cv2
    prototxt, weights = write_seeded_weights(key, folder)
    size = weights.stat().st_size

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    probe = json.loads(subprocess.run([sys.executable, "-c", LOAD_PROBE, str(prototxt),
                                       str(weights)], capture_output=True, text=True,
                                      check=True, env=env).stdout)
    load_ours = median_time(lambda: caffelrp.Net(prototxt, weights), repeats)
    load_cv = median_time(lambda: cv2.dnn.readNetFromCaffe(str(prototxt), str(weights)), repeats)

    ours = caffelrp.Net(prototxt, weights)
    theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    theirs.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    rows = []
    for batch in batches:
        c, h, w = ours.blob_shapes[ours.inputs[0]][1:]
        x = np.random.default_rng(batch).uniform(-120, 130, (batch, c, h, w)).astype(np.float32)

        def run_cv():
            theirs.setInput(x)
            theirs.forward()
        t_ours = median_time(lambda: ours.forward(x), repeats)
        t_cv = median_time(run_cv, repeats)
        rows.append({"batch": batch, "ours": t_ours, "opencv": t_cv,
                     "gflops": ours.flops() / t_ours / 1e9})
    return {"model": key, "file_mb": size / 1e6, "load_ours": load_ours, "load_cv": load_cv,
            "load_probe_s": probe["seconds"], "load_peak_ratio": probe["peak_growth_bytes"] / size,
            "forward": rows}


def report(results, command_line, threads):
    lines = ["## Forward pass and weight loading (issue 2)", "",
             "Command: `%s` (threads: %d; median of the repeats; seeded random weights)." % (
                 command_line, threads), "",
             "| model | batch | caffelrp s | OpenCV s | ratio ours/OpenCV | caffelrp GFLOP/s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for f in r["forward"]:
            lines.append("| %s | %d | %.4f | %.4f | %.2f | %.1f |" % (
                r["model"], f["batch"], f["ours"], f["opencv"], f["ours"] / f["opencv"],
                f["gflops"]))
    lines += ["", "| model | caffemodel MB | caffelrp load s | OpenCV load s | ratio | peak "
              "memory growth / file size (fresh process) |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %s | %.0f | %.3f | %.3f | %.2f | %.2f |" % (
            r["model"], r["file_mb"], r["load_ours"], r["load_cv"],
            r["load_ours"] / r["load_cv"], r["load_peak_ratio"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", help="write the markdown table to this file")
    args = parser.parse_args()
    import cv2
    threads = caffelrp.get_num_threads()
    cv2.setNumThreads(threads)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            results.append(bench_model(key, folder, args.repeats, args.batches))
            print(json.dumps(results[-1]), flush=True)
    emit(report(results, command(__file__), threads), args.write)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
