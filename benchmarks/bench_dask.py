"""Images/s of ``explain`` on CaffeNet: one process with 2 kernel threads against a Dask
LocalCluster of 2 worker processes with 1 thread each (issue 14).

    python benchmarks/bench_dask.py [--images 32] [--batch-size 8] [--repeats 3] [--write FILE]

Seeded random (He-scaled) weights, random images; every run is the whole command in a new
process (``python -m caffelrp explain ... --quiet``: Python start, net load and writing every
output included), the two set-ups measured in turns after one warm-up each; medians. The cluster
is started once and kept, as a long-lived cluster is: its workers load the net in the warm-up and
keep it, while the local command loads it every time (the Dask command's client process also
loads it once, to check the options).
"""
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO, command, emit, folder_arguments, write_seeded_weights


def main():
    args = folder_arguments(__doc__)
    import distributed
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        prototxt, weights = write_seeded_weights("caffenet", folder)
        images = []
        for i in range(args.images):
            path = folder / ("im%03d.png" % i)
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (256, 320, 3),
                                                              dtype=np.uint8)).save(path)
            images.append(str(path))
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            setups = {"1 process x 2 threads": ["--threads", "2"],
                      "2 Dask workers x 1 thread": ["--threads", "1", "--dask",
                                                    cluster.scheduler_address]}
            times = {name: [] for name in setups}
            for turn in range(args.repeats + 1):
                for name, extra in setups.items():
                    out = folder / ("out-%d-%s" % (turn, name[0]))
                    cmd = [sys.executable, "-m", "caffelrp", "explain", *images, "--model",
                           str(prototxt), "--weights", str(weights), "--out", str(out),
                           "--batch-size", str(args.batch_size), "--quiet", *extra]
                    start = time.perf_counter()
                    subprocess.run(cmd, cwd=REPO, check=True)
                    if turn:      # turn 0 is the warm-up
                        times[name].append(time.perf_counter() - start)
    lines = ["## explain on Dask (issue 14)", "",
             "Command: `%s` (CaffeNet, seeded random weights, %d images of 320x256, batch %d, "
             "LRP with the default rule 100; medians of %d runs in turns)."
             % (command(__file__), args.images, args.batch_size, args.repeats), "",
             "| set-up | whole command s | images/s |", "|---|---|---|"]
    for name, ts in times.items():
        t = statistics.median(ts)
        lines.append("| %s | %.2f | %.2f |" % (name, t, args.images / t))
    emit(lines, args.write)


if __name__ == "__main__":
    main()
