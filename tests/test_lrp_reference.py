"""LRP relevance against the original LRP Toolbox (Caffe release) on ../shared/reference.

Formula types 0 (epsilon), 2 (alpha-beta) and 100 (composite), both parameter settings of the
public set (eps 1 / beta 0 and eps 0.01 / beta 1), class field -2 (top-5), smallnet and caffenet,
images scooter10 and volcano2. The explained classes are taken from runs.json, as the reference
README advises (the original ranks on softmax values that tie at 0), and passed as the target.
"""
import json

import numpy as np
import pytest

from caffelrp.attribution import relevance

MODELS = ["smallnet", "caffenet"]
IMAGES = ["scooter10", "volcano2"]
TAGS = ["f0_eps1_beta0_aux0", "f0_eps0.01_beta1_aux0",
        "f2_eps1_beta0_aux0", "f2_eps0.01_beta1_aux0",
        "f100_eps1_beta0_aux0", "f100_eps0.01_beta1_aux0"]
BOUND = 1e-3

# CaffeNet only, whole image. The five reference images are landscape and padded to 227 rows by
# REPEATING the first/last image row (README, preprocessing), so ~37 input rows are identical and
# conv1 produces identical values down a column there. pool1 (MAX 3x3/2) then sees exact ties
# (about 2100 of its 70k windows). The original breaks ties by the first maximum, as we do, but its
# OpenBLAS sgemm does not give bit-identical results for identical im2col columns (blocking and
# edge kernels), so some of its "ties" are decided by the last bit, differently from ours. Where
# that happens, the whole relevance of a window goes to another conv1 unit, moving relevance
# between input rows of the padded band. Total relevance agrees (per-layer sums to 1e-5).
# Measured: f0 1.6e-2 - 1.8e-2, f2 1.4e-3 - 4.1e-3, f100 1.3e-3 - 6.4e-3. Outside the receptive
# fields of the tied pool1 windows the error is ~1e-5, and that part is held to the 1e-3 bound
# below (test_caffenet_outside_max_pool_ties).
# Which ties fall which way depends on the BLAS kernel the CPU selects: on an AVX-512 machine
# (OpenBLAS's SkylakeX kernels) volcano2's f100 eps 0.01 measured 1.01e-2, hence 2e-2. The
# Caffe-exact mode (tests/test_caffe_blas.py) holds every tag to 1e-4 with no tie exemption.
CAFFENET_TIE_BOUND = {"f0": 3e-2, "f2": 2e-2, "f100": 2e-2}


def reference_case(shared_reference, model, image, tag):
    folder = shared_reference / "expected" / model / image
    x = np.load(folder / "input.npy")[None]
    run = json.loads((folder / "runs.json").read_text())["runs"][tag]
    expected = np.load(folder / "relevance.npz")[tag].astype(np.float64)
    return x, run, expected


def run_ours(net, x, run):
    assert run["classindstype"] == -2
    out, classes = relevance(net, x, rule=run["relpropformulatype"], eps=run["epsstab"],
                             beta=run["alphabeta_beta"],
                             switch_layer=run["auxiliaryvariable_maxlayerindexforflatdistinconv"],
                             target=[run["explained_classes"]], return_classes=True)
    return out, classes


def rel_err(actual, expected):
    return np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model", MODELS)
def test_relevance_matches_original(shared_reference, nets, model, image, tag):
    x, run, expected = reference_case(shared_reference, model, image, tag)
    out, classes = run_ours(nets(model), x, run)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert [int(c) for c in classes[0]] == run["explained_classes"]
    bound = CAFFENET_TIE_BOUND[tag.split("_")[0]] if model == "caffenet" else BOUND
    assert rel_err(out[0], expected) <= bound
    # the per-layer relevance sums (logged by the original) agree much more tightly
    assert abs(out.sum() / run["relevance_sum"] - 1) <= 1e-4


