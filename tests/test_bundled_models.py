"""The model definitions bundled in models/: they parse, they match the layer lists Caffe itself
wrote for the same architectures (shared/reference/models/*/manifest.json), and an independent
runtime (OpenCV's Caffe importer) runs them to the expected shapes.

Nothing here uses caffelrp's own network code, so a fault in a bundled file cannot hide behind the
same fault in caffelrp.
"""
import hashlib
import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from caffelrp.proto import caffe_pb2

MODELS = Path(__file__).resolve().parents[1] / "models"

# model -> directory under models/, reference manifest (None: no reference), declared input shape,
# number of classes
BUNDLED = {
    "caffenet": ("bvlc_reference_caffenet", "caffenet", (10, 3, 227, 227), 1000),
    "alexnet": ("bvlc_alexnet", None, (10, 3, 227, 227), 1000),
    "googlenet": ("bvlc_googlenet", "googlenet", (10, 3, 224, 224), 1000),
    "vgg16": ("vgg16", "vgg16", (10, 3, 224, 224), 1000),
    "smallnet": ("smallnet", "smallnet", (1, 3, 64, 64), 10),
    "resnet_tiny": ("resnet_tiny", None, (1, 3, 32, 32), 10),
}
WITH_MANIFEST = [m for m, entry in BUNDLED.items() if entry[1]]
V1_SYNTAX = {"vgg16"}  # written in the old `layers { type: ENUM }` form, as the published file is

SMALLNET_SHA256 = "30be9663d49b4156f7ac161925c0197d88a1b94b802dae93254ea0ddd33086c9"

# V1 enum -> current type string, for the enums the bundled V1 file uses (spec caffe-format.md §1.6)
V1_TYPES = {"CONVOLUTION": "Convolution", "RELU": "ReLU", "POOLING": "Pooling",
            "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax"}

# Parameter blob shapes of the nets without a reference manifest, derived by hand from their
# prototxts. AlexNet at 227: conv1 55 -> pool1 27 -> pool2 13 -> pool5 6, so fc6 sees 256*6*6;
# conv2/4/5 have group 2, halving their input channels.
ALEXNET_PARAMS = [
    ("conv1", "Convolution", [(96, 3, 11, 11), (96,)]),
    ("conv2", "Convolution", [(256, 48, 5, 5), (256,)]),
    ("conv3", "Convolution", [(384, 256, 3, 3), (384,)]),
    ("conv4", "Convolution", [(384, 192, 3, 3), (384,)]),
    ("conv5", "Convolution", [(256, 192, 3, 3), (256,)]),
    ("fc6", "InnerProduct", [(4096, 256 * 6 * 6), (4096,)]),
    ("fc7", "InnerProduct", [(4096, 4096), (4096,)]),
    ("fc8", "InnerProduct", [(1000, 4096), (1000,)]),
]


def _bn_scale(suffix, channels):
    # BatchNorm: mean, variance, moving-average factor; Scale with bias_term: gamma, beta
    return [("bn" + suffix, "BatchNorm", [(channels,), (channels,), (1,)]),
            ("scale" + suffix, "Scale", [(channels,), (channels,)])]


RESNET_TINY_PARAMS = (
    [("conv1", "Convolution", [(8, 3, 3, 3)])] + _bn_scale("_conv1", 8)
    + [("res2a_branch2a", "Convolution", [(8, 8, 3, 3)])] + _bn_scale("2a_branch2a", 8)
    + [("res2a_branch2b", "Convolution", [(8, 8, 3, 3)])] + _bn_scale("2a_branch2b", 8)
    + [("res3a_branch1", "Convolution", [(16, 8, 1, 1)])] + _bn_scale("3a_branch1", 16)
    + [("res3a_branch2a", "Convolution", [(16, 8, 3, 3)])] + _bn_scale("3a_branch2a", 16)
    + [("res3a_branch2b", "Convolution", [(16, 16, 3, 3)])] + _bn_scale("3a_branch2b", 16)
    + [("fc10", "InnerProduct", [(10, 16), (10,)])]
)

