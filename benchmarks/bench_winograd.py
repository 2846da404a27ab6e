"""Winograd F(4x4,3x3) against im2col + GEMM on VGG-16's 3x3 convolutions, and the VGG-16 forward
with and without it next to OpenCV's, in one run.

    python benchmarks/bench_winograd.py [--repeats 7] [--batches 1 8] [--write FILE]

Per layer: the Convolution layer's forward (caffelrp.layers.conv, He-scaled seeded weights,
ReLU-like inputs) by both paths, measured in turns; its float32 error against a float64
convolution (batch 1), as a fraction of the layer's largest output. Whole net: ``Net.forward`` on
seeded random weights (as benchmarks/bench_forward.py) with Winograd on and off, and OpenCV's
``cv2.dnn`` (OpenCV backend, same thread count), in turns. Every figure is the median of the
repeats after a warm-up; the machine's load average (``/proc/loadavg``) is printed before and
after, since a shared machine slows every column alike only if they are measured in turns.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# before any kernel loads libgomp, which reads it once: idle threads sleep instead of spinning
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import caffelrp  # noqa: E402
from caffelrp import winograd  # noqa: E402
from caffelrp.io.caffemodel import write_caffemodel  # noqa: E402
from caffelrp.layers.conv import Convolution  # noqa: E402
from caffelrp.proto import caffe_pb2  # noqa: E402

# VGG-16's 3x3 convolutions at 224x224: (name, input channels, output channels, size)
VGG16 = [("conv1_1", 3, 64, 224), ("conv1_2", 64, 64, 224),
         ("conv2_1", 64, 128, 112), ("conv2_2", 128, 128, 112),
         ("conv3_1", 128, 256, 56), ("conv3_2", 256, 256, 56), ("conv3_3", 256, 256, 56),
         ("conv4_1", 256, 512, 28), ("conv4_2", 512, 512, 28), ("conv4_3", 512, 512, 28),
         ("conv5_1", 512, 512, 14), ("conv5_2", 512, 512, 14), ("conv5_3", 512, 512, 14)]


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def in_turns(fns, repeats):
    """Median seconds of each of ``fns``, run in turns after one warm-up each."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def conv_layer(c, k, size, batch):
    p = caffe_pb2.LayerParameter(name="conv", type="Convolution", bottom=["x"], top=["y"])
    p.convolution_param.num_output = k
    p.convolution_param.kernel_size.append(3)
    p.convolution_param.pad.append(1)
    layer = Convolution(p, 0)
    layer.setup([(batch, c, size, size)])
    return layer


def correlate64(x, w, b):
    """float64 3x3 pad-1 convolution (the test suite's restatement, tests/test_winograd.py)."""
    x = np.asarray(x, np.float64)
    n, c, h, wd = x.shape
    big = np.zeros((n, c, h + 2, wd + 2))
    big[:, :, 1:-1, 1:-1] = x
    y = np.zeros((n, w.shape[0], h, wd)) + np.asarray(b, np.float64)[None, :, None, None]
    for u in range(3):
        for v in range(3):
            y += np.einsum("nchw,kc->nkhw", big[:, :, u:u + h, v:v + wd],
                           np.asarray(w[:, :, u, v], np.float64))
    return y


