"""The bundled model definitions (``models/`` in the source tree, ``caffelrp/models`` when installed)."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent

# Short names a user may type, and the published weights the definitions fit (shared/spec/model-zoo.md).
BUNDLED = {
    "caffenet": ("bvlc_reference_caffenet", "bvlc_reference_caffenet.caffemodel",
                 "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                 "sha1 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
    "alexnet": ("bvlc_alexnet", "bvlc_alexnet.caffemodel",
                "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                "sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377"),
    "googlenet": ("bvlc_googlenet", "bvlc_googlenet.caffemodel",
                  "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
                  "sha1 405fc5acd08a3bb12de8ee5e23a96bec22f08204"),
    "vgg16": ("vgg16", "VGG_ILSVRC_16_layers.caffemodel",
              "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
              "VGG_ILSVRC_16_layers.caffemodel", "checksum not published"),
    "smallnet": ("smallnet", "smallnet.caffemodel", None, "bundled"),
}


def models_dir():
    """Where the bundled models are: inside the installed package, or the source tree's models/."""
    for candidate in (_PACKAGE / "models", _PACKAGE.parent / "models"):
        if (candidate / "smallnet" / "deploy.prototxt").is_file():
            return candidate
    raise FileNotFoundError("the bundled models are missing from this installation of caffelrp")


def bundled_prototxt(name):
    return models_dir() / BUNDLED[name][0] / "deploy.prototxt"


def bundled_weights(name):
    """Path of the bundled weights, or None where the user must supply the published file."""
    path = models_dir() / BUNDLED[name][0] / BUNDLED[name][1]
    return path if path.is_file() else None


def where_to_get_weights(name):
    folder, filename, url, checksum = BUNDLED[name]
    return ("%s is published at %s (%s); `python -m caffelrp fetch %s` downloads and verifies "
            "it" % (filename, url, checksum, name))


# The 1000 ILSVRC-2012 classes in Caffe's order (synset_words.txt: "wnid name, synonyms").
IMAGENET_MODELS = ("caffenet", "alexnet", "googlenet", "vgg16")
_CLASS_FILES = {"smallnet": ("smallnet", "synset10.txt")}
_CLASS_FILES.update({name: ("imagenet", "synset_words.txt") for name in IMAGENET_MODELS})


def class_names(model):
    """The class names of a bundled model (index -> "tabby, tabby cat"), or None for a model
    given as a prototxt path."""
    if model not in _CLASS_FILES:
        return None
    folder, filename = _CLASS_FILES[model]
    lines = (models_dir() / folder / filename).read_text(encoding="utf-8").splitlines()
    return [line.split(" ", 1)[1] if " " in line else line for line in lines]