# Output shapes (batch 1) of the layers that write a new blob, derived by hand like the above.
HAND_TOP_SHAPES = {
    "alexnet": {
        "conv1": (1, 96, 55, 55), "norm1": (1, 96, 55, 55), "pool1": (1, 96, 27, 27),
        "conv2": (1, 256, 27, 27), "norm2": (1, 256, 27, 27), "pool2": (1, 256, 13, 13),
        "conv3": (1, 384, 13, 13), "conv4": (1, 384, 13, 13), "conv5": (1, 256, 13, 13),
        "pool5": (1, 256, 6, 6), "fc6": (1, 4096), "fc7": (1, 4096), "fc8": (1, 1000),
        "prob": (1, 1000),
    },
    "resnet_tiny": {
        "conv1": (1, 8, 32, 32), "res2a_branch2a": (1, 8, 32, 32), "res2a_branch2b": (1, 8, 32, 32),
        "res2a": (1, 8, 32, 32), "res3a_branch1": (1, 16, 16, 16),
        "res3a_branch2a": (1, 16, 16, 16), "res3a_branch2b": (1, 16, 16, 16),
        "res3a": (1, 16, 16, 16), "pool": (1, 16, 1, 1), "fc10": (1, 10), "prob": (1, 10),
    },
}
HAND_PARAMS = {"alexnet": ALEXNET_PARAMS, "resnet_tiny": RESNET_TINY_PARAMS}


# ------------------------------------------------------------------ helpers

def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_smallnet = _load_script("make_smallnet")


def prototxt_path(model):
    return MODELS / BUNDLED[model][0] / "deploy.prototxt"


def parse_prototxt(model):
    net = caffe_pb2.NetParameter()
    text_format.Parse(prototxt_path(model).read_text(), net)
    return net


def layer_records(net):
    """(name, type, bottoms, tops) per layer, with V1 enum types given their current names."""
    if net.layers:
        enum_name = caffe_pb2.V1LayerParameter.LayerType.Name
        return [(l.name, V1_TYPES[enum_name(l.type)], list(l.bottom), list(l.top))
                for l in net.layers]
    return [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer]


def declared_input_shape(net):
    if net.input_shape:
        return tuple(net.input_shape[0].dim)
    if net.input_dim:
        return tuple(net.input_dim)
    inputs = [l for l in net.layer if l.type == "Input"]
    return tuple(inputs[0].input_param.shape[0].dim)


def load_manifest(shared_reference, model):
    path = shared_reference / "models" / BUNDLED[model][1] / "manifest.json"
    return json.loads(path.read_text())


def manifest_records(manifest):
    """The manifest's layers as the prototxt must spell them: without the Split layers Caffe
    inserts, and with every split top renamed back to the blob it copies."""
    source = {}
    records = []
    for layer in manifest["layers"]:
        if layer["type"] == "Split":
            source.update((top, layer["bottoms"][0]) for top in layer["tops"])
        else:
            bottoms = [source.get(b, b) for b in layer["bottoms"]]
            records.append((layer["name"], layer["type"], bottoms, layer["tops"]))
    return records


def param_layers(model, request):
    if model in HAND_PARAMS:
        return HAND_PARAMS[model]
    manifest = load_manifest(request.getfixturevalue("shared_reference"), model)
    return [(l["name"], l["type"], [tuple(s) for s in l["blobs"]])
            for l in manifest["layers"] if l["blobs"]]


def expected_top_shapes(model, request):
    if model in HAND_TOP_SHAPES:
        return HAND_TOP_SHAPES[model]
    manifest = load_manifest(request.getfixturevalue("shared_reference"), model)
    # in-place layers (ReLU, Dropout, ...) re-write their bottom; OpenCV fuses them away
    return {l["name"]: tuple(l["top_shapes"][0]) for l in manifest["layers"]
            if l["type"] != "Split" and l["tops"][0] not in l["bottoms"]}


