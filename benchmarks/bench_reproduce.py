"""``reproduce``'s sweep next to the same number of single formula-100 relevance passes.

    python benchmarks/bench_reproduce.py [--repeats 3] [--write FILE]

CaffeNet with seeded random (He-scaled) weights, one random input. Measured in turns (medians of
``--repeats`` after a warm-up): the 40-setting sweep (the default formulas x eps {1, 0.01} x
beta {0, 1}, target top5), 40 x ``net.relevance(x, rule=100, target="top5")`` at batch 1, and the
default 80-setting sweep (targets top5 and top1). The issue's bound: the 40-setting sweep costs
at most the 40 passes.
"""
import argparse
import tempfile

import numpy as np

from common import command, emit, input_shape, interleaved_medians, seeded_net

import caffelrp
from caffelrp.reproduce import DEFAULT_BETAS, DEFAULT_EPSS, DEFAULT_RULES, settings, sweep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        net = seeded_net("caffenet", folder)
        c, h, w = input_shape(net)
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((1, c, h, w)) * 50).astype(np.float32)
        bounds = (x - 100, x + 100)
        published = rng.standard_normal((h, w))
        n = len(DEFAULT_RULES) * len(DEFAULT_EPSS) * len(DEFAULT_BETAS)

        def single_passes():
            for _ in range(n):
                net.relevance(x, rule=100, eps=1.0, beta=1.0, target="top5")

        def sweep_top5():
            sweep(net, x[0], bounds, published, targets=("top5",))

        def sweep_default():
            sweep(net, x[0], bounds, published)

        t_single, t_sweep, t_default = interleaved_medians(
            [single_passes, sweep_top5, sweep_default], args.repeats)
    distinct = len(settings(DEFAULT_RULES, DEFAULT_EPSS, DEFAULT_BETAS, ("top5",)))
    lines = ["## reproduce sweep (issue 10)", "",
             "Command: `%s` (CaffeNet, seeded weights, threads: %d; medians of %d; the machine "
             "was shared with other jobs, figures are noisy)." % (
                 command(__file__), caffelrp.get_num_threads(), args.repeats), "",
             "| what | settings | relevance passes | s | vs 40 x formula 100 |",
             "|---|---|---|---|---|",
             "| 40 x `net.relevance(rule=100)`, batch 1 | %d | %d (+%d forwards) | %.2f | 1.00 |"
             % (n, n, n, t_single),
             "| `reproduce` sweep, target top5 | %d | %d (1 forward) | %.2f | %.2f |"
             % (n, distinct, t_sweep, t_sweep / t_single),
             "| `reproduce` default sweep, top5 + top1 | %d | %d at batch 2 (1 forward) | %.2f "
             "| %.2f |" % (2 * n, distinct, t_default, t_default / t_single), ""]
    emit(lines, args.write, append=True)


if __name__ == "__main__":
    main()
