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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import caffelrp  # noqa: E402
from caffelrp.io.caffemodel import write_caffemodel  # noqa: E402

MODELS = {
    "caffenet": ("bvlc_reference_caffenet", "v1"),
    "googlenet": ("bvlc_googlenet", "v1"),
    "vgg16": ("vgg16", "v1"),
}

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


def random_layers(net, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for name, blobs in net.params.items():
        arrays = []
        for j, b in enumerate(blobs):
            if j == 0:
                fan_in = int(np.prod(b.shape[1:])) if b.ndim > 1 else b.size
                arrays.append((rng.standard_normal(b.shape, dtype=np.float32)
                               * np.float32(np.sqrt(2.0 / fan_in))))
            else:
                arrays.append(np.full(b.shape, 0.01, np.float32))
        out.append((name, net.layer(name).type, arrays))
    return out


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_medians(fns, repeats, inner=1):
    """Median time of each of ``fns``, measured in turns (after one warm-up each) so that the
    machine's drift meets all of them alike; the first (a short reference) runs ``inner`` times
    a turn."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            for _ in range(inner if k == 0 else 1):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def bench_model(key, folder, repeats, batches):
    import cv2
    directory, fmt = MODELS[key]
    prototxt = REPO / "models" / directory / "deploy.prototxt"
    weights = Path(folder) / (key + ".caffemodel")
    write_caffemodel(weights, random_layers(caffelrp.Net(prototxt)), fmt=fmt)
    size = weights.stat().st_size

    probe = json.loads(subprocess.run([sys.executable, "-c", LOAD_PROBE, str(prototxt),
                                       str(weights)], capture_output=True, text=True,
                                      check=True).stdout)
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


def report(results, command, threads):
    lines = ["## Forward pass and weight loading (issue 2)", "",
             "Command: `%s` (threads: %d; median of the repeats; seeded random weights)." % (
                 command, threads), "",
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
    return "\n".join(lines) + "\n"


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
    command = "python benchmarks/bench_forward.py " + " ".join(sys.argv[1:])
    text = report(results, command.strip(), threads)
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
