"""``explain`` on a folder of photos against the in-process relevance passes it runs (issue 17,
target 1: the whole command costs at most 1.3x the relevance time per image).

    python benchmarks/bench_folder.py [--images 32] [--batch-size 8] [--repeats 3] [--write FILE]

CaffeNet-shaped net with seeded random (He-scaled) weights written to a temporary caffemodel; the
folder holds ``--images`` copies of the shared reference photos (../shared/reference/images,
640 x 426/480 JPEGs). Measured in turns, medians of ``--repeats`` after one warm-up:

* the command: ``python -m caffelrp explain FOLDER --model ... --weights ... --out NEW --quiet``
  in a new process (interpreter start, imports, net load, preprocessing, LRP, every output file);
* the relevance alone: ``net.relevance`` (the command's defaults: composite = formula 100,
  eps 1, beta 1) on the preprocessed inputs in batches of ``--batch-size``, in this process.

The difference is broken down by measuring its parts on their own: interpreter start + imports
(``python -c "import caffelrp.cli"``), the net load, reading + preprocessing the photos, and the
rest (the same command run in this process, minus its load, preprocessing and relevance: output
files, sidecars, bookkeeping). The first run of the command (weights hashed; later runs find the
digest in the cache's ledger) is reported on its own.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import (REPO, command, emit, folder_arguments, load_average, reference_images,
                    seeded_net, write_seeded_weights)

import caffelrp
from caffelrp import cli
from caffelrp.preprocess import BVLC_MEAN_BGR, mean_pixel, read_image, toolbox_preprocess


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    args = folder_arguments(__doc__)
    threads = caffelrp.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prototxt, weights = write_seeded_weights("caffenet", tmp)
        folder = tmp / "photos"
        folder.mkdir()
        photos = reference_images()
        for i in range(args.images):
            shutil.copy(photos[i % len(photos)], folder / ("photo%03d.jpg" % i))
        env = dict(os.environ, CAFFELRP_HOME=str(tmp / "home"),
                   CAFFELRP_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [
                       os.environ.get("PYTHONPATH")] if p]))
        os.environ["CAFFELRP_HOME"] = env["CAFFELRP_HOME"]   # the in-process command's ledger
        runs = iter(range(10 ** 6))
        explain = ["explain", str(folder), "--model", str(prototxt), "--weights", str(weights),
                   "--batch-size", str(args.batch_size), "--quiet"]

        def whole_command():
            out = tmp / ("out%d" % next(runs))
            subprocess.run([sys.executable, "-m", "caffelrp", *explain, "--out", str(out)],
                           env=env, check=True, cwd=tmp)
            shutil.rmtree(out)

        def start_and_imports():
            subprocess.run([sys.executable, "-c", "import caffelrp.cli"], env=env, check=True)

        net = seeded_net("caffenet", tmp)
        c, h, w = net.blob_shapes[net.inputs[0]][1:]
        mean = mean_pixel(BVLC_MEAN_BGR)
        files = sorted(folder.glob("*.jpg"))

        def preprocess():
            return [toolbox_preprocess(read_image(f), h, w, 256, mean).blob for f in files]
        blobs = np.stack(preprocess())

        def relevance():
            for lo in range(0, len(blobs), args.batch_size):
                net.relevance(blobs[lo:lo + args.batch_size], rule=100, eps=1.0, beta=1.0)

        def load():
            caffelrp.Net(prototxt, weights)

        def in_process_command():
            out = tmp / ("out%d" % next(runs))
            assert cli.main([*explain, "--out", str(out)]) == 0
            shutil.rmtree(out)

        first = timed(whole_command)          # cold: the weights are hashed once
        parts = [whole_command, relevance, start_and_imports, load, preprocess,
                 in_process_command]
        for fn in parts:
            fn()
        times = [[] for _ in parts]
        loads = []
        for _ in range(args.repeats):
            loads.append(load_average())
            for k, fn in enumerate(parts):
                times[k].append(timed(fn))
        t_cmd, t_rel, t_start, t_load, t_prep, t_inproc = (statistics.median(t) for t in times)
    n = args.images
    rest = t_inproc - t_load - t_prep - t_rel
    lines = ["## explain on a folder (issue 17, target 1)", "",
             "Command: `%s` (CaffeNet-shaped, seeded weights, %d reference photos 640 x 426/480, "
             "batch %d, threads %d; medians of %d turns; load average %s during the turns)."
             % (command(__file__), n, args.batch_size, threads, args.repeats,
                "/".join("%.1f" % x for x in loads)), "",
             "| what | s | per image ms | vs relevance per image |", "|---|---|---|---|",
             "| relevance alone, in process (`net.relevance`, batches of %d) | %.2f | %.1f | 1.00 |"
             % (args.batch_size, t_rel, 1e3 * t_rel / n),
             "| **`explain` command, whole** | %.2f | %.1f | **%.2f** |"
             % (t_cmd, 1e3 * t_cmd / n, t_cmd / t_rel),
             "| `explain` command, first run (weights hashed) | %.2f | %.1f | %.2f |"
             % (first, 1e3 * first / n, first / t_rel),
             "| of which: interpreter start + imports | %.2f | %.1f | %.2f |"
             % (t_start, 1e3 * t_start / n, t_start / t_rel),
             "| of which: net load (244 MB) | %.2f | %.1f | %.2f |"
             % (t_load, 1e3 * t_load / n, t_load / t_rel),
             "| of which: reading + preprocessing the photos | %.2f | %.1f | %.2f |"
             % (t_prep, 1e3 * t_prep / n, t_prep / t_rel),
             "| of which: outputs (2 PNGs, .npy, sidecar) and bookkeeping | %.2f | %.1f | %.2f |"
             % (rest, 1e3 * rest / n, rest / t_rel), ""]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