def blob_shapes(model, request):
    """Shape (batch 1) of every named blob, from the manifest or the hand-derived table (whose
    layers are named like the blobs they write)."""
    if model in HAND_TOP_SHAPES:
        return {"data": (1,) + BUNDLED[model][2][1:], **HAND_TOP_SHAPES[model]}
    manifest = load_manifest(request.getfixturevalue("shared_reference"), model)
    shapes = {"data": tuple(manifest["input_shape"])}
    for layer in manifest["layers"]:
        shapes.update(zip(layer["tops"], map(tuple, layer["top_shapes"])))
    return shapes


def derived_param_shapes(net, shapes):
    """The parameter blob shapes Caffe gives each layer of `net`, computed from the layer's own
    parameters (num_output, kernel, group, bias_term) and the shape of its input blob."""
    messages = list(net.layers) if net.layers else list(net.layer)
    derived = []
    for (name, kind, bottoms, _), message in zip(layer_records(net), messages):
        bottom = shapes[bottoms[0]] if bottoms else None
        if kind == "Convolution":
            p = message.convolution_param
            k = p.kernel_size[0]  # every bundled kernel is square
            bias = [(p.num_output,)] if p.bias_term else []
            blobs = [(p.num_output, bottom[1] // p.group, k, k)] + bias
        elif kind == "InnerProduct":
            p = message.inner_product_param
            bias = [(p.num_output,)] if p.bias_term else []
            blobs = [(p.num_output, math.prod(bottom[1:]))] + bias
        elif kind == "BatchNorm":
            blobs = [(bottom[1],), (bottom[1],), (1,)]
        elif kind == "Scale":
            blobs = [(bottom[1],)] + ([(bottom[1],)] if message.scale_param.bias_term else [])
        else:
            continue
        derived.append((name, kind, blobs))
    return derived


def random_blobs(kind, shapes, rng):
    if kind == "BatchNorm":
        # the variance must be positive; factor 1 means the statistics are stored unscaled
        channels = shapes[0][0]
        return [rng.standard_normal(channels, dtype=np.float32),
                rng.uniform(0.5, 1.5, channels).astype(np.float32), np.ones(1, np.float32)]
    blobs = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    # He scaling keeps activations finite through 16 layers; biases stay small
    blobs[0] *= np.float32(math.sqrt(2.0 / math.prod(shapes[0][1:])))
    for b in blobs[1:]:
        b *= np.float32(0.01)
    return blobs


@pytest.fixture(scope="module")
def caffemodel_for(tmp_path_factory):
    """Path of a weight file for a bundled model: smallnet's own, else random weights of the right
    shapes written once per test module (VGG-16's is 550 MB)."""
    written = {}

    def get(model, request):
        if model == "smallnet":
            return MODELS / "smallnet" / "smallnet.caffemodel"
        if model not in written:
            rng = np.random.default_rng(0)
            layers = [(name, kind, random_blobs(kind, shapes, rng))
                      for name, kind, shapes in param_layers(model, request)]
            path = tmp_path_factory.mktemp(model) / "random.caffemodel"
            make_smallnet.write_caffemodel(path, model, layers)
            written[model] = path
        return written[model]

    return get


def opencv_net(model, request, caffemodel_for):
    net = cv2.dnn.readNetFromCaffe(str(prototxt_path(model)), str(caffemodel_for(model, request)))
    shape = (1,) + BUNDLED[model][2][1:]
    net.setInput(np.random.default_rng(1).uniform(-120, 130, shape).astype(np.float32))
    return net


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------ prototxt structure

@pytest.mark.parametrize("model", BUNDLED)
def test_prototxt_parses_with_caffe_schema(model):
    # text_format rejects unknown fields and enum values, as Caffe does
    net = parse_prototxt(model)
    assert layer_records(net)


@pytest.mark.parametrize("model", BUNDLED)
def test_prototxt_parses_with_opencv(model):
    net = cv2.dnn.readNetFromCaffe(str(prototxt_path(model)))
    assert net.getUnconnectedOutLayersNames() == ("prob",)


@pytest.mark.parametrize("model", BUNDLED)
def test_prototxt_is_written_in_its_format_generation(model):
    net = parse_prototxt(model)
    if model in V1_SYNTAX:
        assert len(net.layers) > 0 and len(net.layer) == 0
        assert len(net.input_dim) == 4  # the published VGG file declares its input this way
    else:
        assert len(net.layer) > 0 and len(net.layers) == 0


@pytest.mark.parametrize("model", BUNDLED)
def test_declared_input_shape(model):
    assert declared_input_shape(parse_prototxt(model)) == BUNDLED[model][2]


@pytest.mark.parametrize("model", WITH_MANIFEST)
def test_input_geometry_matches_manifest(model, shared_reference):
    # the manifests were written at batch 1; only channels and size must agree
    manifest = load_manifest(shared_reference, model)
    assert declared_input_shape(parse_prototxt(model))[1:] == tuple(manifest["input_shape"][1:])


@pytest.mark.parametrize("model", WITH_MANIFEST)
def test_layers_match_manifest(model, shared_reference):
    # same names, types, bottoms and tops in the same order: Caffe's layer indices, the in-place
    # blobs and the name matching of published weights all follow from this
    expected = manifest_records(load_manifest(shared_reference, model))
    assert layer_records(parse_prototxt(model)) == expected


@pytest.mark.parametrize("model", BUNDLED)
def test_parameter_shapes_follow_from_prototxt(model, request):
    # OpenCV infers group and bias from the weight file, so the forward tests below cannot see a
    # missing `group: 2` or `bias_term: false`; this derives the shapes Caffe would demand instead
    derived = derived_param_shapes(parse_prototxt(model), blob_shapes(model, request))
    assert derived == param_layers(model, request)


def test_googlenet_prototxt_is_what_its_generator_writes():
    generated = _load_script("make_googlenet").deploy_text()
    assert prototxt_path("googlenet").read_text() == generated


# ------------------------------------------------------------------ running with OpenCV

@pytest.mark.parametrize("model", BUNDLED)
def test_layer_output_shapes(model, request, caffemodel_for):
    # shapes depend on every kernel, stride, pad and num_output (and Caffe's ceil pooling), so
    # this checks the layer parameters, which the manifests record only through their effects
    expected = expected_top_shapes(model, request)
    net = opencv_net(model, request, caffemodel_for)
    names = list(expected)
    got = {name: out.shape for name, out in zip(names, net.forward(names))}
    assert got == expected


@pytest.mark.parametrize("model", BUNDLED)
def test_forward_gives_one_probability_row(model, request, caffemodel_for):
    prob = opencv_net(model, request, caffemodel_for).forward()
    assert prob.shape == (1, BUNDLED[model][3])
    assert np.isfinite(prob).all()


# ------------------------------------------------------------------ bundled smallnet files

def test_smallnet_caffemodel_has_reference_checksum():
    assert sha256(MODELS / "smallnet" / "smallnet.caffemodel") == SMALLNET_SHA256


def test_make_smallnet_reproduces_bundled_caffemodel(tmp_path):
    make_smallnet.write_all(tmp_path, seed=1)
    assert sha256(tmp_path / "smallnet.caffemodel") == SMALLNET_SHA256


def test_smallnet_synset_names_ten_classes():
    lines = (MODELS / "smallnet" / "synset10.txt").read_text().splitlines()
    assert len(lines) == 10 and all(line.strip() for line in lines)


def test_smallnet_example_is_a_96x72_rgb_picture():
    from PIL import Image

    with Image.open(MODELS / "smallnet" / "example.png") as image:
        assert (image.size, image.mode) == ((96, 72), "RGB")
