"""Regenerate the Python bindings of proto/caffe.proto.

    python proto/generate.py            # rewrites caffelrp/proto/caffe_pb2.py

The bindings are committed so that caffelrp needs no protoc at install time; the test
tests/test_proto_sync.py calls `generate_bindings` into a temporary directory and checks that
the committed file is byte-identical, so the two cannot drift apart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_FILE = REPO_ROOT / "proto" / "caffe.proto"
BINDINGS_DIR = REPO_ROOT / "caffelrp" / "proto"


def generate_bindings(out_dir: Path | str = BINDINGS_DIR) -> Path:
    """Run protoc (grpcio-tools) on caffe.proto; return the path of the caffe_pb2.py written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Relative paths from the repository root keep the embedded "source: caffe.proto" the same
    # on every machine, so the output is reproducible byte for byte.
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-Iproto", f"--python_out={out_dir.resolve()}", "proto/caffe.proto",
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"protoc failed (exit {completed.returncode}) on {PROTO_FILE}:\n{completed.stderr}"
        )
    return out_dir / "caffe_pb2.py"


if __name__ == "__main__":
    print(f"wrote {generate_bindings()}")
