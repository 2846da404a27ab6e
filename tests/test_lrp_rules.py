"""caffelrp.rules against an independent float64 numpy implementation of the original's formulas.

The reference forms every product z_ij = x_i w_ij explicitly (spec 2.2, "ABslow" style):
epsilon  R_i = sum_j z_ij * s_j,  s_j = R_j / (z_j + eps sign(z_j)), s_j = R_j if z_j == 0,
         z_j = sum_i z_ij + b_j;
alpha-beta (alpha = 1 + beta)
         R_i = sum_j alpha z+_ij R_j / z+_j - beta z-_ij R_j / z-_j,
         z+_j = sum_i z+_ij + b+_j, z-_j = sum_i z-_ij + b-_j, terms with z+_j <= 0 / z-_j >= 0 drop.
"""
import numpy as np
import pytest

from caffelrp.attribution import relevance
from caffelrp.composites import COMPOSITES, Settings, behaviour, resolve, rule_for
from caffelrp.layers.conv import conv_relevance
from caffelrp.layers.inner_product import dense_relevance
from caffelrp.rules import (AlphaBeta, Backprojection, Epsilon, Flat, Gamma, WSquare, ZBox,
                            alpha_beta, backprojection, epsilon, flat, gamma, w_square, zbox,
                            zplus)
from netutil import layer


# ------------------------------------------------------------------ float64 reference
def ref_dense_products(a, W):
    """z[n, i, j] = a[n, i] * W[j, i]."""
    return a[:, :, None] * W.T[None, :, :]


def ref_from_products(z, b, R, rule, eps=0.0, beta=0.0):
    """z (N, I, J) products, b (J,), R (N, J) -> (N, I)."""
    if rule == "epsilon":
        zj = z.sum(axis=1) + b
        sign = np.where(zj > 0, 1.0, np.where(zj < 0, -1.0, 0.0))
        s = np.where(zj == 0, R, R / np.where(zj == 0, 1.0, zj + eps * sign))
        return (z * s[:, None, :]).sum(axis=2)
    alpha = 1.0 + beta
    zp, zn = np.maximum(z, 0), np.minimum(z, 0)
    zpj = zp.sum(axis=1) + np.maximum(b, 0)
    znj = zn.sum(axis=1) + np.minimum(b, 0)
    sp = np.where(zpj > 0, R / np.where(zpj > 0, zpj, 1.0), 0.0)
    sn = np.where(znj < 0, R / np.where(znj < 0, znj, -1.0), 0.0)
    return (alpha * zp * sp[:, None, :] - beta * zn * sn[:, None, :]).sum(axis=2)


def ref_dense(a, W, b, R, rule, eps=0.0, beta=0.0):
    return ref_from_products(ref_dense_products(a, W), b, R, rule, eps, beta)


def ref_conv(x, W, b, R, pad, stride, group, rule, eps=0.0, beta=0.0):
    """Loops over output positions; every window is one small dense layer (per group)."""
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // group
    _, _, oh, ow = R.shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    out = np.zeros_like(xp)
    for g in range(group):
        Wg = W[g * og:(g + 1) * og].reshape(og, -1)
        bg = b[g * og:(g + 1) * og]
        for i in range(oh):
            for j in range(ow):
                hs, ws = i * stride, j * stride
                patch = xp[:, g * cg:(g + 1) * cg, hs:hs + kh, ws:ws + kw]
                r_in = ref_dense(patch.reshape(n, -1), Wg, bg, R[:, g * og:(g + 1) * og, i, j],
                                 rule, eps, beta)
                out[:, g * cg:(g + 1) * cg, hs:hs + kh, ws:ws + kw] += r_in.reshape(patch.shape)
    return out[:, :, pad:pad + h, pad:pad + w]


def conv_forward(x, W, b, pad, stride, group):
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // group
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((n, o, oh, ow))
    for g in range(group):
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + kh,
                           j * stride:j * stride + kw].reshape(n, -1)
                y[:, g * og:(g + 1) * og, i, j] = patch @ W[g * og:(g + 1) * og].reshape(og, -1).T
    return y + b[None, :, None, None]


def make_rule(name, eps, beta):
    return epsilon(eps) if name == "epsilon" else alpha_beta(beta=beta)


def close(actual, expected, rtol=1e-4):
    scale = np.abs(expected).max()
    return np.abs(actual.astype(np.float64) - expected).max() <= rtol * scale


def f32(a):
    return a.astype(np.float32)


CASES = [("epsilon", 1.0, 0.0), ("epsilon", 0.01, 0.0), ("alpha_beta", 0.0, 0.0),
         ("alpha_beta", 0.0, 1.0), ("alpha_beta", 0.0, 2.5)]


