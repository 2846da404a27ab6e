"""The OpenMP-split sgemm kernel against numpy in float64, for every operand layout."""
import numpy as np
import pytest

from caffelrp.kernels.gemm import matmul

# (128, 1200, 729) and (150, 40, 100): few blocks, cut into an even number of equal ones
SHAPES = [(96, 363, 3025), (1, 900, 700), (8, 300, 257), (300, 5, 2), (3, 7, 500), (1, 1, 1),
          (128, 1200, 729), (150, 40, 100)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_matches_float64(m, k, n, a_transposed, b_transposed, threads):
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    a_arg = np.ascontiguousarray(a.T).T if a_transposed else a  # a column-contiguous view
    b_arg = np.ascontiguousarray(b.T).T if b_transposed else b
    c = np.full((m, n), np.nan, np.float32)
    matmul(a_arg, b_arg, c, threads)
    expected = a.astype(np.float64) @ b
    # float32 accumulation over k terms: relative error ~ sqrt(k) * 6e-8, well under 1e-5
    assert np.abs(c - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1)


def test_matmul_accumulates_and_writes_into_row_slices():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((10, 20)).astype(np.float32)
    b = rng.standard_normal((20, 130)).astype(np.float32)
    out = np.ones((30, 130), np.float32)
    matmul(a, b, out[10:20], 2, True)
    np.testing.assert_allclose(out[10:20], a.astype(np.float64) @ b + 1, rtol=1e-5, atol=1e-5)
    assert (out[:10] == 1).all() and (out[20:] == 1).all()


def test_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not fit"):
        matmul(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32),
               np.zeros((2, 5), np.float32), 1)
