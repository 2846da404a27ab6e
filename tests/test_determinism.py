"""Default mode: bit-identical forward, gradient and relevance for any thread count.

The kernels hand fixed-size blocks to the threads (src/gemm.pyx, src/lrn.pyx), so an output
element is computed by the same call with the same operand shapes at 1, 2, 3 or 8 threads.
Padded reference images are the sharp case: their edge-replicated rows make max-pool windows tie
in exact arithmetic, and any last-bit change would move whole windows' relevance.
"""
import numpy as np
import pytest

import caffelrp
from caffelrp.attribution import relevance
from caffelrp.kernels.gemm import matmul

from test_lrp_reference import reference_case

THREADS = [1, 2, 3, 8]


def at_threads(n, fn):
    before = caffelrp.get_num_threads()
    caffelrp.set_num_threads(n)
    try:
        return fn()
    finally:
        caffelrp.set_num_threads(before)


@pytest.mark.parametrize("model", ["smallnet", "caffenet"])
def test_padded_image_is_bit_identical_at_1_2_3_8_threads(shared_reference, nets,
                                                        model):
    net = nets(model)
    x, run, _ = reference_case(shared_reference, model, "scooter10", "f100_eps1_beta0_aux0")
    classes = [run["explained_classes"]]         # one image: its list of classes

    def everything():
        blobs = {k: np.array(v) for k, v in net.forward(x).items()}
        gradient = relevance(net, x, rule=11, target=classes)
        lrp = relevance(net, x, rule=100, eps=1.0, beta=0.0, target=classes)
        return blobs, gradient, lrp

    results = [at_threads(n, everything) for n in THREADS]
    first = results[0]
    for n, (blobs, gradient, lrp) in zip(THREADS[1:], results[1:]):
        for name in first[0]:
            assert np.array_equal(blobs[name], first[0][name]), (n, name)
        assert np.array_equal(gradient, first[1]), n
        assert np.array_equal(lrp, first[2]), n


SHAPES = [(96, 363, 3025), (1, 9216, 4096), (8, 300, 1000), (300, 50, 20), (3, 7, 500),
          (128, 1200, 729), (150, 40, 100)]   # the last two: blocks cut evenly (src/gemm.pyx)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_is_bit_identical_for_any_thread_count(m, k, n):
    rng = np.random.default_rng(m + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    outs = []
    for threads in (1, 2, 3, 8):
        c = np.full((m, n), np.nan, np.float32)
        matmul(a, b, c, threads)
        outs.append(c)
    for c in outs[1:]:
        assert np.array_equal(c, outs[0])


def test_matmul_refuses_an_output_with_a_backward_row_stride():
    """(m, 1) with strides (-4, 4) used to make OpenBLAS write before the buffer."""
    a = np.ones((5, 3), np.float32)
    b = np.ones((3, 1), np.float32)
    c = np.zeros((5, 1), np.float32)[::-1]
    with pytest.raises(ValueError, match="row stride"):
        matmul(a, b, c, 1)


def test_matmul_copies_flipped_and_broadcast_operands():
    """np.flipud(W) (reachable by assigning to net.params) has a negative row stride: BLAS
    cannot read it, so it is copied, and the product is right."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    x = rng.standard_normal((4, 30)).astype(np.float32)
    for a, b in [(x, np.flipud(w).T), (x[:, ::-1], w.T), (np.broadcast_to(x[:1], (4, 30)), w.T),
                 (x[:1], np.flipud(w).T)]:
        c = np.empty((a.shape[0], b.shape[1]), np.float32)
        matmul(a, b, c, 2)
        expected = a.astype(np.float64) @ b.astype(np.float64)
        # float32 sums of 30 terms: far below 1e-5 of the largest value
        assert np.abs(c - expected).max() <= 1e-5 * np.abs(expected).max()


def test_flipped_weights_through_the_net_give_the_flipped_product(tmp_path):
    from netutil import layer, make_net, randomize
    net = make_net(tmp_path, layer("ip", "InnerProduct", params="inner_product_param { "
                                                                "num_output: 6 }"), (2, 3, 4, 4))
    randomize(net, seed=1)
    w = np.array(net.params["ip"][0])
    bias = np.array(net.params["ip"][1])
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    net.params["ip"][0] = np.flipud(w)
    y = np.array(net.forward(x)["ip"])
    expected = x.reshape(2, -1).astype(np.float64) @ np.flipud(w).T.astype(np.float64) + bias
    assert np.abs(y - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("model", ["smallnet", "caffenet"])
def test_an_image_alone_and_in_a_batch_agree_to_rounding(shared_reference, nets,
                                                         model):
    """Not bit-identical (OpenBLAS rounds a row differently with another number of rows, see
    src/gemm.pyx), but only by float32 rounding: measured 2e-6 relative on CaffeNet."""
    net = nets(model)
    xs = np.concatenate([reference_case(shared_reference, model, image, "f11_eps1_beta0_aux0")[0]
                         for image in ("scooter10", "volcano2")])
    for rule in (11, 100):
        # classes 1 + 2 in every image
        one = relevance(net, xs[:1], rule=rule, target=[[1, 2]]).astype(np.float64)
        two = relevance(net, xs, rule=rule, target=[[1, 2]] * 2)[:1]
        assert np.linalg.norm(one - two) <= 1e-5 * np.linalg.norm(one), rule
