"""``explain`` on a folder of photos against the in-process relevance passes it runs (issue 17,
target 1: the whole command costs at most 1.3x the relevance time per image).

    python benchmarks/bench_folder.py [--images 32] [--batch-size 8] [--repeats 7]
                                      [--before CHECKOUT] [--workers auto|N]
                                      [--compare-workers N] [--write FILE]

CaffeNet-shaped net with seeded random (He-scaled) weights written to a temporary caffemodel; the
folder holds ``--images`` copies of the shared reference photos (640 x 426/480 JPEGs). Measured in
turns (each after one warm-up), medians of ``--repeats`` turns:

* the command: ``python -m caffelrp explain FOLDER --model ... --weights ... --out NEW --quiet``
  in a new process, from just before the process starts to its exit. It runs with
  ``CAFFELRP_TIMINGS`` (``caffelrp/phases.py``), so every turn also gives the command's own
  breakdown: interpreter start + imports (the monotonic clock here before the start to the clock
  in ``main``), the phases ``main`` times, the rest of ``main`` (argument parsing, listing the
  folder, the run identity) and the interpreter's exit. Per turn these add up to the whole;
* with ``--compare-workers N``: the same command with ``--workers N`` (e.g. 1: one process, its
  kernels on every thread), in the same turns;
* with ``--before CHECKOUT``: the same command from another checkout (e.g. the main branch), so
  before and after are measured in the same turns;
* the relevance alone: ``net.relevance`` (the command's defaults: composite = formula 100,
  eps 1, beta 1) on the preprocessed inputs in batches of ``--batch-size``, in this process;
* the net load alone in a new process like the command's (``caffelrp.Net(prototxt, weights)``
  after the imports), with the weights in the page cache, and once more after
  ``posix_fadvise(DONTNEED)`` on the weights file (a cold read: this machine's kernel also pages
  out file pages nobody touched for about a minute, which is what made the earlier runs' "net
  load" 1.9 s).

The first run of the command (weights hashed; later runs find the digest in the cache's ledger)
is reported on its own.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, command, emit, load_average, reference_images, write_seeded_weights

import caffelrp
from caffelrp.preprocess import BVLC_MEAN_BGR, mean_pixel, read_image, toolbox_preprocess

# the command's phases in the main thread, in the order the report lists them
MAIN_PHASES = ("net load", "weights digest", "preprocess", "prefetch wait", "method", "outputs",
               "writer wait", "workers")
LOAD_SCRIPT = ("import sys, time; import caffelrp; t = time.monotonic(); "
               "caffelrp.Net(sys.argv[1], sys.argv[2]); print(time.monotonic() - t)")


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="another checkout whose command is timed in the same turns")
    parser.add_argument("--workers", default="auto",
                        help="the command's --workers (default auto)")
    parser.add_argument("--compare-workers", metavar="N",
                        help="also time the command with --workers N in the same turns")
    parser.add_argument("--write")
    return parser.parse_args()


def environment(checkout, home):
    return dict(os.environ, CAFFELRP_HOME=str(home),
                CAFFELRP_NUM_THREADS=str(caffelrp.get_num_threads()),
                PYTHONPATH=os.pathsep.join([str(checkout)] + [p for p in [
                    os.environ.get("PYTHONPATH")] if p]))


def drop_from_page_cache(path):
    """Ask the kernel to forget the cached pages of this one file (its next read is cold)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Command:
    """``python -m caffelrp explain`` from one checkout, in a new process per run."""

    def __init__(self, checkout, explain, tmp, timed_phases):
        self.env = environment(checkout, tmp / "home")
        self.explain, self.tmp, self.timed_phases = explain, tmp, timed_phases
        self.runs = 0

    def __call__(self):
        self.runs += 1
        out = self.tmp / ("out%d" % self.runs)
        timings = self.tmp / "timings.json"
        env = dict(self.env, CAFFELRP_TIMINGS=str(timings)) if self.timed_phases else self.env
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "caffelrp", *self.explain, "--out", str(out)],
                       env=env, check=True, cwd=self.tmp)
        end = time.monotonic()
        shutil.rmtree(out)
        parts = {"whole": end - start}
        if self.timed_phases:
            record = json.loads(timings.read_text())
            phases = record["phases"]
            parts["interpreter start + imports"] = record["main_start"] - start
            parts["interpreter exit"] = end - record["main_end"]
            main = record["main_end"] - record["main_start"]
            for name in MAIN_PHASES:
                parts[name] = phases.get(name, 0.0)
            parts["rest of main"] = main - sum(parts[name] for name in MAIN_PHASES)
            parts["writer thread busy"] = phases.get("writer", 0.0)
            parts["prefetch thread busy"] = phases.get("prefetch (helper thread)", 0.0)
        return parts