def tied_rows(net):
    """Input rows inside the receptive field of a pool1 window whose positive max is tied."""
    graph = net.graph()
    pool, conv = graph.steps[2].layer, graph.steps[0].layer
    assert (pool.type, conv.type) == ("Pooling", "Convolution")
    xb = graph.value(graph.steps[2].bottoms[0])[0]
    (kh, kw), (oh, ow) = pool.window(*xb.shape[1:])
    sh, sw = pool.stride
    conv_rows = set()
    for i in range(oh):
        for j in range(ow):
            w = xb[:, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(xb.shape[0], -1)
            m = w.max(axis=1, keepdims=True)
            tied = ((w == m).sum(axis=1) > 1) & (m[:, 0] > 0)
            if tied.any():
                conv_rows.update(range(i * sh, min(i * sh + kh, xb.shape[1])))
    g = conv.geometry
    rows = set()
    for r in conv_rows:
        rows.update(range(max(r * g.sh - g.ph, 0), r * g.sh - g.ph + g.kh))
    return sorted(rows)


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("image", IMAGES)
def test_caffenet_outside_max_pool_ties(shared_reference, nets, image, tag):
    net = nets("caffenet")
    x, run, expected = reference_case(shared_reference, "caffenet", image, tag)
    out, _ = run_ours(net, x, run)
    rows = tied_rows(net)
    keep = np.ones(x.shape[2], dtype=bool)
    keep[[r for r in rows if r < x.shape[2]]] = False
    assert 0 < keep.sum() < x.shape[2]
    assert rel_err(out[0][:, keep], expected[:, keep]) <= BOUND


@pytest.mark.parametrize("model", MODELS)
def test_default_top5_uses_softmax_ranking(shared_reference, nets, model):
    """Without an explicit target the top-5 softmax classes are explained; where the 5th and 6th
    probabilities are not tied this is the original's choice."""
    for image in IMAGES:
        x, run, expected = reference_case(shared_reference, model, image, "f100_eps1_beta0_aux0")
        out, classes = relevance(nets(model), x, rule=100, eps=1.0, beta=0.0, target="top5",
                                 return_classes=True)
        data = json.loads((shared_reference / "expected" / model / image / "runs.json")
                          .read_text())
        if data["prob_5th_equals_6th"]:
            assert len(classes[0]) == 5
            continue
        assert [int(c) for c in classes[0]] == run["explained_classes"]


CLASS_TAGS = {"smallnet": ["f0_eps1_beta0_aux0_clsm1", "f2_eps1_beta0_aux0_clsm1",
                           "f100_eps1_beta0_aux0_clsm1", "f0_eps1_beta0_aux0_cls3",
                           "f2_eps1_beta0_aux0_cls3", "f100_eps1_beta0_aux0_cls3"],
              "caffenet": ["f0_eps1_beta0_aux0_clsm1", "f2_eps1_beta0_aux0_clsm1",
                           "f100_eps1_beta0_aux0_clsm1", "f0_eps1_beta0_aux0_cls42",
                           "f2_eps1_beta0_aux0_cls42", "f100_eps1_beta0_aux0_cls42"]}


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model,tag", [(m, t) for m in MODELS for t in CLASS_TAGS[m]])
def test_top1_and_fixed_class(shared_reference, nets, model, image, tag):
    """Class field -1 (top-1 by softmax) and k >= 0, given as target='top1' / target=k."""
    x, run, expected = reference_case(shared_reference, model, image, tag)
    suffix = tag.rsplit("_", 1)[1]
    target = "top1" if suffix == "clsm1" else int(suffix[3:])
    out, classes = relevance(nets(model), x, rule=run["relpropformulatype"], eps=run["epsstab"],
                             beta=run["alphabeta_beta"], target=target, return_classes=True)
    assert [int(c) for c in classes[0]] == run["explained_classes"]
    bound = CAFFENET_TIE_BOUND[tag.split("_")[0]] if model == "caffenet" else BOUND
    assert rel_err(out[0], expected) <= bound


# ----------------------------------------------------------------- the other formula types
# Every tag of the public set for formula types other than 0/2/100, read from the npz keys
# (settings A and B, the _aux3 / _aux4 switch variants, the class variants of f11).
NEW_FORMULAS = (102, 104, 114, 54, 56, 58, 60, 22, 11, 99, 26, 166)
NEW_TAGS = {
    "smallnet": ["f102_eps0.01_beta1_aux0", "f102_eps1_beta0_aux0", "f102_eps1_beta0_aux3",
                 "f104_eps0.01_beta1_aux0", "f104_eps1_beta0_aux0", "f104_eps1_beta0_aux3",
                 "f114_eps0.01_beta1_aux0", "f114_eps1_beta0_aux0", "f114_eps1_beta0_aux3",
                 "f54_eps0.01_beta1_aux0", "f54_eps1_beta0_aux0", "f54_eps1_beta0_aux3",
                 "f56_eps0.01_beta1_aux0", "f56_eps1_beta0_aux0", "f56_eps1_beta0_aux3",
                 "f58_eps0.01_beta1_aux0", "f58_eps1_beta0_aux0", "f58_eps1_beta0_aux3",
                 "f60_eps0.01_beta1_aux0", "f60_eps1_beta0_aux0", "f60_eps1_beta0_aux3",
                 "f22_eps0.01_beta1_aux0", "f22_eps1_beta0_aux0",
                 "f11_eps1_beta0_aux0", "f11_eps1_beta0_aux0_cls3", "f11_eps1_beta0_aux0_clsm1",
                 "f99_eps1_beta0_aux0", "f26_eps1_beta0_aux0", "f166_eps1_beta0_aux0"],
    "caffenet": ["f102_eps0.01_beta1_aux0", "f102_eps1_beta0_aux0", "f102_eps1_beta0_aux4",
                 "f104_eps0.01_beta1_aux0", "f104_eps1_beta0_aux0", "f104_eps1_beta0_aux4",
                 "f114_eps0.01_beta1_aux0", "f114_eps1_beta0_aux0",
                 "f54_eps0.01_beta1_aux0", "f54_eps1_beta0_aux0",
                 "f56_eps0.01_beta1_aux0", "f56_eps1_beta0_aux0",
                 "f58_eps0.01_beta1_aux0", "f58_eps1_beta0_aux0",
                 "f60_eps0.01_beta1_aux0", "f60_eps1_beta0_aux0",
                 "f22_eps0.01_beta1_aux0", "f22_eps1_beta0_aux0",
                 "f11_eps1_beta0_aux0", "f11_eps1_beta0_aux0_cls42", "f11_eps1_beta0_aux0_clsm1",
                 "f99_eps1_beta0_aux0", "f26_eps1_beta0_aux0", "f166_eps1_beta0_aux0"],
}
# CaffeNet whole image: the tied pool1 windows above move relevance between input rows of the
# padded band for these types too. Measured (scooter10, volcano2, all tags of a type):
# f102 4.4e-4 - 1.0e-3, f104 9.3e-4 - 3.0e-3, f58 5.6e-4 - 7.1e-4, f60 1.4e-3 - 1.9e-3,
# f22 3.3e-3 - 4.1e-3, f114 1.2e-2 - 1.7e-2, f54 8.1e-3 - 8.9e-3, f56 1.4e-2 - 1.5e-2,
# f11 1.0e-2 - 2.6e-2, f99 8.8e-3 - 1.5e-2, f26 7.7e-3 - 1.1e-2, f166 5.8e-3 - 1.6e-2.
# Maxima tied at 0 (dead ReLUs) are exact zeros on both sides and resolved identically.
# Outside the tied windows' receptive fields all are held to 1e-3
# (test_caffenet_new_formulas_outside_max_pool_ties).
# On the AVX-512 machine (see above) volcano2 measured f102 up to 6.0e-3, f104 6.7e-3, f58 3.4e-3.
CAFFENET_TIE_BOUND.update({"f102": 1.2e-2, "f104": 1.2e-2, "f58": 8e-3, "f60": 1e-2, "f22": 1e-2,
                           "f114": 3e-2, "f54": 3e-2, "f56": 3e-2, "f11": 5e-2, "f99": 5e-2,
                           "f26": 3e-2, "f166": 4e-2})
# gradient-like outputs have cancelling signs; their sums are not a tight check
GRADIENT_LIKE = {"f11", "f99", "f26", "f166"}


@pytest.mark.large_reference
def test_new_tag_lists_cover_the_reference(shared_reference):
    for model, tags in NEW_TAGS.items():
        for image in IMAGES:
            keys = np.load(shared_reference / "expected" / model / image / "relevance.npz").files
            present = {k for k in keys if int(k.split("_")[0][1:]) in NEW_FORMULAS}
            assert present == set(tags), (model, image)


def run_tag(net, x, run, tag):
    suffix = tag.rsplit("_", 1)[1]
    if suffix == "clsm1":
        target = "top1"
    elif suffix.startswith("cls"):
        target = int(suffix[3:])
    else:
        target = [run["explained_classes"]]
    out, classes = relevance(net, x, rule=run["relpropformulatype"], eps=run["epsstab"],
                             beta=run["alphabeta_beta"],
                             switch_layer=run["auxiliaryvariable_maxlayerindexforflatdistinconv"],
                             target=target, return_classes=True)
    assert [int(c) for c in classes[0]] == run["explained_classes"]
    return out


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model,tag", [(m, t) for m in MODELS for t in NEW_TAGS[m]])
def test_new_formulas_match_original(shared_reference, nets, model, image, tag):
    x, run, expected = reference_case(shared_reference, model, image, tag)
    out = run_tag(nets(model), x, run, tag)
    assert out.dtype == np.float32 and out.shape == x.shape
    family = tag.split("_")[0]
    bound = CAFFENET_TIE_BOUND[family] if model == "caffenet" else BOUND
    assert rel_err(out[0], expected) <= bound
    sum_bound = 1e-2 if family in GRADIENT_LIKE else 1e-4
    assert abs(out.sum() / run["relevance_sum"] - 1) <= sum_bound


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("tag", NEW_TAGS["caffenet"])
def test_caffenet_new_formulas_outside_max_pool_ties(shared_reference, nets, image, tag):
    net = nets("caffenet")
    x, run, expected = reference_case(shared_reference, "caffenet", image, tag)
    out = run_tag(net, x, run, tag)
    rows = tied_rows(net)
    keep = np.ones(x.shape[2], dtype=bool)
    keep[[r for r in rows if r < x.shape[2]]] = False
    assert 0 < keep.sum() < x.shape[2]
    assert rel_err(out[0][:, keep], expected[:, keep]) <= BOUND
