"""The reference models of ../shared/reference: Caffe's layer list and the original's forward pass.

The manifests were written by Caffe itself (the LRP toolbox's 2015 fork) for the same prototxts, so
the layer indices, names, implicit Split layers and shapes must agree exactly. The logits and
softmax outputs were produced by that Caffe from input.npy with seeded random weights.
"""
import json

import numpy as np
import pytest

import caffelrp

MODELS = ["smallnet", "caffenet", "googlenet", "vgg16"]
WITH_OUTPUTS = ["smallnet", "caffenet"]


@pytest.mark.parametrize("model", MODELS)
def test_layer_list_matches_caffe_manifest(shared_reference, model):
    manifest = json.loads((shared_reference / "models" / model / "manifest.json").read_text())
    net = caffelrp.Net(shared_reference / "models" / model / "deploy.prototxt")
    assert len(net.layers) == len(manifest["layers"])
    for index, expected in enumerate(manifest["layers"]):
        assert expected["index"] == index
        assert net.layers[index] == (expected["name"], expected["type"])
        assert net.layer_bottoms(index) == expected["bottoms"], expected["name"]
        assert net.layer_tops(index) == expected["tops"], expected["name"]
        top_shapes = [list(s) for s in net.layer(index).top_shapes]
        assert top_shapes == expected["top_shapes"], expected["name"]
        param_shapes = [list(b.shape) for b in net.layer(index).blobs]
        assert param_shapes == expected["blobs"], expected["name"]


def relative_error(actual, expected):
    return np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("model", WITH_OUTPUTS)
def test_forward_reproduces_original_logits_and_probabilities(shared_reference,
                                                              reference_weights, model):
    net = caffelrp.Net(shared_reference / "models" / model / "deploy.prototxt",
                       reference_weights(model))
    injection = {"smallnet": "ip2", "caffenet": "fc8"}[model]
    folder = shared_reference / "expected" / model
    images = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert images, "no reference images for %s" % model
    for image in images:
        x = np.load(folder / image / "input.npy")[None]
        out = net.forward(x)
        logits = np.load(folder / image / "logits.npy")
        # float32 GEMMs in a different summation order: agreement to ~1e-6 relative is expected;
        # the bound is 1e-4 of the largest magnitude.
        assert relative_error(net.blobs[injection][0], logits) <= 1e-4, image
        prob = np.load(folder / image / "prob.npy")
        assert np.abs(out["prob"][0] - prob).max() <= 1e-4, image


@pytest.mark.slow
@pytest.mark.large_reference
def test_batch_of_two_equals_two_single_runs(shared_reference, reference_weights):
    net = caffelrp.Net(shared_reference / "models" / "caffenet" / "deploy.prototxt",
                       reference_weights("caffenet"))
    folder = shared_reference / "expected" / "caffenet"
    xs = np.stack([np.load(folder / name / "input.npy") for name in ("scooter10", "volcano2")])
    batch = net.forward(xs)["prob"].copy()
    batch_fc8 = net.blobs["fc8"].copy()
    for i in range(2):
        net.forward(xs[i:i + 1])
        assert relative_error(net.blobs["fc8"][0], batch_fc8[i].astype(np.float64)) <= 1e-5
    assert batch.shape == (2, 1000)