def bench_layers(batches, repeats):
    rows = []
    rng = np.random.default_rng(0)
    for name, c, k, size in VGG16:
        weights = (rng.standard_normal((k, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
        bias = np.full(k, 0.01, np.float32)
        for batch in batches:
            layer = conv_layer(c, k, size, batch)
            layer.blobs = [weights, bias]
            x = (np.maximum(rng.standard_normal((batch, c, size, size)), 0) * 20) \
                .astype(np.float32)

            def gemm():
                winograd.set_winograd(False)
                return layer.forward([x])[0]

            def wino():   # directly: also measured where the layer would not use it
                return winograd.forward(layer, x)
            t_wino, t_gemm = in_turns([wino, gemm], repeats)
            row = {"layer": name, "c": c, "k": k, "size": size, "batch": batch,
                   "winograd": t_wino, "gemm": t_gemm,
                   "used": winograd.shape_applies(layer.geometry, 1, x.shape)}
            if batch == batches[0]:
                expected = correlate64(x[:1], weights, bias)
                largest = np.abs(expected).max()
                row["err_winograd"] = np.abs(wino()[:1] - expected).max() / largest
                row["err_gemm"] = np.abs(gemm()[:1] - expected).max() / largest
            winograd.set_winograd(True)
            rows.append(row)
            print(row, flush=True)
    return rows


def bench_net(batches, repeats, folder):
    import cv2
    from common import random_layers
    prototxt = REPO / "models" / "vgg16" / "deploy.prototxt"
    weights = Path(folder) / "vgg16.caffemodel"
    write_caffemodel(weights, random_layers(caffelrp.Net(prototxt)), fmt="v1")
    ours = caffelrp.Net(prototxt, weights)
    theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    theirs.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).uniform(-120, 130, (batch, 3, 224, 224)) \
            .astype(np.float32)

        def on():
            winograd.set_winograd(True)
            return np.array(ours.forward(x)["prob"])

        def off():
            winograd.set_winograd(False)
            return np.array(ours.forward(x)["prob"])

        def cv():
            theirs.setInput(x)
            return theirs.forward()
        t_on, t_off, t_cv = in_turns([on, off, cv], repeats)
        on()
        fast = np.array(ours.blobs["fc8"], np.float64)
        off()
        slow = np.array(ours.blobs["fc8"], np.float64)
        winograd.set_winograd(True)
        row = {"batch": batch, "winograd": t_on, "gemm": t_off, "opencv": t_cv,
               "logit_diff": np.abs(fast - slow).max() / np.abs(slow).max()}
        rows.append(row)
        print(row, flush=True)
    return rows


def report(layers, nets, command, threads, loads):
    lines = ["Command: `%s` (threads: %d; median of the repeats, measured in turns; load "
             "average before / after: %s / %s on 2 cores)." % (command, threads, *loads), "",
             "| layer | C -> K | size | batch | Winograd ms | im2col+GEMM ms | speedup | "
             "error Winograd | error GEMM |", "|---|---|---|---|---|---|---|---|---|"]
    for r in layers:
        err = ("%.1e | %.1e" % (r["err_winograd"], r["err_gemm"])) if "err_winograd" in r \
            else " | "
        lines.append("| %s%s | %d -> %d | %d | %d | %.1f | %.1f | %.2f | %s |" % (
            r["layer"], "" if r["used"] else " (not used)", r["c"], r["k"], r["size"],
            r["batch"], 1e3 * r["winograd"], 1e3 * r["gemm"], r["gemm"] / r["winograd"], err))
    for batch in sorted({r["batch"] for r in layers}):
        used = [r for r in layers if r["batch"] == batch and r["used"]]
        lines.append("| all used, sum | | | %d | %.1f | %.1f | %.2f | | |" % (
            batch, 1e3 * sum(r["winograd"] for r in used), 1e3 * sum(r["gemm"] for r in used),
            sum(r["gemm"] for r in used) / sum(r["winograd"] for r in used)))
    lines += ["", "| VGG-16 forward | Winograd s | im2col+GEMM s | OpenCV s | Winograd / OpenCV "
              "| fc8 difference / max fc8 |", "|---|---|---|---|---|---|"]
    for r in nets:
        lines.append("| batch %d | %.3f | %.3f | %.3f | %.2f | %.1e |" % (
            r["batch"], r["winograd"], r["gemm"], r["opencv"], r["winograd"] / r["opencv"],
            r["logit_diff"]))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--write", help="write the markdown tables to this file")
    args = parser.parse_args()
    import cv2
    threads = caffelrp.get_num_threads()
    cv2.setNumThreads(threads)
    before = load()
    layers = [] if args.skip_layers else bench_layers(args.batches, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        nets = bench_net(args.batches, args.repeats, folder)
    command = ("python benchmarks/bench_winograd.py " + " ".join(sys.argv[1:])).strip()
    text = report(layers, nets, command, threads, (before, load()))
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
