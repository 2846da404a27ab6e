"""Micro-benchmarks of the hot Cython kernels (im2col, pooling).

    python benchmarks/bench_kernels.py [--threads 2] [--repeats 7]

Prints the median wall time of each kernel and its effective memory bandwidth
(bytes read + bytes written) / time in GB/s. Shapes are those of VGG-16.
"""

import argparse

import numpy as np

from common import median_time

from caffelrp.kernels import im2col as k_im2col
from caffelrp.kernels import pooling as k_pool


def report(name, t, nbytes):
    print("%-44s %9.2f ms  %7.2f GB/s" % (name, t * 1e3, nbytes / t / 1e9))


def bench_im2col(N, C, H, W, k, pad, stride, threads, repeats, label):
    OH = (H + 2 * pad - k) // stride + 1
    OW = (W + 2 * pad - k) // stride + 1
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(np.float32)
    col = np.empty((C * k * k, N * OH * OW), np.float32)
    t = median_time(lambda: k_im2col.im2col(x, k, k, pad, pad, stride, stride, 1, 1, OH, OW,
                                            col, threads), repeats)
    report("im2col %s N=%d" % (label, N), t, x.nbytes + col.nbytes)
    xo = np.empty_like(x)
    t = median_time(lambda: k_im2col.col2im(col, N, C, H, W, k, k, pad, pad, stride, stride, 1,
                                            1, OH, OW, xo, threads), repeats)
    report("col2im %s N=%d" % (label, N), t, x.nbytes + col.nbytes)


def bench_pool(N, C, H, W, k, stride, threads, repeats, label):
    OH, OW = k_pool.pooled_size(H, k, 0, stride), k_pool.pooled_size(W, k, 0, stride)
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(np.float32)
    y = np.empty((N, C, OH, OW), np.float32)
    am = np.empty((N, C, OH, OW), np.int32)
    t = median_time(lambda: k_pool.max_pool_forward(x, k, k, 0, 0, stride, stride, OH, OW, y,
                                                    am, threads), repeats)
    report("max_pool_forward %s N=%d" % (label, N), t, x.nbytes + y.nbytes + am.nbytes)
    dx = np.empty_like(x)
    t = median_time(lambda: k_pool.max_pool_backward(y, am, dx, threads), repeats)
    report("max_pool_backward %s N=%d" % (label, N), t, dx.nbytes + y.nbytes + am.nbytes)
    t = median_time(lambda: k_pool.ave_pool_forward(x, k, k, 0, 0, stride, stride, OH, OW, y,
                                                    threads), repeats)
    report("ave_pool_forward %s N=%d" % (label, N), t, x.nbytes + y.nbytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    print("threads=%d repeats=%d (median)" % (a.threads, a.repeats))
    for N in (1, 8):
        bench_im2col(N, 64, 224, 224, 3, 1, 1, a.threads, a.repeats, "VGG conv1_2 64x224x224 k3")
    bench_im2col(1, 3, 227, 227, 11, 0, 4, a.threads, a.repeats, "CaffeNet conv1 k11 s4")
    for N in (1, 8):
        bench_pool(N, 64, 224, 224, 2, 2, a.threads, a.repeats, "VGG pool1 2x2 s2")
    print("reference: numpy copy of the VGG conv1_2 N=1 column buffer")
    src = np.empty((576, 50176), np.float32)
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), a.repeats)
    report("np.copyto 115.6 MB", t, 2 * src.nbytes)


if __name__ == "__main__":
    main()