# ------------------------------------------------------------------------ dense layer
@pytest.mark.parametrize("name,eps,beta", CASES)
def test_dense_matches_float64_reference(name, eps, beta):
    rng = np.random.default_rng(1)
    a = f32(np.maximum(rng.standard_normal((3, 20)), -0.3))   # mixed signs, mostly positive
    W, b, R = f32(rng.standard_normal((7, 20))), f32(rng.standard_normal(7)), f32(
        rng.standard_normal((3, 7)))
    got = dense_relevance(make_rule(name, eps, beta), a, W, b, R)
    want = ref_dense(a.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                     R.astype(np.float64), name, eps, beta)
    assert got.dtype == np.float32 and got.shape == a.shape
    assert close(got, want)


def test_dense_epsilon_zero_preactivation_passes_relevance_undivided():
    a = np.array([[1.0, -1.0]], dtype=np.float32)
    W = np.array([[2.0, 2.0], [1.0, 0.0]], dtype=np.float32)   # z_0 = 0, z_1 = 1
    b = np.zeros(2, dtype=np.float32)
    R = np.array([[3.0, 4.0]], dtype=np.float32)
    got = dense_relevance(epsilon(0.5), a, W, b, R)
    # unit 0: s = R undivided = 3 -> x_i w_i0 * 3 = (6, -6); unit 1: s = 4 / 1.5 -> (8/3, 0)
    np.testing.assert_allclose(got, [[6 + 8 / 3, -6]], rtol=1e-6)


def test_dense_epsilon_bias_in_denominator():
    a = np.array([[2.0]], dtype=np.float32)
    W = np.array([[1.0]], dtype=np.float32)
    b = np.array([-5.0], dtype=np.float32)                      # z = -3 -> denominator -3 - eps
    R = np.array([[1.0]], dtype=np.float32)
    np.testing.assert_allclose(dense_relevance(epsilon(1.0), a, W, b, R), [[2.0 / -4.0]],
                               rtol=1e-6)


def test_alpha_beta_bias_absorbs_its_share():
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    W = np.array([[1.0, -1.0]], dtype=np.float32)               # products +1, -2
    b = np.array([1.0], dtype=np.float32)                       # z+ = 2, z- = -2
    R = np.array([[4.0]], dtype=np.float32)
    got = dense_relevance(alpha_beta(beta=1.0), a, W, b, R)
    np.testing.assert_allclose(got, [[2 * 1 * 4 / 2, -1 * (-2) * 4 / -2]], rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0, 3.0])
def test_dense_alpha_beta_conserves_without_bias(beta):
    rng = np.random.default_rng(2)
    a = f32(rng.standard_normal((4, 50)))
    W = f32(rng.standard_normal((9, 50)))
    R = f32(rng.standard_normal((4, 9)))
    got = dense_relevance(alpha_beta(beta=beta), a, W, np.zeros(9, np.float32), R)
    # every unit has positive and negative products, so alpha - beta = 1 of R_j is distributed
    np.testing.assert_allclose(got.sum(axis=1, dtype=np.float64), R.sum(axis=1), rtol=1e-4)


def test_dense_epsilon_conserves_with_tiny_eps_and_no_bias():
    rng = np.random.default_rng(3)
    a = f32(np.abs(rng.standard_normal((4, 30))))
    W = f32(rng.standard_normal((6, 30)))
    R = f32(rng.standard_normal((4, 6)))
    got = dense_relevance(epsilon(1e-9), a, W, None, R)
    np.testing.assert_allclose(got.sum(axis=1, dtype=np.float64), R.sum(axis=1), rtol=1e-4)


# ------------------------------------------------------------------------- convolution
CONV_SHAPES = [  # (C, H, W, O, k, pad, stride, group)
    (3, 9, 8, 4, 3, 1, 1, 1),
    (4, 11, 11, 6, 5, 2, 2, 2),
    (2, 7, 7, 3, 3, 0, 2, 1),
]
# 1x1: the images are their own column matrix (no im2col/col2im), alone and with groups
POINTWISE_SHAPES = [(5, 6, 7, 4, 1, 0, 1, 1), (6, 5, 5, 4, 1, 0, 1, 2)]


