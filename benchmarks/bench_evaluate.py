"""AOPC (region perturbation) cost next to the plain forward passes it needs.

    python benchmarks/bench_evaluate.py [--models caffenet] [--steps 100] [--repeats 5]
                                        [--threads 2] [--memory-budget 2G] [--full] [--write FILE]

Seeded random (He-scaled) weights, one random image, a random attribution. AOPC with L = --steps
MoRF steps and one noise draw needs L + 1 forward passes (x and the L perturbed inputs), which
``caffelrp.evaluate.region_perturbation`` runs in memory-bounded batches of B inputs. The reference
is the same number of inputs, L + 1, forwarded in batches of B by ``net.forward`` alone; both are
measured in turns (--repeats times, medians). "ratio" = AOPC time / reference time: at most 1.3 is
the target (building the perturbed inputs, ranking and bookkeeping cost little beside the net).
With --full also one run of the paper's whole protocol (MoRF and LeRF, 10 noise draws).
"""
import argparse
import os
import tempfile
import time

import numpy as np

from common import (MEAN_BGR, MODELS, command, emit, input_shape, interleaved_medians,
                    random_input, seeded_net)

import caffelrp
from caffelrp import evaluate
from caffelrp.attribution.backward import batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["caffenet"], choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-budget", default="2G")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--write")
    args = parser.parse_args()
    caffelrp.set_num_threads(args.threads)
    lines = ["## Evaluation: AOPC region perturbation (issue 11)", "",
             "Command: `%s` (threads: %d; medians of %d turns; MoRF, %d steps, one noise draw, "
             "9 x 9 regions)." % (command(__file__), args.threads, args.repeats, args.steps), "",
             "| model | batch B | %d forwards in batches of B s | AOPC s | ratio |" % (
                 args.steps + 1), "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            c, h, w = input_shape(net)
            x = random_input(net)
            attr = evaluate.random_attribution(x.shape, seed=1)
            b = batch_size(net, (c, h, w), args.memory_budget)
            inputs = np.repeat(x, args.steps + 1, axis=0)

            def run_forwards():
                for lo in range(0, inputs.shape[0], b):
                    net.forward(inputs[lo:lo + b])

            def run_aopc():
                evaluate.region_perturbation(net, x, attr, steps=args.steps, repeats=1,
                                             orders=("morf",), mean=MEAN_BGR,
                                             memory_budget=args.memory_budget)
            t_fwd, t_aopc = interleaved_medians([run_forwards, run_aopc], args.repeats)
            row = "| %s | %d | %.3f | %.3f | %.2f |" % (key, b, t_fwd, t_aopc, t_aopc / t_fwd)
            lines.append(row)
            print(row, flush=True)
            if args.full:
                t = time.perf_counter()
                res = evaluate.region_perturbation(net, x, attr, steps=args.steps, repeats=10,
                                                   mean=MEAN_BGR,
                                                   memory_budget=args.memory_budget)
                full = time.perf_counter() - t
                passes = res.info["forward_passes"] + 1
                lines.append("")
                lines.append("%s, the paper's whole protocol on one image (MoRF + LeRF, 10 draws, "
                             "%d forward passes): %.1f s, %.4f s per forward pass (one run)."
                             % (key, passes, full, full / passes))
                print(lines[-1], flush=True)
    emit(lines, args.write)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
