"""What every benchmark script shares: the package from this checkout, the BVLC-shaped models with
seeded random weights, inputs, timing in turns, the report's header and where it is written.

Scripts import it as ``from common import ...`` (they put ``benchmarks/`` on ``sys.path`` by
being run from it: ``python benchmarks/bench_x.py``); the checkout itself goes first on
``sys.path`` here, so no install and no ``PYTHONPATH`` is needed.
"""
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))   # this checkout's caffelrp, also when another is installed

import caffelrp  # noqa: E402
from caffelrp.io.caffemodel import write_caffemodel  # noqa: E402

# benchmark name -> (folder under models/, caffemodel format of the published file)
MODELS = {
    "caffenet": ("bvlc_reference_caffenet", "v1"),
    "googlenet": ("bvlc_googlenet", "v1"),
    "vgg16": ("vgg16", "v1"),
}

MEAN_BGR = np.array([104.00699, 116.66877, 122.67891], np.float32)   # the BVLC mean pixel


def reference_images():
    """The shared reference photos: ``$CAFFELRP_SHARED_REFERENCE/images``, else
    ``shared/reference/images`` next to the checkout (or next to the worktrees' folder)."""
    root = os.environ.get("CAFFELRP_SHARED_REFERENCE")
    candidates = [Path(root)] if root else [REPO.parent / "shared" / "reference",
                                            REPO.parent.parent / "shared" / "reference"]
    for folder in candidates:
        if (folder / "images").is_dir():
            return sorted((folder / "images").glob("*.jpg"))
    raise SystemExit("no reference images in %s: set CAFFELRP_SHARED_REFERENCE"
                     % " or ".join(str(c) for c in candidates))


def prototxt(key):
    return REPO / "models" / MODELS[key][0] / "deploy.prototxt"


def random_layers(net, seed=1):
    """He-scaled normal weights and 0.01 biases for every parametrised layer of ``net``."""
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


def write_seeded_weights(key, folder, seed=1):
    """A caffemodel of the model's shapes with seeded random weights, in the published format:
    (prototxt path, weights path)."""
    definition = prototxt(key)
    weights = Path(folder) / (key + ".caffemodel")
    write_caffemodel(weights, random_layers(caffelrp.Net(definition), seed),
                     fmt=MODELS[key][1])
    return definition, weights


def seeded_net(key, folder, seed=1):
    """The model with seeded random weights (written to ``folder`` and loaded as a user would)."""
    definition, weights = write_seeded_weights(key, folder, seed)
    return caffelrp.Net(definition, weights)


def input_shape(net):
    return tuple(int(d) for d in net.blob_shapes[net.inputs[0]][1:])


def random_input(net, batch=1, seed=0):
    """A float32 (batch, C, H, W) input: uniform pixels 0..255 minus the mean pixel."""
    c, h, w = input_shape(net)
    pixels = np.random.default_rng(seed).uniform(0, 255, (batch, c, h, w))
    return (pixels - MEAN_BGR.reshape(1, 3, 1, 1)).astype(np.float32)


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls after one warm-up."""
    fn()
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


def peak_rss_gb():
    """This process's peak resident memory (VmHWM), GB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2 ** 20


def load_average():
    """The 1-minute load average, to print next to the figures (the machine may be shared)."""
    return os.getloadavg()[0]


def command(script):
    """The command line that made a table, for its 'Command:' line."""
    return " ".join(["python benchmarks/%s" % Path(script).name] + sys.argv[1:])


def blas_kernels():
    """Which OpenBLAS kernels caffelrp's products ran on (scipy's OpenBLAS, through
    scipy.linalg.cython_blas), and whether OPENBLAS_CORETYPE chose them: some machines set it
    (Haswell on an AVX-512 processor) for old OpenBLAS builds, which halves a current one's sgemm
    rate. To benchmark, unset it and OPENBLAS_L2_SIZE together in that command alone:
    ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library the kernels call)
    from threadpoolctl import threadpool_info
    found = [i for i in threadpool_info() if i.get("internal_api") == "openblas"
             and "scipy_openblas-" in os.path.basename(i.get("filepath", ""))]
    kernel = ("OpenBLAS %s, %s kernels" % (found[0]["version"], found[0]["architecture"])
              if found else "scipy's BLAS (not OpenBLAS)")
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return kernel + (" (chosen by OPENBLAS_CORETYPE=%s)" % forced if forced else
                     " (the library's own choice for this processor)")


def emit(lines, write=None, append=False):
    """Print a report and, with ``--write FILE``, write (or append) it there; the report ends
    with the BLAS kernels it ran on (``blas_kernels``)."""
    lines = list(lines)
    while lines and not lines[-1]:
        lines.pop()
    lines += ["", "BLAS: %s." % blas_kernels(), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        with open(write, "a" if append else "w") as f:
            f.write(text)
    return text


def folder_arguments(doc):
    """The options of bench_dask (explain over a folder of photos)."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write")
    return parser.parse_args()
