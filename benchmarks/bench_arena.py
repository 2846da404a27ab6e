"""The passes' allocator (src/arena.pyx, ``caffelrp.scratch.reusing``) on and off, in one process.

Per model and batch size: forward, gradient and formula 100 (beta 1) per image, with freed blocks
kept (the default) and with none kept (``set_arena_limit(0)``), measured in turns so the machine's
drift meets both alike; and batch 8 per image against batch 1 (target 2 of issue 17: a batch
should never cost more per image).

    python benchmarks/bench_arena.py [--models vgg16 googlenet caffenet] [--repeats 3]
"""
import argparse
import statistics
import tempfile
import time

from common import command, emit, load_average, random_input, seeded_net

from caffelrp import scratch


def passes(net, x):
    return {
        "forward": lambda: net.forward(x),
        "gradient": lambda: net.gradient(x, target="top1"),
        "f100 beta 1": lambda: net.relevance(x, rule=100, beta=1.0, target="top1"),
    }


def steady_medians(run, kept, repeats):
    """Median time of ``run`` with no freed block kept and with ``kept`` bytes of them, in turns;
    each timed call follows an untimed one of the same setting (the steady state of a folder or
    an IG loop: the previous pass's blocks are there to take, or were returned)."""
    times = ([], [])
    for _ in range(repeats):
        for k, limit in enumerate((0, kept)):
            scratch.set_arena_limit(limit)
            run()
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    scratch.set_arena_limit(kept)
    return statistics.median(times[0]), statistics.median(times[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["caffenet", "googlenet", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--passes", nargs="+", default=["forward", "gradient", "f100 beta 1"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write")
    args = parser.parse_args()
    kept = scratch.arena_limit()
    loads = [load_average()]
    lines = ["| model | pass | batch | none kept, ms/image | kept (default), ms/image | ratio |",
             "|---|---|---|---|---|---|"]
    per_image = {}
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            for batch in args.batches:
                x = random_input(net, batch)
                for name, run in passes(net, x).items():
                    if name not in args.passes:
                        continue

                    t_off, t_on = steady_medians(run, kept, args.repeats)
                    per_image[key, name, batch] = t_on / batch
                    lines.append("| %s | %s | %d | %.1f | %.1f | %.2f |" % (
                        key, name, batch, 1e3 * t_off / batch, 1e3 * t_on / batch, t_on / t_off))
                    loads.append(load_average())
            del net
            scratch.release()
    lines += ["", "| model | pass | batch %d / batch %d per image (kept) |" % (
        max(args.batches), min(args.batches)), "|---|---|---|"]
    for key in args.models:
        for name in args.passes:
            if (key, name, max(args.batches)) in per_image:
                lines.append("| %s | %s | %.2f |" % (key, name, per_image[key, name, max(
                    args.batches)] / per_image[key, name, min(args.batches)]))
    lines += ["", "Command: `%s`; load average %.1f-%.1f; arena limit %d MB." % (
        command(__file__), min(loads), max(loads), kept >> 20)]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