@pytest.mark.parametrize("shape", CONV_SHAPES + POINTWISE_SHAPES)
@pytest.mark.parametrize("name,eps,beta", CASES)
@pytest.mark.parametrize("n", [1, 2])
def test_conv_matches_float64_reference(shape, name, eps, beta, n):
    c, h, w, o, k, pad, stride, group = shape
    rng = np.random.default_rng(4)
    x = f32(rng.standard_normal((n, c, h, w)))
    W = f32(rng.standard_normal((o, c // group, k, k)))
    b = f32(rng.standard_normal(o) * 0.5)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    R = f32(rng.standard_normal((n, o, oh, ow)))
    geometry = (k, k, pad, pad, stride, stride, 1, 1)
    got = conv_relevance(make_rule(name, eps, beta), x, W, b, R, geometry, group)
    want = ref_conv(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                    R.astype(np.float64), pad, stride, group, name, eps, beta)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert close(got, want)


@pytest.mark.parametrize("nonnegative", [True, False])
@pytest.mark.parametrize("name,eps,beta", CASES)
def test_conv_batch_in_chunks_matches_float64_reference(monkeypatch, name, eps, beta, nonnegative):
    """Images go through in chunks of the column budget (here 2 + 2 + 1 of 5), one GEMM per
    chunk; every image's relevance is still its own, with z taken from the forward."""
    import caffelrp.layers.conv as conv_module
    c, h, w, o, k, pad, stride, group = 4, 9, 9, 6, 3, 1, 1, 2
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, c, h, w))
    x = f32(np.abs(x) if nonnegative else x)
    W = f32(rng.standard_normal((o, c // group, k, k)))
    b = f32(rng.standard_normal(o) * 0.5)
    R = f32(rng.standard_normal((5, o, h, w)))
    per_image = c * k * k * h * w * 4
    monkeypatch.setattr(conv_module, "COLUMN_BUDGET", 2 * per_image + 1)
    z = f32(conv_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                         pad, stride, group))
    geometry = (k, k, pad, pad, stride, stride, 1, 1)
    got = conv_relevance(make_rule(name, eps, beta), x, W, b, R, geometry, group, z=z)
    want = ref_conv(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                    R.astype(np.float64), pad, stride, group, name, eps, beta)
    for i in range(5):
        assert close(got[i], want[i]), "image %d" % i


def test_conv_results_do_not_share_scratch_memory(monkeypatch):
    """The rules' temporaries live in scratch buffers; what a call returns must not."""
    from caffelrp import scratch
    monkeypatch.setattr(scratch, "MIN_BYTES", 0)   # every temporary from the scratch pool
    rng = np.random.default_rng(13)
    W = f32(rng.standard_normal((5, 3, 3, 3)))
    geometry = (3, 3, 1, 1, 1, 1, 1, 1)
    for rule in (epsilon(0.1), alpha_beta(beta=1.0), alpha_beta(beta=0.0)):
        x1 = f32(rng.standard_normal((2, 3, 8, 8)))
        x2 = f32(np.abs(rng.standard_normal((1, 3, 8, 8))))
        R1, R2 = f32(rng.standard_normal((2, 5, 8, 8))), f32(rng.standard_normal((1, 5, 8, 8)))
        first = conv_relevance(rule, x1, W, None, R1, geometry)
        kept = first.copy()
        conv_relevance(rule, x2, W, None, R2, geometry)
        np.testing.assert_array_equal(first, kept)
    assert scratch.held_bytes() > 0
    scratch.release()
    assert scratch.held_bytes() == 0


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_conv_epsilon_conserves_with_tiny_eps_and_no_bias(shape):
    c, h, w, o, k, pad, stride, group = shape
    rng = np.random.default_rng(5)
    x = f32(np.abs(rng.standard_normal((1, c, h, w))) + 0.1)
    W = f32(rng.standard_normal((o, c // group, k, k)))
    b = np.zeros(o, np.float32)
    z = conv_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), pad,
                     stride, group)
    R = f32(z)      # relevance = the output itself (well-conditioned, z_j != 0)
    got = conv_relevance(epsilon(1e-9), x, W, b, R, (k, k, pad, pad, stride, stride, 1, 1), group)
    # padding contributes nothing (x = 0 there), so the input receives all of sum R
    np.testing.assert_allclose(got.sum(dtype=np.float64), R.sum(dtype=np.float64), rtol=1e-4)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_conv_alpha_beta_conserves_without_bias(shape, beta):
    c, h, w, o, k, pad, stride, group = shape
    rng = np.random.default_rng(6)
    x = f32(np.abs(rng.standard_normal((1, c, h, w))) + 0.1)
    W = f32(rng.standard_normal((o, c // group, k, k)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    R = f32(np.abs(rng.standard_normal((1, o, oh, ow))))
    got = conv_relevance(alpha_beta(beta=beta), x, W, None, R,
                         (k, k, pad, pad, stride, stride, 1, 1), group)
    # x > 0, so z+ / z- are the convolutions with W+ / W-; every window needs both signs
    x64 = x.astype(np.float64)
    zp = conv_forward(x64, np.maximum(W, 0).astype(np.float64), np.zeros(o), pad, stride, group)
    zn = conv_forward(x64, np.minimum(W, 0).astype(np.float64), np.zeros(o), pad, stride, group)
    assert (zp > 0).all() and (zn < 0).all(), "test data: every window needs both signs"
    np.testing.assert_allclose(got.sum(dtype=np.float64), R.sum(dtype=np.float64), rtol=1e-4)


# ------------------------------------------------------------------ rule objects, table
def test_rule_parameters():
    assert isinstance(epsilon(0.5), Epsilon)
    ab = alpha_beta(beta=1.0)
    assert isinstance(ab, AlphaBeta) and ab.alpha == 2 and ab.beta == 1
    assert alpha_beta(2.0, 1.0).alpha == 2
    with pytest.raises(ValueError):
        alpha_beta(1.0, 1.0)           # the original has alpha = 1 + beta
    with pytest.raises(ValueError):
        alpha_beta(beta=-0.5)


def test_composite_table():
    originals = {k for k in COMPOSITES if isinstance(k, int)}
    assert originals == {0, 2, 100, 102, 104, 114, 54, 56, 58, 60, 22, 6, 8, 18, 11, 99, 26, 166}
    assert {k for k in COMPOSITES if isinstance(k, str)} == {
        "zplus", "gamma", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box"}
    assert isinstance(rule_for(0, "Convolution", eps=0.1), Epsilon)
    assert isinstance(rule_for(0, "InnerProduct"), Epsilon)
    assert isinstance(rule_for(2, "Convolution"), AlphaBeta)
    assert isinstance(rule_for(2, "InnerProduct"), AlphaBeta)
    assert isinstance(rule_for(100, "Convolution", beta=1), AlphaBeta)
    assert isinstance(rule_for(100, "InnerProduct", eps=1), Epsilon)
    with pytest.raises(ValueError):
        rule_for(102, "Convolution", 0, switch_layer=-1)   # the original's A-check
    with pytest.raises(ValueError):
        rule_for(10, "Convolution")                       # LOG(FATAL) in the original
    with pytest.raises(ValueError, match="z\\^B rule needs"):
        rule_for(8, "Convolution", 0, first=True)         # z^B without bounds


def test_readable_names_resolve_to_formula_numbers():
    assert [resolve(n) for n in ("epsilon", "alphabeta", "composite", "Composite-Flat",
                                 "composite-wsquare", "gradient", "sensitivity", "deconvnet",
                                 "guided-backprop")] == [0, 2, 100, 102, 104, 11, 99, 26, 166]
    assert resolve("epsilon-gamma-box") == "epsilon-gamma-box" and resolve(100) == 100
    with pytest.raises(ValueError, match="names"):
        resolve("epsilonn")
    with pytest.raises(ValueError):
        resolve(True)


def test_first_layer_and_own_composites_dispatch():
    bounds = (np.float32(-100), np.float32(155))
    s = Settings(eps=0.5, beta=1.0, gamma=0.5, bounds=bounds)
    for formula, first_kind in ((6, ZBox), (8, ZBox), (18, ZBox), ("epsilon-gamma-box", ZBox),
                                ("epsilon-plus-flat", Flat)):
        assert type(rule_for(formula, "Convolution", 0, first=True, settings=s)) is first_kind
    assert type(rule_for(6, "Convolution", 3, first=False, settings=s)) is AlphaBeta
    assert type(rule_for(8, "Convolution", 3, first=False, settings=s)) is Epsilon
    assert rule_for(18, "Convolution", 16, first=False, settings=s).beta == 0.0
    for formula in (6, 8, 18):   # the original's IP branch: the fc6 switch, user beta ignored
        assert rule_for(formula, "InnerProduct", 15, settings=s).beta == 1.0
        assert rule_for(formula, "InnerProduct", 16, settings=s).beta == 0.0
    g = rule_for("epsilon-gamma-box", "Convolution", 3, first=False, settings=s)
    assert type(g) is Gamma and g.gamma == np.float32(0.5)
    zp = rule_for("epsilon-plus", "Convolution", 3, settings=s)
    assert type(zp) is AlphaBeta and zp.beta == 0 and not zp.use_bias
    assert type(rule_for("epsilon-plus", "InnerProduct", 9, settings=s)) is Epsilon


KINDS = {"e": Epsilon, "a": AlphaBeta, "f": Flat, "w": WSquare, "d": Backprojection}
# formula -> (conv at index <= aux, conv above, IP at index <= aux, IP above); aux = 4 below
TABLE = {0: "eeee", 2: "aaaa", 100: "aaee", 102: "fafe", 104: "wawe", 114: "aeae",
         54: "fefe", 56: "wewe", 58: "fafa", 60: "wawa", 22: "aaaa", 26: "dddd", 166: "dddd",
         11: "dddd", 99: "dddd"}


@pytest.mark.parametrize("formula", sorted(TABLE))
def test_composite_table_switch_is_inclusive(formula):
    kinds = TABLE[formula]
    for pos, (layer_type, index) in enumerate([("Convolution", 4), ("Convolution", 5),
                                               ("InnerProduct", 4), ("InnerProduct", 5)]):
        rule = rule_for(formula, layer_type, index, eps=0.5, beta=2.0, switch_layer=4)
        assert type(rule) is KINDS[kinds[pos]], (formula, layer_type, index)
        if isinstance(rule, Epsilon):
            assert rule.eps == np.float32(0.5)
        if isinstance(rule, AlphaBeta) and formula != 22:
            assert rule.beta == 2.0


def test_formula_22_forces_beta_by_layer_15():
    for layer_type in ("Convolution", "InnerProduct"):
        assert rule_for(22, layer_type, 15, beta=3.0).beta == 1.0
        assert rule_for(22, layer_type, 16, beta=3.0).beta == 0.0
        assert rule_for(22, layer_type, 0, beta=0.0).beta == 1.0


def test_non_linear_behaviour_of_the_table():
    assert [behaviour(f, "ReLU") for f in (0, 100, 102, 26, 166, 11, 99)] == [
        "identity", "identity", "identity", "deconv", "guided", "gradient", "gradient"]
    assert behaviour(26, "Pooling") == behaviour(166, "LRN") == "relevance"
    assert behaviour(11, "Pooling") == behaviour(99, "LRN") == "gradient"
    assert behaviour(99, "output") == "channel_norm" and behaviour(11, "output") is None


# ------------------------------------------- flat and w^2: independent float64 references
def ref_flat_dense(a, R):
    return np.repeat(R.sum(axis=1, keepdims=True) / a.shape[1], a.shape[1], axis=1)


def ref_wsq_dense(W, R):
    w2 = W ** 2
    return R @ (w2 / w2.sum(axis=1, keepdims=True))


def ref_conv_uniform(x, W, R, pad, stride, group, rule):
    """Loops over output positions; flat: R_j / (kh*kw) to every input of the window (all input
    channels of the group); w^2: w_ij^2 / sum_kernel w^2 R_j."""
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // group
    _, _, oh, ow = R.shape
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for g in range(group):
        for q in range(og):
            wq = W[g * og + q]
            share = (np.ones_like(wq) / (kh * kw) if rule == "flat"
                     else wq ** 2 / (wq ** 2).sum())
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * stride, j * stride
                    out[:, g * cg:(g + 1) * cg, hs:hs + kh, ws:ws + kw] += (
                        share[None] * R[:, g * og + q, i, j][:, None, None, None])
    return out[:, :, pad:pad + h, pad:pad + w]


def test_dense_flat_and_w_square_match_float64_reference():
    rng = np.random.default_rng(11)
    a = f32(rng.standard_normal((3, 20)))
    W, b, R = f32(rng.standard_normal((7, 20))), f32(rng.standard_normal(7)), f32(
        rng.standard_normal((3, 7)))
    got = dense_relevance(flat(), a, W, b, R)
    assert got.dtype == np.float32 and got.shape == a.shape
    assert close(got, ref_flat_dense(a.astype(np.float64), R.astype(np.float64)))
    np.testing.assert_allclose(got.sum(axis=1), R.sum(axis=1), rtol=1e-5)   # FLATip conserves
    got = dense_relevance(w_square(), a, W, b, R)
    assert close(got, ref_wsq_dense(W.astype(np.float64), R.astype(np.float64)))
    np.testing.assert_allclose(got.sum(axis=1), R.sum(axis=1), rtol=1e-5)
    # neither depends on the input or the bias
    np.testing.assert_array_equal(dense_relevance(w_square(), 2 * a, W, None, R), got)


def test_w_square_zero_row_gives_nothing():
    a = np.ones((1, 2), np.float32)
    W = np.array([[0.0, 0.0], [1.0, 3.0]], np.float32)
    R = np.array([[5.0, 10.0]], np.float32)
    np.testing.assert_allclose(dense_relevance(w_square(), a, W, None, R), [[1.0, 9.0]], rtol=1e-6)


@pytest.mark.parametrize("rule", ["flat", "w_square"])
@pytest.mark.parametrize("pad,stride,group", [(0, 1, 1), (1, 2, 1), (2, 1, 2)])
def test_conv_flat_and_w_square_match_float64_reference(rule, pad, stride, group):
    rng = np.random.default_rng(12)
    x = f32(rng.standard_normal((2, 4, 7, 6)))
    W = f32(rng.standard_normal((6, 4 // group, 3, 3)))
    b = f32(rng.standard_normal(6))
    oh, ow = (7 + 2 * pad - 3) // stride + 1, (6 + 2 * pad - 3) // stride + 1
    R = f32(rng.standard_normal((2, 6, oh, ow)))
    obj = flat() if rule == "flat" else w_square()
    got = conv_relevance(obj, x, W, b, R, (3, 3, pad, pad, stride, stride, 1, 1), group)
    want = ref_conv_uniform(x, W.astype(np.float64), R.astype(np.float64), pad, stride, group,
                            rule)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert close(got, want)
    if rule == "flat" and pad == 0:
        # the original's FLATconv multiplies the total by C_in/group (spec 2.2)
        np.testing.assert_allclose(got.sum(), R.sum(dtype=np.float64) * (4 // group), rtol=1e-4)


def test_backprojection_is_the_transposed_map():
    rng = np.random.default_rng(13)
    a, W, R = f32(rng.standard_normal((2, 5))), f32(rng.standard_normal((3, 5))), f32(
        rng.standard_normal((2, 3)))
    np.testing.assert_allclose(dense_relevance(backprojection(), a, W, None, R),
                               R.astype(np.float64) @ W.astype(np.float64), rtol=1e-5)


# ------------------------------------------- a small net: implicit Split, Concat, pooling
def test_split_sums_and_concat_slices(tmp_path):
    """data feeds two convolutions (Caffe inserts a Split), their outputs are concatenated, max
    pooled and fed to an inner product. The pass is recomposed here from the float64 rules."""
    from netutil import layer, make_net, randomize

    from caffelrp.attribution import relevance

    body = (layer("ca", "Convolution", "data", "ca",
                  "convolution_param { num_output: 2 kernel_size: 1 }")
            + layer("ra", "ReLU", "ca", "ca")
            + layer("cb", "Convolution", "data", "cb",
                    "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }")
            + layer("rb", "ReLU", "cb", "cb")
            + layer("cat", "Concat", ["ca", "cb"], "cat")
            + layer("pool", "Pooling", "cat", "pool",
                    "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
            + layer("ip", "InnerProduct", "pool", "ip", "inner_product_param { num_output: 4 }"))
    net = make_net(tmp_path, body, input_shape=(1, 3, 6, 6))
    assert "Split" in [t for _, t in net.layers]
    p = randomize(net, seed=7)
    x = f32(np.random.default_rng(8).standard_normal((1, 3, 6, 6)))
    eps = 0.01
    got = relevance(net, x, rule=0, eps=eps, target=[1])

    x64 = x.astype(np.float64)
    za = conv_forward(x64, p["ca"][0], p["ca"][1], 0, 1, 1)
    zb = conv_forward(x64, p["cb"][0], p["cb"][1], 1, 1, 1)
    cat = np.concatenate([np.maximum(za, 0), np.maximum(zb, 0)], axis=1)       # (1, 5, 6, 6)
    windows = cat.reshape(1, 5, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 5, 3, 3, 4)
    pooled = windows.max(axis=-1)
    logits = pooled.reshape(1, -1) @ p["ip"][0].T + p["ip"][1]
    r_top = np.zeros((1, 4))
    r_top[0, 1] = logits[0, 1]
    r_pool = ref_dense(pooled.reshape(1, -1), p["ip"][0], p["ip"][1], r_top, "epsilon", eps)
    r_windows = np.zeros_like(windows)
    first = windows.argmax(axis=-1)
    np.put_along_axis(r_windows, first[..., None], r_pool.reshape(1, 5, 3, 3)[..., None], -1)
    r_cat = r_windows.reshape(1, 5, 3, 3, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 5, 6, 6)
    want = (ref_conv(x64, p["ca"][0], p["ca"][1], r_cat[:, :2], 0, 1, 1, "epsilon", eps)
            + ref_conv(x64, p["cb"][0], p["cb"][1], r_cat[:, 2:], 1, 1, 1, "epsilon", eps))
    assert close(got, want)


def test_batch_targets_per_image(tmp_path):
    """A batch gives each image its own explanation, equal to running the images one by one."""
    from netutil import layer, make_net, randomize

    from caffelrp.attribution import relevance

    body = (layer("c", "Convolution", "data", "c",
                  "convolution_param { num_output: 4 kernel_size: 3 }")
            + layer("r", "ReLU", "c", "c")
            + layer("pool", "Pooling", "c", "pool",
                    "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
            + layer("ip", "InnerProduct", "pool", "ip", "inner_product_param { num_output: 6 }")
            + layer("prob", "Softmax", "ip", "prob"))
    net = make_net(tmp_path, body, input_shape=(3, 2, 8, 8))
    randomize(net, seed=9, scale=0.3)
    x = f32(np.random.default_rng(10).standard_normal((3, 2, 8, 8)))
    batch, classes = relevance(net, x, rule=100, eps=0.5, beta=1.0, target="top5",
                               return_classes=True)
    probs = net.forward(x)["prob"]
    for i in range(3):
        assert list(classes[i]) == list(np.argsort(-probs[i], kind="stable")[:5])
        net_single = make_net(tmp_path, body, input_shape=(1, 2, 8, 8), filename="one.prototxt")
        for name, blobs in net.params.items():
            for dst, src in zip(net_single.params[name], blobs):
                dst[...] = src
        single = relevance(net_single, x[i:i + 1], rule=100, eps=0.5, beta=1.0,
                           target=[[int(c) for c in classes[i]]])
        np.testing.assert_allclose(batch[i], single[0], rtol=1e-5,
                                   atol=1e-6 * np.abs(single).max())
    top1 = relevance(net, x, rule=0, eps=0.5, target="top1", return_classes=True)[1]
    assert [c for (c,) in top1] == list(np.argmax(probs, axis=1))


def test_net_relevance_method_is_the_attribution_driver(tmp_path):
    """``Net.relevance`` is the documented entry point; it must give what the driver gives."""
    import caffelrp.attribution.lrp as lrp
    from netutil import layer, make_net, randomize
    body = (layer("conv", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
            + layer("relu", "ReLU", bottom="conv", top="conv")
            + layer("fc", "InnerProduct", bottom="conv", params="inner_product_param { num_output: 6 }")
            + layer("prob", "Softmax", bottom="fc"))
    net = make_net(tmp_path, body, (2, 3, 7, 7))
    randomize(net, seed=5)
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 7)).astype(np.float32)
    via_method = net.relevance(x, rule=100, eps=0.5, beta=1.0, target="top1")
    via_driver = lrp.relevance(net, x, rule=100, eps=0.5, beta=1.0, target="top1")
    np.testing.assert_array_equal(via_method, via_driver)
    assert via_method.shape == x.shape and via_method.dtype == np.float32


# ------------------------------------- gradient-like types (11, 99, 26, 166) on small nets
GRADIENT_NET = (
    layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
    + layer("relu1", "ReLU", bottom="conv1", top="conv1")
    + layer("pool1", "Pooling", bottom="conv1",
            params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    + layer("norm1", "LRN", bottom="pool1",
            params="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 1.5 }")
    + layer("conv2", "Convolution", bottom="norm1",
            params="convolution_param { num_output: 5 kernel_size: 3 pad: 1 }")
    + layer("relu2", "ReLU", bottom="conv2", top="conv2")
    + layer("pool2", "Pooling", bottom="conv2",
            params="pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }")
    + layer("fc", "InnerProduct", bottom="pool2", params="inner_product_param { num_output: 4 }")
    + layer("prob", "Softmax", bottom="fc"))


def gradient_net_forward(p, x):
    """float64 forward of GRADIENT_NET with tests/reference_ops."""
    import reference_ops as ops
    y = np.maximum(ops.convolution(x, *p["conv1"], pad=(1, 1)), 0)
    y = ops.pooling(y, "MAX", (2, 2), stride=(2, 2))
    y = ops.lrn_across(y, 3, 0.5, 0.75, 1.5)
    y = np.maximum(ops.convolution(y, *p["conv2"], pad=(1, 1)), 0)
    y = ops.pooling(y, "AVE", (3, 3), pad=(1, 1), stride=(2, 2))
    return ops.inner_product(y, *p["fc"])


def gradient_net(tmp_path, seed):
    from netutil import make_net, randomize
    net = make_net(tmp_path, GRADIENT_NET, (1, 2, 10, 10))
    params = randomize(net, seed=seed, scale=0.7)
    x = f32(np.random.default_rng(seed + 100).standard_normal((1, 2, 10, 10)))
    return net, params, x


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_formula_11_is_logit_times_finite_difference_gradient(tmp_path, seed):
    """11 = sum over explained classes of logit_c * d logit_c / dx (central differences in
    float64 through ReLU, MAX pool, LRN, padded AVE pool, conv and inner product)."""
    net, params, x = gradient_net(tmp_path, seed)
    classes = [1, 3]
    got = relevance(net, x, rule=11, target=[classes])
    x64 = x.astype(np.float64)
    logits = gradient_net_forward(params, x64)[0]

    def f(v):
        return sum(logits[c] * gradient_net_forward(params, v)[0, c] for c in classes)
    h = 1e-6
    want = np.zeros_like(x64)
    for idx in np.ndindex(x64.shape):
        up, down = x64.copy(), x64.copy()
        up[idx] += h
        down[idx] -= h
        want[idx] = (f(up) - f(down)) / (2 * h)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())


def test_formula_99_is_the_channel_norm_of_11(tmp_path):
    net, _, x = gradient_net(tmp_path, 3)
    g = relevance(net, x, rule=11, target=2).astype(np.float64)
    s = relevance(net, x, rule=99, target=2)
    norm = np.sqrt((g ** 2).sum(axis=1))
    for c in range(x.shape[1]):
        np.testing.assert_allclose(s[:, c], norm, rtol=1e-6)


@pytest.mark.parametrize("formula", [26, 166])
def test_deconvnet_and_guided_backprop_float64(tmp_path, formula):
    """conv -> ReLU -> ip: 26 = W1^T max(W2^T R, 0); 166 also masks by the ReLU input > 0."""
    from netutil import make_net, randomize
    import reference_ops as ops
    body = (layer("conv", "Convolution", params="convolution_param { num_output: 3 kernel_size: 3 }")
            + layer("relu", "ReLU", bottom="conv", top="conv")
            + layer("fc", "InnerProduct", bottom="conv", params="inner_product_param { num_output: 4 }"))
    net = make_net(tmp_path, body, (1, 2, 6, 6))
    p = randomize(net, seed=7)
    x = f32(np.random.default_rng(8).standard_normal((1, 2, 6, 6)))
    got = relevance(net, x, rule=formula, target=[[0, 2]])
    x64 = x.astype(np.float64)
    pre = ops.convolution(x64, *p["conv"])
    logits = ops.inner_product(np.maximum(pre, 0), *p["fc"])[0]
    top = np.zeros(4)
    top[[0, 2]] = logits[[0, 2]]
    r = (top @ p["fc"][0]).reshape(pre.shape)
    r = np.maximum(r, 0)
    if formula == 166:
        r = r * (pre > 0)
    W = p["conv"][0]
    want = np.zeros_like(x64)
    for i in range(pre.shape[2]):
        for j in range(pre.shape[3]):
            want[0, :, i:i + 3, j:j + 3] += np.tensordot(r[0, :, i, j], W, axes=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------ weight modifiers
def test_weight_modifiers_split_and_square_the_weights():
    from caffelrp.rules import IDENTITY, NEGATIVE, POSITIVE, SQUARE, gamma_shifted
    W = f32(np.random.default_rng(41).standard_normal((4, 6)))
    np.testing.assert_array_equal(POSITIVE(W) + NEGATIVE(W), W)     # w = w+ + w-, exactly
    assert (POSITIVE(W) >= 0).all() and (NEGATIVE(W) <= 0).all()
    np.testing.assert_array_equal(SQUARE(W), W * W)
    np.testing.assert_array_equal(IDENTITY(W), W)
    np.testing.assert_allclose(gamma_shifted(0.5)(W), W + 0.5 * np.maximum(W, 0), rtol=1e-7)


def test_epsilon_rule_with_a_users_weight_modifier_matches_float64_form():
    """A rule of one's own: epsilon on clipped weights and bias, against the formula in float64."""
    from caffelrp.rules import Modifier
    rng = np.random.default_rng(42)
    a, W = f32(rng.standard_normal((3, 7))), f32(rng.standard_normal((5, 7)) * 2)
    b, R = f32(rng.standard_normal(5)), f32(rng.standard_normal((3, 5)))
    clipped = Modifier("clipped", lambda w: np.clip(w, -1, 1))
    got = dense_relevance(epsilon(0.1, weights=clipped), a, W, b, R,
                          z=a @ W.T + b)      # the forward's z is ignored: it is the map's own
    Wc, bc = np.clip(W.astype(np.float64), -1, 1), np.clip(b.astype(np.float64), -1, 1)
    z = a.astype(np.float64) @ Wc.T + bc
    want = a * ((R / (z + 0.1 * np.sign(z))) @ Wc)
    assert got.dtype == np.float32 and close(got, want, rtol=1e-5)   # float32 GEMMs
    assert repr(epsilon(0.1, weights=clipped)) == "epsilon(0.1, weights=clipped)"


def test_gamma_is_epsilon_on_gamma_shifted_weights_for_positive_inputs_and_outputs():
    """Montavon et al. 2019's form (x >= 0, z > 0): the epsilon rule on w + gamma w+."""
    from caffelrp.rules import gamma, gamma_shifted
    rng = np.random.default_rng(43)
    a, W = f32(np.abs(rng.standard_normal((2, 6)))), f32(rng.standard_normal((4, 6)))
    b, R = f32(np.abs(rng.standard_normal(4)) + 6.0), f32(rng.standard_normal((2, 4)))
    assert (a @ W.T + b > 0).all()
    # the same values through other float32 products (W+ separately): rounding only
    np.testing.assert_allclose(
        dense_relevance(gamma(0.25, eps=1e-3), a, W, b, R),
        dense_relevance(epsilon(1e-3, weights=gamma_shifted(0.25)), a, W, b, R), rtol=1e-5,
        atol=1e-6)


