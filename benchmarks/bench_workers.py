"""Relevance throughput: one process whose kernels use T threads against T processes of one
thread each, running at the same time (why ``explain --workers auto`` forks single-threaded
workers; issue 17, target 1).

    python benchmarks/bench_workers.py [--models caffenet,googlenet,vgg16] [--batch-size 8]
                                       [--repeats 3] [--write FILE]

Seeded random weights (written to a temporary caffemodel), ``net.relevance`` formula 100, eps 1,
beta 1 on random inputs of ``--batch-size``. Each turn, per model: one process with T threads
runs 2k batches; T processes with one thread each run k batches each, started together (their
throughput: the images of all of them over the slowest one's time); one process with one
thread runs k batches alone. Each process times its own loop after one warm-up batch, so
imports, the net load and first touches are left out. Medians of ``--repeats`` turns.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from common import command, emit, load_average, write_seeded_weights

import caffelrp

WORKER = """
import sys, time
sys.path.insert(0, {here!r})
import caffelrp
from common import random_input
caffelrp.set_num_threads(int(sys.argv[1]))
net = caffelrp.Net(sys.argv[3], sys.argv[4])
x = random_input(net, int(sys.argv[5]))
net.relevance(x, rule=100, eps=1.0, beta=1.0)
t = time.monotonic()
for _ in range(int(sys.argv[2])):
    net.relevance(x, rule=100, eps=1.0, beta=1.0)
print(time.monotonic() - t)
"""
BATCHES = {"caffenet": 4, "googlenet": 2, "vgg16": 1}   # k per process and turn


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="caffenet,googlenet,vgg16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write")
    return parser.parse_args()


def per_image_ms(processes, threads, batches, definition, weights, batch):
    """Run ``processes`` processes together: ms per image of their combined throughput."""
    script = WORKER.format(here=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    running = [subprocess.Popen([sys.executable, "-c", script, str(threads), str(batches),
                                 str(definition), str(weights), str(batch)],
                                env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    seconds = []
    for p in running:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit("a worker failed (exit code %d)" % p.returncode)
        seconds.append(float(out))
    return 1e3 * max(seconds) / (processes * batches * batch)


def main():
    args = arguments()
    threads = caffelrp.get_num_threads()
    rows, loads = [], [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            definition, weights = write_seeded_weights(key, tmp)
            k = BATCHES.get(key, 2)
            samples = {"one": [], "many": [], "single": []}
            for _ in range(args.repeats):
                samples["one"].append(per_image_ms(1, threads, threads * k, definition, weights,
                                                   args.batch_size))
                samples["many"].append(per_image_ms(threads, 1, k, definition, weights,
                                                    args.batch_size))
                samples["single"].append(per_image_ms(1, 1, k, definition, weights,
                                                      args.batch_size))
                loads.append(load_average())
            one, many, single = (statistics.median(samples[n]) for n in ("one", "many",
                                                                         "single"))
            rows.append("| %s | %.1f | %.1f | **%.2f** | %.1f |" % (key, one, many, many / one,
                                                                   single))
            os.unlink(weights)
    emit(["## One process of %d threads against %d processes of one thread" % (threads, threads),
          "",
          "Command: `%s` (seeded weights, formula 100 beta 1, batch %d, OMP_WAIT_POLICY %s; "
          "medians of %d turns; load average %s). Per image, ms of the combined throughput."
          % (command(__file__), args.batch_size, os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
             args.repeats, "/".join("%.1f" % x for x in loads)), "",
          "| model | 1 process x %d threads | %d processes x 1 thread | ratio | 1 process x 1 "
          "thread, alone |" % (threads, threads), "|---|---|---|---|---|"] + rows + [""],
         args.write)


if __name__ == "__main__":
    main()
