"""LRP on residual nets (issue 12): BatchNorm / Scale / Eltwise SUM joins.

Two nets: the bundled ``models/resnet_tiny`` and a generated ResNet-50-shaped net (7x7 stem, max
pool, bottleneck blocks 1x1 -> 3x3 -> 1x1 with projection and identity shortcuts, BatchNorm +
Scale after every convolution, global average pool, fc), both with seeded He-normal weights and
positive BatchNorm variances. Checked: formula 11 against logit x ``net.gradient``; 26 / 166
against a deconvnet / guided-backprop backward written here in float64 numpy; that caffelrp's
composites and the original's epsilon / w^2 / z^B formulas create no relevance, and that the
composites keep nearly all of it; for the original's formulas, every layer's share against the
spec's conservation formula (where alpha-beta and flat create relevance by design); the Eltwise
join against a float64 epsilon formula.
"""
from pathlib import Path

import numpy as np
import pytest

import caffelrp
from caffelrp.composites import supported_formulas

from netutil import he_normal, layer, make_net, resnet50_body

REPO = Path(__file__).resolve().parents[1]
MEAN = (104.0, 117.0, 123.0)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    tiny = caffelrp.Net(str(REPO / "models" / "resnet_tiny" / "deploy.prototxt"),
                        allow_missing_weights=True)
    tiny.reshape([(2, 3, 32, 32)])
    he_normal(tiny, 1201)
    big = make_net(tmp_path_factory.mktemp("resnet50"), resnet50_body(), input_shape=(2, 3, 32, 32))
    he_normal(big, 1202)
    rng = np.random.default_rng(1203)
    x = rng.uniform(0, 255, (2, 3, 32, 32)) - np.array(MEAN).reshape(1, 3, 1, 1)
    return {"resnet_tiny": tiny, "resnet50_shaped": big}, x.astype(np.float32)


NETS = ("resnet_tiny", "resnet50_shaped")


def max_rel(actual, expected):
    expected = np.asarray(expected, np.float64)
    return np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max()


# ------------------------------------------------------------------ formula 11 = logit x grad
@pytest.mark.parametrize("name", NETS)
def test_formula_11_is_logit_times_gradient(nets, name):
    net, x = nets[0][name], nets[1]
    res = net.relevance_details(x, rule=11, target="top1")
    r, classes = res.input, res.classes
    grad, info = net.gradient(x, target="top1")
    assert [d["classes"] for d in info] == [[int(c) for c in per] for per in classes]
    logit = np.array([d["F"] for d in info]).reshape(-1, 1, 1, 1)
    # the same backward over the same folded layers, seeded with the logit instead of 1: float32
    # rounding of the scaled values only (measured 2.0e-7 and 2.4e-7)
    assert max_rel(r, logit * grad.astype(np.float64)) <= 1e-5