def main():
    args = arguments()
    threads = caffelrp.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prototxt, weights = write_seeded_weights("caffenet", tmp)
        folder = tmp / "photos"
        folder.mkdir()
        photos = reference_images()
        for i in range(args.images):
            shutil.copy(photos[i % len(photos)], folder / ("photo%03d.jpg" % i))
        explain = ["explain", str(folder), "--model", str(prototxt), "--weights", str(weights),
                   "--batch-size", str(args.batch_size), "--quiet"]
        after = Command(REPO, explain + ["--workers", args.workers], tmp, timed_phases=True)
        other = Command(REPO, explain + ["--workers", args.compare_workers], tmp,
                        timed_phases=False) if args.compare_workers else None
        before = Command(Path(args.before).resolve(), explain, tmp, timed_phases=False) \
            if args.before else None

        net = caffelrp.Net(prototxt, weights)
        c, h, w = net.blob_shapes[net.inputs[0]][1:]
        mean = mean_pixel(BVLC_MEAN_BGR)
        blobs = np.stack([toolbox_preprocess(read_image(f), h, w, 256, mean).blob
                          for f in sorted(folder.glob("*.jpg"))])

        def relevance():
            for lo in range(0, len(blobs), args.batch_size):
                net.relevance(blobs[lo:lo + args.batch_size], rule=100, eps=1.0, beta=1.0)

        load_command = [sys.executable, "-c", LOAD_SCRIPT, str(prototxt), str(weights)]

        def net_load():
            return float(subprocess.run(load_command, env=after.env, check=True,
                                        capture_output=True, text=True).stdout)

        def cold_net_load():
            drop_from_page_cache(weights)
            return net_load()

        first = after()["whole"]        # the weights are hashed once, into the ledger
        measured = {"after": after, "relevance": relevance, "net load": net_load,
                    "cold net load": cold_net_load}
        if before:
            measured["before"] = before
        if other:
            measured["other"] = other
        for fn in measured.values():
            fn()
        samples = {name: [] for name in measured}
        loads = []
        for _ in range(args.repeats):
            loads.append(load_average())
            for name, fn in measured.items():
                t = time.monotonic()
                value = fn()
                samples[name].append(value if value is not None else time.monotonic() - t)
        loads.append(load_average())
    n = args.images
    t_rel = statistics.median(samples["relevance"])
    parts = {k: statistics.median(run[k] for run in samples["after"])
             for k in samples["after"][0]}

    def row(what, seconds, bold=False):
        mark = "**" if bold else ""
        return "| %s%s%s | %.2f | %.1f | %s%.2f%s |" % (mark, what, mark, seconds,
                                                       1e3 * seconds / n, mark,
                                                       seconds / t_rel, mark)
    lines = ["## explain on a folder (issue 17, target 1)", "",
             "Command: `%s` (CaffeNet-shaped, seeded weights, %d copies of the reference photos "
             "640 x 426/480, batch %d, threads %d, OMP_WAIT_POLICY %s; medians of %d turns; "
             "load average %s over the turns)."
             % (command(__file__), n, args.batch_size, threads,
                os.environ.get("OMP_WAIT_POLICY", "unset"), args.repeats,
                "/".join("%.1f" % x for x in loads)), "",
             "| what | s | per image ms | vs relevance per image |", "|---|---|---|---|",
             row("relevance alone, in process (`net.relevance`, batches of %d)"
                 % args.batch_size, t_rel)]
    if before:
        lines.append(row("`explain` command, whole, %s (before)" % args.before,
                         statistics.median(run["whole"] for run in samples["before"]),
                         bold=True))
    if other:
        lines.append(row("`explain` command, whole, `--workers %s`" % args.compare_workers,
                         statistics.median(run["whole"] for run in samples["other"]),
                         bold=True))
    lines += [row("`explain` command, whole, `--workers %s`" % args.workers, parts["whole"],
                  bold=True),
              row("`explain` command, first run (weights hashed)", first)]
    for name in ("interpreter start + imports", *MAIN_PHASES, "rest of main",
                 "interpreter exit"):
        lines.append(row("of which: %s" % name, parts[name]))
    summed = sum(statistics.median(run[k] for run in samples["after"]) for k in (
        "interpreter start + imports", *MAIN_PHASES, "rest of main", "interpreter exit"))
    lines += [row("(sum of the medians of the parts)", summed),
              row("writer thread busy (overlaps the main thread)", parts["writer thread busy"]),
              row("prefetch thread busy (overlaps the main thread)",
                  parts["prefetch thread busy"]),
              row("net load alone, new process, page cache warm",
                  statistics.median(samples["net load"])),
              row("net load alone, new process, weights dropped from the page cache",
                  statistics.median(samples["cold net load"])), ""]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
