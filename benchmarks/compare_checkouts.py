"""Two checkouts of caffelrp timed against each other in one process: forward, gradient and
relevance passes of the BVLC-shaped models, call by call in turns.

    python benchmarks/compare_checkouts.py --before /path/to/old/checkout
        [--models caffenet googlenet] [--batches 1 8] [--passes forward gradient relevance]
        [--repeats 15] [--write FILE]

The other checkout (its kernels built) is imported under the name ``caffelrp_before`` next to
this checkout's ``caffelrp`` (the package imports itself only relatively, so the two do not mix;
each has its own scratch buffers and caches; the generated protobuf module is shared). Both load the same seeded random (He-scaled)
weights. For every model and batch the passes of both run in turns (``interleaved_medians``:
one warm-up each, then ``--repeats`` rounds of one call each), so that the drift of a shared
machine meets both alike; the ratio is after / before of the medians. Relevance is formula 100
with beta 1.
"""
import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import REPO, emit, interleaved_medians, load_average, write_seeded_weights

import caffelrp
import caffelrp.proto.caffe_pb2


def import_checkout(folder, name="caffelrp_before"):
    """The caffelrp package of another checkout, imported as ``name``. Its generated protobuf
    module must be this checkout's (protobuf's default pool holds one ``caffe.proto``), so it is
    shared."""
    package = Path(folder).resolve() / "caffelrp"
    schema = Path(caffelrp.proto.caffe_pb2.__file__)
    if (package / "proto" / "caffe_pb2.py").read_bytes() != schema.read_bytes():
        raise SystemExit("the checkouts' caffe_pb2.py differ: they cannot share one process")
    sys.modules[name + ".proto.caffe_pb2"] = caffelrp.proto.caffe_pb2
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def passes(net, x):
    return {"forward": lambda: net.forward(x),
            "gradient": lambda: net.gradient(x, target="top1"),
            "relevance": lambda: net.relevance(x, rule=100, eps=1.0, beta=1.0)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the checkout to compare against")
    parser.add_argument("--models", nargs="+", default=["caffenet", "googlenet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--passes", nargs="+", default=["forward", "gradient", "relevance"],
                        choices=["forward", "gradient", "relevance"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--write")
    args = parser.parse_args()
    old = import_checkout(args.before)
    lines = ["## This checkout vs %s" % Path(args.before).resolve(), "",
             "Command: `python benchmarks/%s %s` (threads: %d; load average at the start %.1f; "
             "medians of %d calls in turns)." % (
                 Path(__file__).name, " ".join(sys.argv[1:]), caffelrp.get_num_threads(),
                 load_average(), args.repeats), "",
             "| model | pass | batch | before s | after s | after / before |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            prototxt, weights = write_seeded_weights(key, folder)
            before, after = old.Net(prototxt, weights), caffelrp.Net(prototxt, weights)
            c, h, w = after.blob_shapes[after.inputs[0]][1:]
            for batch in args.batches:
                x = np.random.default_rng(batch).uniform(-120, 130, (batch, c, h, w)).astype(
                    np.float32)
                runs_before, runs_after = passes(before, x), passes(after, x)
                fns = [f for name in args.passes for f in (runs_before[name], runs_after[name])]
                times = interleaved_medians(fns, args.repeats)
                for i, name in enumerate(args.passes):
                    t_before, t_after = times[2 * i], times[2 * i + 1]
                    row = "| %s | %s | %d | %.4f | %.4f | %.3f |" % (
                        key, name, batch, t_before, t_after, t_after / t_before)
                    lines.append(row)
                    print(row, flush=True)
            del before, after
    lines += ["", "Load average at the end: %.1f." % load_average()]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