# ------------------------------------------------- 26 / 166 against a float64 numpy backward
def _conv_transpose(dy, W, stride, pad, shape):
    n, c, h, w = shape
    kh, kw = W.shape[2:]
    oh, ow = dy.shape[2:]
    dx = np.zeros((n, c, h + 2 * pad[0] + stride[0], w + 2 * pad[1] + stride[1]))
    for a in range(kh):
        for b in range(kw):
            dx[:, :, a:a + stride[0] * oh:stride[0], b:b + stride[1] * ow:stride[1]] += \
                np.einsum("oc,nopq->ncpq", W[:, :, a, b], dy)
    return dx[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def _max_pool_transpose(x, dy, k, s):
    """All of an output's value to the first maximum of its window (Caffe's ceil windows)."""
    n, c, h, w = x.shape
    dx = np.zeros(x.shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            win = x[:, :, i * s:min(i * s + k, h), j * s:min(j * s + k, w)]
            ww = win.shape[3]
            first = win.reshape(n, c, -1).argmax(axis=2)            # argmax: first maximum
            rows, cols = i * s + first // ww, j * s + first % ww
            for a in range(n):
                for b in range(c):
                    dx[a, b, rows[a, b], cols[a, b]] += dy[a, b, i, j]
    return dx


def reference_backprojection(net, x, formula, classes):
    """Deconvnet (26) / guided backprop (166) in float64: the transposed linear maps, ReLU as
    max(R, 0) (166: also where the ReLU input > 0), max pooling to the first maximum, Eltwise SUM
    its gradient; the global AVE pool as the original's rule 26/166 has it (x_i R / sum_i x_i,
    spec 2.3, reproduced so that the reference formulas stay exact). Activations are the net's
    float32 forward values."""
    net.forward(x)
    names = [n for n, _ in net.layers]
    values, inputs = {net.inputs[0]: np.asarray(x, np.float64)}, {}
    for i, (name, kind) in enumerate(net.layers):
        inputs[i] = [values.get(b) for b in net.layer_bottoms(i)]
        for t, v in zip(net.layer_tops(i), net.layer_top_values(i)):
            values[t] = np.asarray(v, np.float64)
    top = names.index("fc" if "fc" in names else "fc10")
    logits = values[net.layer_tops(top)[0]]
    grad = {net.layer_tops(top)[0]: np.zeros_like(logits)}
    for n, per in enumerate(classes):
        for c in per:
            grad[net.layer_tops(top)[0]][n, c] = logits[n, c]
    for i in range(top, -1, -1):
        name, kind = net.layers[i]
        tops, bottoms = net.layer_tops(i), net.layer_bottoms(i)
        if kind == "Input" or not bottoms:
            continue
        g = [grad.pop(t, None) for t in tops]
        if all(v is None for v in g):
            continue
        lay = net.layer(i)
        xin = inputs[i][0]
        if kind == "InnerProduct":
            out = [(g[0] @ net.params[name][0].astype(np.float64)).reshape(xin.shape)]
        elif kind == "Convolution":
            geo = lay.geometry
            out = [_conv_transpose(g[0], net.params[name][0].astype(np.float64),
                                   (geo.sh, geo.sw), (geo.ph, geo.pw), xin.shape)]
        elif kind == "BatchNorm":
            mean, var, f = (b.astype(np.float64) for b in net.params[name])
            out = [g[0] / np.sqrt(var / f[0] + 1e-5).reshape(1, -1, 1, 1)]
        elif kind == "Scale":
            out = [g[0] * net.params[name][0].astype(np.float64).reshape(1, -1, 1, 1)]
        elif kind == "ReLU":
            r = np.maximum(g[0], 0)
            out = [np.where(xin > 0, r, 0) if formula == 166 else r]
        elif kind == "Pooling" and lay.global_pooling:
            s = xin.sum(axis=(2, 3), keepdims=True)
            small = np.abs(s) < 1e-6       # spec 2.3: there the original adds x_i itself
            out = [np.where(small, xin, xin * g[0] / np.where(small, 1, s))]
        elif kind == "Pooling":
            out = [_max_pool_transpose(xin, g[0], lay.kernel[0], lay.stride[0])]
        elif kind == "Eltwise":
            out = [g[0], g[0]]
        elif kind == "Split":
            out = [sum(v for v in g if v is not None)]
        else:
            raise AssertionError(kind)
        for b, v in zip(bottoms, out):
            grad[b] = grad[b] + v if b in grad else v
    return grad[net.inputs[0]]


@pytest.mark.parametrize("formula", [26, 166])
@pytest.mark.parametrize("name", NETS)
def test_deconvnet_and_guided_backprop_match_float64_backward(nets, name, formula):
    net, x = nets[0][name], nets[1]
    res = net.relevance_details(x, rule=formula, target="top1")
    r, classes = res.input, res.classes
    want = reference_backprojection(net, x, formula, classes)
    # float32 pass vs float64: rounding only (no division by a small number on this path)
    assert max_rel(r, want) <= 1e-5


# ------------------------------------------------------------------- no relevance created
LRP_RULES = [f for f in supported_formulas() if f not in (11, 99, 26, 166)]
OWN_COMPOSITES = [f for f in LRP_RULES if isinstance(f, str)]
ORIGINAL_FORMULAS = [f for f in LRP_RULES if isinstance(f, int)]
# The original's formulas whose rules create relevance by design on these nets (spec 2.2):
# alpha-beta passes alpha R_j at a neuron without negative products, the original's flat rule
# multiplies the total by C_in / group at a first layer with index <= switch_layer (0: conv1 of
# the generated net, which has no Input layer; resnet_tiny's layer 0 is its Input).
# test_every_layer_passes_what_its_spec_formula_says accounts for each of them exactly.
CREATE_BY_DESIGN = {"resnet_tiny": {2, 6, 18, 22, 58, 60, 100, 102, 104},
                    "resnet50_shaped": {2, 6, 18, 22, 54, 58, 60, 100, 102, 104}}


def _kwargs(rule):
    return dict(mean=MEAN) if rule in (6, 8, 18, "epsilon-gamma-box") else {}


@pytest.mark.parametrize("name,rule", [(n, r) for n in NETS for r in LRP_RULES
                                       if r not in CREATE_BY_DESIGN[n]])
def test_no_rule_creates_relevance(nets, name, rule):
    """|sum of the input relevance| <= injected (1e-4 slack for float32 sums): caffelrp's own
    composites (z+ / gamma joins, see composites.py) and the original's epsilon / w^2 / z^B
    formulas (those of CREATE_BY_DESIGN are accounted for layer by layer below)."""
    net, x = nets[0][name], nets[1]
    res = net.relevance_details(x, rule=rule, target="top1", **_kwargs(rule))
    total = np.abs(res.input.reshape(2, -1).sum(axis=1, dtype=np.float64))
    assert np.isfinite(res.input).all()
    assert (total <= np.abs(res.injected) * (1 + 1e-4)).all(), (total, res.injected)


@pytest.mark.parametrize("rule", ["zplus", "epsilon-plus", "gamma", "epsilon-gamma-box"])
@pytest.mark.parametrize("name", NETS)
def test_own_composites_keep_nearly_all_relevance(nets, name, rule):
    """The z+ and gamma joins pass all of it; z+ / gamma (no bias) lose only what neurons
    without a positive product (z+) or with products summing to 0 (gamma) hold, the epsilon
    inner product its stabiliser and bias share: measured 0.9969-1.0000 on both nets (with the
    epsilon join at eps = 1, 0.96-0.99 and zplus 1.06: creation)."""
    net, x = nets[0][name], nets[1]
    res = net.relevance_details(x, rule=rule, target="top1", **_kwargs(rule))
    kept = res.input.reshape(2, -1).sum(axis=1, dtype=np.float64) / res.injected
    # 1e-4: float32 sums; the floor 0.99 below the lowest measured 0.9969
    assert (kept >= 0.99).all() and (kept <= 1 + 1e-4).all(), kept


def _conv64(x, W, stride, pad):
    """sum_i x_i w_ij per output j in float64 (correlation, zero padding), groups of one."""
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh, ow = (h + 2 * pad[0] - kh) // stride[0] + 1, (w + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for a in range(kh):
        for b in range(kw):
            win = xp[:, :, a:a + stride[0] * oh:stride[0], b:b + stride[1] * ow:stride[1]]
            out += np.einsum("oc,ncpq->nopq", W[:, :, a, b], win)
    return out


def _linear_parts(layer, x):
    """(map, bias) in float64: map(v, weights) is sum_i v_i w'_ij for an input-shaped v."""
    W = layer.blobs[0].astype(np.float64)
    b = layer.blobs[1].astype(np.float64) if layer.bias_term else np.zeros(W.shape[0])
    if layer.type == "Convolution":
        assert layer.group == 1
        geo = layer.geometry

        def apply(v, w):
            return _conv64(v, w, (geo.sh, geo.sw), (geo.ph, geo.pw))
        return apply, b.reshape(1, -1, 1, 1), W

    def apply_ip(v, w):
        return v.reshape(len(v), -1) @ w.reshape(w.shape[0], -1).T
    return apply_ip, b.reshape(1, -1), layer.weight_matrix().astype(np.float64)


def _spec_total(rule, layer, x, r):
    """Per image, the relevance a linear layer passes on by the spec's formula (spec 2.2) for the
    upper relevance r (float64, shaped like the output), and the slack float32 allows: the
    relevance of the neurons whose z+ or z- lies within float32 rounding of 0 (caffelrp forms z-
    as z - z+ in float32), which may fall on either side of the "no contribution" case."""
    apply, b, W = _linear_parts(layer, x)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)

    def per_image(v):
        return v.reshape(len(v), -1).sum(axis=1)

    def share(num, den, keep):
        return np.where(keep, num / np.where(keep, den, 1), 0)

    none = np.zeros(len(x))

    kind = type(rule).__name__
    if kind == "AlphaBeta":
        P, N = apply(xp, Wp) + apply(xn, Wn), apply(xp, Wn) + apply(xn, Wp)
        if not rule.use_bias:       # z+ : positive products only, no bias
            return per_image(r * share(P, P, P > 0)), none
        zp, zn = P + np.maximum(b, 0), N + np.minimum(b, 0)
        alpha, beta = float(rule.alpha), float(rule.beta)
        scale = 1e-5 * (P - N + np.abs(b))
        edge = (np.abs(zp) <= scale) | ((np.abs(zn) <= scale) & (beta > 0))
        # AB4: alpha R_j P_j / z+_j - beta R_j N_j / z-_j, a term only where its z is non-zero
        return (per_image(r * (alpha * share(P, zp, zp > 0) - beta * share(N, zn, zn < 0))),
                per_image(np.where(edge, (alpha + beta) * np.abs(r), 0)))
    if kind == "Epsilon":
        c = apply(x, W)
        z = c + b
        d = z + float(rule.eps) * np.sign(z)
        return per_image(r * np.where(z == 0, 1, c / np.where(z == 0, 1, d))), none
    if kind == "Flat":
        kh, kw = W.shape[2:]
        # every R_j over the inputs of its window, 1/(kh kw) each (padding entries dropped)
        return per_image(r * apply(np.ones_like(x), np.ones_like(W)) / (kh * kw)), none
    if kind == "WSquare":
        sq = W * W
        total = sq.reshape(len(sq), -1).sum(axis=1).reshape(b.shape)
        return per_image(r * apply(np.ones_like(x), sq) / total), none
    if kind == "ZBox":
        low = np.broadcast_to(rule.low.astype(np.float64), x.shape)
        high = np.broadcast_to(rule.high.astype(np.float64), x.shape)
        q = apply(x, W) - apply(low, Wp) - apply(high, Wn)
        z = q + np.maximum(b, 0)
        big = np.abs(z) > 1e-12
        return per_image(r * np.where(big, q / np.where(big, z, 1), q)), none
    raise AssertionError(kind)


def _join_total(rule, xs, coeff, r):
    c = [k * v for k, v in zip(coeff, xs)]
    y = sum(c)
    if type(rule).__name__ == "Epsilon":
        d = y + float(rule.eps) * np.sign(y)
        kept = np.where(y == 0, 1, y / np.where(y == 0, 1, d))
    else:                           # z+: all of R_j where some c_k x_k > 0
        kept = (sum(np.maximum(v, 0) for v in c) > 0).astype(float)
    return (r * kept).reshape(len(r), -1).sum(axis=1)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("rule", ORIGINAL_FORMULAS)
@pytest.mark.parametrize("name", NETS)
def test_every_layer_passes_what_its_spec_formula_says(nets, name, rule, beta):
    """The conservation ledger, layer by layer, against the spec's accounting (spec 2.2: AB4's
    alpha R_j P_j / z+_j - beta R_j N_j / z-_j, EPS's R_j (z_j - b_j) / (z_j + eps sign z_j),
    FLATconv's C_in/group * (window inside the image) / (kh kw), WSQ's and ZB's shares) computed
    here in float64 from the layer's input, weights and upper relevance; the join by its rule's
    formula; ReLU, pooling and Split pass all of it. This is where the original's formulas
    create relevance on a ResNet (alpha R_j at neurons without negative products, flat's C_in
    factor), and nowhere else.

    With beta > 0 the check is loose at the neurons whose z- is within float32 rounding of 0
    (``_spec_total``'s slack: up to all of a layer's relevance in the narrow 1x1 convolutions,
    where many neurons have no negative product); with beta = 0 it is tight everywhere."""
    from caffelrp.composites import LayerPlace, Settings, layer_rule, resolve
    net, x = nets[0][name], nets[1]
    res = net.relevance_details(x, rule=rule, target="top1", beta=beta, **_kwargs(rule))
    graph = net.graph()
    steps = {step.layer.name: step for step in net.folded().graph().steps}
    settings = Settings(beta=beta, bounds=(np.float32(0) - np.array(MEAN, np.float32).reshape(1, 3, 1, 1),
                                np.float32(255) - np.array(MEAN, np.float32).reshape(1, 3, 1, 1)))
    checked = 0
    for row in res.ledger:
        step = steps[row.name]
        layer = step.layer
        # float32 sums of thousands of terms of both signs: 1e-4 of the relevance's magnitude
        tol = 1e-4 * np.abs(row.relevance_in) + 1e-6 * np.abs(res.injected)
        if layer.type in ("Convolution", "InnerProduct"):
            r = res.blobs[graph.name(step.tops[0])].astype(np.float64)
            x_in = graph.value(step.bottoms[0]).astype(np.float64)
            lrule = layer_rule(resolve(rule), layer.rule_key,
                               LayerPlace(row.index, graph.inputs[0] in step.bottoms), settings)
            want, slack = _spec_total(lrule, layer, x_in, r)
            tol = 1e-4 * np.abs(r).reshape(len(r), -1).sum(axis=1) + slack
        elif layer.type == "Eltwise":
            r = res.blobs[graph.name(step.tops[0])].astype(np.float64)
            lrule = layer_rule(resolve(rule), "Eltwise", LayerPlace(row.index, False), settings)
            want = _join_total(lrule, [graph.value(b).astype(np.float64) for b in step.bottoms],
                               layer.coeff, r)
        else:
            want = row.relevance_in
        assert np.abs(row.relevance_out - want).max() <= tol.max(), (row, want)
        checked += 1
    assert checked == len(res.ledger) > 10


# ------------------------------------------------------------------ the Eltwise join itself
def test_eltwise_join_against_float64_epsilon(tmp_path):
    """Two inputs that nearly cancel: R_k = c_k x_k R / (y + eps sign(y)), y = sum_k c_k x_k;
    the proportional split x_k R / y would create relevance where |y| << |x_k|."""
    body = (layer("a", "Convolution", "data", "a", "convolution_param { num_output: 3 "
                  "kernel_size: 1 }")
            + layer("b", "Convolution", "data", "b", "convolution_param { num_output: 3 "
                    "kernel_size: 1 }")
            + layer("sum", "Eltwise", ["a", "b"], "sum",
                    "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }")
            + layer("ip", "InnerProduct", "sum", "ip", "inner_product_param { num_output: 2 }"))
    net = make_net(tmp_path, body, input_shape=(2, 2, 4, 4))
    rng = np.random.default_rng(1210)
    for blobs in net.params.values():
        for b in blobs:
            b[...] = rng.standard_normal(b.shape)
    net.params["b"][0][...] = 2 * net.params["a"][0] + 1e-3 * rng.standard_normal((3, 2, 1, 1))
    net.params["b"][1][...] = 2 * net.params["a"][1]
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    res = net.relevance_details(x, rule=0, eps=0.25, target=0)
    index = {name: i for i, (name, _) in enumerate(net.layers)}
    a = net.layer_top_values(index["a"])[0].astype(np.float64)
    b = net.layer_top_values(index["b"])[0].astype(np.float64)
    y = a - 0.5 * b
    r = res.blobs["sum"].astype(np.float64)
    s = r / (y + 0.25 * np.where(y >= 0, 1, -1))
    # y's rounding (float32 sum of nearly cancelling terms) is the dominant error: 1e-4 absolute
    np.testing.assert_allclose(res.blobs["a"], a * s, rtol=1e-4, atol=1e-4 * np.abs(a * s).max())
    np.testing.assert_allclose(res.blobs["b"], -0.5 * b * s, rtol=1e-4,
                               atol=1e-4 * np.abs(b * s).max())
    row = [r for r in res.ledger if r.name == "sum"][0]
    assert (np.abs(row.relevance_out) <= np.abs(row.relevance_in) * (1 + 1e-6)).all()


# ------------------------------------------------------------------ bad input, clear errors
def test_alpha_beta_on_an_inner_product_reading_a_signed_4d_blob(tmp_path):
    """The first layer is an InnerProduct on the (N, C, H, W) input with negative values: rule 2
    and z+ split x into its signed parts (once a numpy broadcast error)."""
    body = layer("ip", "InnerProduct", "data", "ip", "inner_product_param { num_output: 3 }")
    net = make_net(tmp_path, body, input_shape=(2, 2, 3, 3))
    rng = np.random.default_rng(1220)
    net.params["ip"][0][...] = rng.standard_normal((3, 18))
    x = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    W = net.params["ip"][0].astype(np.float64)
    z = x.reshape(2, -1).astype(np.float64) * W[0]                     # z_i for class 0
    for rule in (2, "zplus"):
        r = net.relevance(x, rule=rule, beta=0.0, target=0)
        zp = np.maximum(z, 0)
        # beta 0: R_i = z+_i / sum z+ * R (bias 0), float64 formula
        want = zp / zp.sum(axis=1, keepdims=True) * (z.sum(axis=1, keepdims=True))
        np.testing.assert_allclose(r.reshape(2, -1), want, rtol=1e-5, atol=1e-6)


def test_softmax_on_another_blob_than_the_injection_layer(tmp_path):
    """The Softmax reads a 4-class head, the injection layer has 3 outputs: classes are ranked by
    the injected values; an explicit class out of their range is a TargetError (once an
    IndexError)."""
    from caffelrp.attribution.targets import TargetError
    body = (layer("ip", "InnerProduct", "data", "ip", "inner_product_param { num_output: 3 }")
            + layer("head", "InnerProduct", "ip", "head", "inner_product_param { num_output: 4 }")
            + layer("prob", "Softmax", "head", "prob"))
    net = make_net(tmp_path, body, input_shape=(2, 5))
    rng = np.random.default_rng(1221)
    for blobs in net.params.values():
        for b in blobs:
            b[...] = rng.standard_normal(b.shape)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    res = net.relevance_details(x, rule=0, start="ip", target="top1")
    logits = net.layer_top_values(0 if net.layers[0][0] == "ip" else 1)[0]
    assert res.classes == [[int(np.argmax(row))] for row in logits]
    with pytest.raises(TargetError, match="image 0: class 3 .*3 classes"):
        net.relevance(x, rule=0, start="ip", target=[3, 0])
