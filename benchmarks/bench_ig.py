"""Integrated Gradients cost per step next to one forward + backward pass.

    python benchmarks/bench_ig.py [--models caffenet vgg16] [--steps 50] [--repeats 3]
                                  [--threads 2] [--memory-budget 2G] [--write FILE]

Seeded random (He-scaled) weights, one random image, baseline black (= -mean). The reference is
the median time of ``net.gradient`` on one image (forward + backward at batch 1), measured in
turns with IG (5 gradient calls, then one IG run, ``--repeats`` times); IG with m fixed
steps (riemann-midpoint) costs m gradient evaluations plus two forward passes (F(x), F(x')), run
in batches bounded by the memory budget. "ratio" = (IG time / m) / (forward + backward time):
at most 1.2 is the target (the batching works). Peak memory is this process's VmHWM after the run.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import caffelrp  # noqa: E402
from bench_forward import MODELS, interleaved_medians, random_layers  # noqa: E402
from caffelrp.attribution.backward import batch_size  # noqa: E402
from caffelrp.io.caffemodel import write_caffemodel  # noqa: E402

MEAN = np.array([104.00699, 116.66877, 122.67891], np.float32)


def peak_rss_gb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2 ** 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["caffenet", "vgg16"],
                        choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-budget", default="2G")
    parser.add_argument("--write")
    args = parser.parse_args()
    caffelrp.set_num_threads(args.threads)
    lines = ["## Integrated Gradients (issue 5)", "",
             "Command: `python benchmarks/bench_ig.py %s` (threads: %d; medians; IG with m = %d "
             "riemann-midpoint steps, baseline black)." % (" ".join(sys.argv[1:]), args.threads,
                                                         args.steps), "",
             "| model | forward + backward s (batch 1) | IG s | IG per step s | ratio | batch "
             "| completeness error | peak RSS GB |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            directory, fmt = MODELS[key]
            prototxt = REPO / "models" / directory / "deploy.prototxt"
            weights = Path(folder) / (key + ".caffemodel")
            write_caffemodel(weights, random_layers(caffelrp.Net(prototxt)), fmt=fmt)
            net = caffelrp.Net(prototxt, weights)
            c, h, w = net.blob_shapes[net.inputs[0]][1:]
            x = (np.random.default_rng(0).uniform(0, 255, (1, c, h, w))
                 - MEAN.reshape(1, 3, 1, 1)).astype(np.float32)
            result = {}

            def run_fb():
                net.gradient(x, target="top1")

            def run_ig():
                result["info"] = net.integrated_gradients(
                    x, target="top1", baseline="black", mean=MEAN, steps=args.steps,
                    memory_budget=args.memory_budget)[1]
            t_fb, t_ig = interleaved_medians([run_fb, run_ig], args.repeats, inner=5)
            per_step = t_ig / args.steps
            row = "| %s | %.4f | %.3f | %.4f | %.2f | %d | %.4f | %.2f |" % (
                key, t_fb, t_ig, per_step, per_step / t_fb,
                batch_size(net, (c, h, w), args.memory_budget),
                result["info"][0]["completeness_error"], peak_rss_gb())
            lines.append(row)
            print(row, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
