"""Shared pytest fixtures."""
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The smallnet part of the public LRP reference, kept in the repository (tests/data/README.md)
REFERENCE_SUBSET = REPO / "tests" / "data" / "reference"
LARGE_MODELS = ("caffenet", "googlenet", "vgg16")


def full_reference_path():
    return Path(os.environ.get("CAFFELRP_SHARED_REFERENCE",
                               REPO.parent / "shared" / "reference"))


def large_reference_reason():
    return ("needs the CaffeNet/GoogLeNet/VGG-16 outputs of the original LRP Toolbox (the public "
            "reference, about 60 MB, not in the repository), not found at %s: set "
            "CAFFELRP_SHARED_REFERENCE to it; CI runs these tests" % full_reference_path())


@pytest.fixture(scope="session")
def shared_reference():
    """The public LRP reference data (shared/reference beside the checkout, or
    $CAFFELRP_SHARED_REFERENCE); without it, its smallnet part in tests/data/reference, and the
    tests of the large models are skipped (``_needs_large_reference``)."""
    path = full_reference_path()
    return path if path.is_dir() else REFERENCE_SUBSET


@pytest.fixture(scope="session")
def reference_weights(shared_reference, tmp_path_factory):
    """model name -> path of its seed-1 caffemodel (the public reference's weights), written once
    per session on demand, with the project's own code (tests/refdata.py): the tests never run
    the reference's own scripts."""
    import refdata
    folder = tmp_path_factory.mktemp("reference_weights")
    cache = {}

    def get(model):
        if model not in cache:
            manifest = json.loads((shared_reference / "models" / model / "manifest.json")
                                  .read_text())
            path = folder / (model + ".caffemodel")
            path.write_bytes(refdata.net_param_bytes(manifest, 1))
            cache[model] = path
        return cache[model]
    return get


@pytest.fixture(scope="session")
def nets(shared_reference, reference_weights):
    """model name -> the reference model (``caffelrp.Net``) with its seed-1 weights, made once."""
    import caffelrp
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = caffelrp.Net(shared_reference / "models" / model / "deploy.prototxt",
                                        reference_weights(model))
        return cache[model]
    return get


@pytest.fixture(autouse=True)
def _needs_large_reference(request):
    """Skip a reference test of CaffeNet/GoogLeNet/VGG-16 where only the subset is present."""
    if "shared_reference" not in request.fixturenames or full_reference_path().is_dir():
        return
    if request.node.get_closest_marker("large_reference") or any(
            m in request.node.name for m in LARGE_MODELS):
        pytest.skip(large_reference_reason())


SLOW_MODELS = LARGE_MODELS + ("alexnet", "bvlc_")


def pytest_collection_modifyitems(config, items):
    """Tests on the ImageNet-sized models (named by the model in their id) take seconds each:
    they are ``slow``, so ``-m "not slow"`` gives a quick run (other slow tests are marked where
    they are defined)."""
    for item in items:
        if any(m in item.name for m in SLOW_MODELS):
            item.add_marker(pytest.mark.slow)
