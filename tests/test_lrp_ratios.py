"""The fused element-wise kernels of the LRP rules (caffelrp.kernels.lrp_ratios) against numpy,
on contiguous and transposed (strided) matrices, with 1 and 2 threads. Each kernel does the same
float32 operations as the numpy form, so the results agree to the last bit or within 1 ulp."""
import numpy as np
import pytest

# the numpy forms divide everywhere and select afterwards
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in divide:RuntimeWarning")

from caffelrp.kernels.lrp_ratios import (alpha_beta_ratios, epsilon_ratio, multiply_into,
                                         signed_product)


def data(shape, seed, transposed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        a = rng.standard_normal(shape[::-1] if transposed else shape).astype(np.float32)
        a[a.__abs__() < 0.3] = 0            # exact zeros exercise the z == 0 branches
        out.append(a.T if transposed else a)
    return out


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_epsilon_ratio(transposed, threads):
    R, z, _, _ = data((37, 53), 1, transposed)
    out = np.empty(R.shape, np.float32)
    epsilon_ratio(R, z, np.float32(0.25), out, threads)
    want = np.where(z > 0, R / (z + np.float32(0.25)),
                    np.where(z < 0, R / (z - np.float32(0.25)), R))
    np.testing.assert_allclose(out, want, rtol=1e-7, atol=0)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_alpha_beta_ratios(transposed, beta):
    R, zp, z, _ = data((29, 41), 2, transposed)
    rows = R.shape[0]
    rng = np.random.default_rng(3)
    bias_p = np.maximum(rng.standard_normal(rows), 0).astype(np.float32)
    offset = rng.standard_normal(rows).astype(np.float32)
    alpha = np.float32(1 + beta)
    zp_in = zp.copy()
    sp, sn = np.empty(R.shape, np.float32), np.empty(R.shape, np.float32)
    alpha_beta_ratios(R, zp, z, bias_p, offset, alpha, np.float32(beta), sp, sn, 2)
    zp_want = zp_in + bias_p[:, None]
    np.testing.assert_array_equal(zp, zp_want)           # z+ with its bias is left in zp
    np.testing.assert_allclose(sp, np.where(zp_want > 0, alpha * R / zp_want, 0), rtol=2e-7)
    if beta > 0:
        zn = z - zp_want - offset[:, None]
        np.testing.assert_allclose(sn, np.where(zn < 0, np.float32(beta) * R / zn, 0),
                                   rtol=2e-7)


@pytest.mark.parametrize("transposed", [False, True])
def test_multiply_and_signed_product(transposed):
    x, a, b, _ = data((23, 31), 4, transposed)
    g = a.copy()
    multiply_into(x, g, 2)
    np.testing.assert_array_equal(g, x * a)
    out = np.empty(x.shape, np.float32)
    signed_product(x, a, b, out, 2)
    np.testing.assert_array_equal(out, np.where(x > 0, x * a, x * b))


def test_shape_mismatch_is_an_error():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        multiply_into(a, np.zeros((4, 3), np.float32), 1)
    with pytest.raises(ValueError, match="shapes"):
        epsilon_ratio(a, a, 1.0, np.zeros((3, 5), np.float32), 1)
