"""The reference models' seeded weights, made with the project's own code.

The rule is the public reference's (shared/reference/README.md, "Regenerating the weights"),
implemented in models/make_smallnet.py; with seed 1 it gives the weights the original's outputs
were computed with (for smallnet byte for byte the reference file, a test checks its sha256)."""
import importlib.util
from pathlib import Path

_MAKE = Path(__file__).resolve().parents[1] / "models" / "make_smallnet.py"
_spec = importlib.util.spec_from_file_location("make_smallnet", _MAKE)
make_smallnet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_smallnet)


def net_param_bytes(manifest, seed):
    """A .caffemodel (NetParameter bytes) with the seeded weights of every layer in a reference
    manifest ({"name", "layers": [{"name", "type", "blobs": [shape, ...]}, ...]})."""
    layers = [(layer["name"], layer["type"],
               [make_smallnet.reference_blob(seed, layer["name"], j, shape)
                for j, shape in enumerate(layer["blobs"])])
              for layer in manifest["layers"]]
    return b"".join(bytes(c) for c in make_smallnet.net_chunks(manifest.get("name", ""), layers))
