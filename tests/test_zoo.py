"""``python -m caffelrp fetch`` against a local HTTP server (127.0.0.1 only) serving generated
files, and the checksum check of --weights under a named --model."""
import hashlib
import http.server
import io
import json
import os
import stat
import tarfile
import threading

import numpy as np
import pytest

from caffelrp import bundled, cli, files, zoo
from caffelrp.io.caffemodel import blobproto_bytes


class Server:
    """A threaded http.server with Range support. ``cut_after[name] = n`` sends the full
    Content-Length but closes the connection after n bytes (a cut transfer), once."""

    def __init__(self, files):
        self.files, self.cut_after, self.requests = files, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data, start = outer.files[name], 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", "bytes */%d" % len(data))
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d"
                                     % (start, len(data) - 1, len(data)))
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = outer.cut_after.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/zoo" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def aux_archive():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("imagenet_mean.binaryproto",
                            blobproto_bytes(np.full((1, 3, 4, 4), 100, np.float32), legacy=True)),
                           ("synset_words.txt", b"n0 a\nn1 b\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WEIGHTS = np.random.default_rng(0).integers(0, 256, 3 * zoo.CHUNK + 12345, np.uint8).tobytes()
OTHER = b"other weights" * 1000


@pytest.fixture
def served(tmp_path, monkeypatch):
    """caffenet's and alexnet's entries pointed at generated files with their own sha1."""
    monkeypatch.setenv("CAFFELRP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(zoo.MIRROR_ENV, raising=False)
    table = dict(bundled.BUNDLED)
    for name, data in (("caffenet", WEIGHTS), ("alexnet", OTHER)):
        folder, filename, url, _ = table[name]
        table[name] = (folder, filename, url, "sha1 " + hashlib.sha1(data).hexdigest())
    monkeypatch.setattr(bundled, "BUNDLED", table)
    monkeypatch.setattr(zoo, "BUNDLED", table)
    monkeypatch.setattr(files, "_DIGESTS", {})
    monkeypatch.setattr(files, "LEDGER_MIN_BYTES", 0)     # the served files are small
    server = Server({"bvlc_reference_caffenet.caffemodel": WEIGHTS,
                     "bvlc_alexnet.caffemodel": OTHER, "caffe_ilsvrc12.tar.gz": aux_archive()})
    yield server
    server.stop()


def fetch(*argv):
    return cli.main(["fetch", *argv])


def test_download_verifies_and_is_found_by_name(served, tmp_path, capsys):
    assert fetch("caffenet", "--mirror", served.url) == 0
    path = tmp_path / "home" / "models" / "bvlc_reference_caffenet.caffemodel"
    assert path.read_bytes() == WEIGHTS
    assert not path.with_name(path.name + ".part").exists()
    assert (tmp_path / "home/imagenet/synset_words.txt").read_text() == "n0 a\nn1 b\n"
    assert (tmp_path / "home/imagenet/imagenet_mean.binaryproto").is_file()
    assert not (tmp_path / "home/imagenet/caffe_ilsvrc12.tar.gz").exists()
    assert "sha1 verified" in capsys.readouterr().out
    assert cli.resolve_model("caffenet", None)[1] == path
    # a second fetch downloads nothing
    served.requests.clear()
    assert fetch("caffenet", "--mirror", served.url) == 0
    assert served.requests == []


def test_mirror_from_the_environment(served, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.MIRROR_ENV, served.url)
    assert fetch("alexnet", "--no-aux") == 0
    assert (tmp_path / "home/models/bvlc_alexnet.caffemodel").read_bytes() == OTHER


def test_cut_transfer_resumes_with_a_range_request(served, tmp_path, capsys):
    cut = zoo.CHUNK + 777
    served.cut_after["bvlc_reference_caffenet.caffemodel"] = cut
    assert fetch("caffenet", "--no-aux", "--mirror", served.url) == 1
    assert "resume" in capsys.readouterr().err
    home = tmp_path / "home" / "models"
    assert not (home / "bvlc_reference_caffenet.caffemodel").exists()
    assert (home / "bvlc_reference_caffenet.caffemodel.part").stat().st_size == cut
    served.requests.clear()
    assert fetch("caffenet", "--no-aux", "--mirror", served.url) == 0
    assert served.requests == [("bvlc_reference_caffenet.caffemodel", "bytes=%d-" % cut)]
    assert (home / "bvlc_reference_caffenet.caffemodel").read_bytes() == WEIGHTS


def test_checksum_mismatch_deletes_the_file_and_names_both_sums(served, tmp_path, capsys):
    served.files["bvlc_reference_caffenet.caffemodel"] = WEIGHTS[:-1] + b"x"
    assert fetch("caffenet", "--no-aux", "--mirror", served.url) == 1
    err = capsys.readouterr().err
    expected = hashlib.sha1(WEIGHTS).hexdigest()
    found = hashlib.sha1(WEIGHTS[:-1] + b"x").hexdigest()
    assert "expected %s, found %s" % (expected, found) in err
    assert os.listdir(tmp_path / "home" / "models") == []


def test_server_down_is_a_clear_error(served, tmp_path, capsys):
    url = served.url
    served.stop()
    assert fetch("caffenet", "--no-aux", "--mirror", url) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cannot download" in err and "Connection refused" in err
    served.stop = lambda: None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_is_a_clear_error(served, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert fetch("caffenet", "--no-aux", "--mirror", served.url) == 1
    finally:
        home.chmod(stat.S_IRWXU)
    err = capsys.readouterr().err
    assert "cannot write to the cache folder" in err and "CAFFELRP_HOME" in err


def test_read_only_cache_as_root_too(served, tmp_path, capsys, monkeypatch):
    """The cache's parent is a regular file: no user, root included, can create the cache."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CAFFELRP_HOME", str(tmp_path / "file" / "home"))
    assert fetch("caffenet", "--no-aux", "--mirror", served.url) == 1
    err = capsys.readouterr().err
    assert "cannot write to the cache folder" in err and "CAFFELRP_HOME" in err


def test_weights_of_another_model_are_refused_naming_both(served, tmp_path, capsys):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(WEIGHTS)
    assert cli.resolve_model("caffenet", str(weights))[1] == str(weights)
    with pytest.raises(zoo.WeightsMismatchError) as e:
        cli.resolve_model("alexnet", str(weights))
    message = str(e.value)
    assert "published caffenet weights" in message and "--model alexnet" in message
    assert hashlib.sha1(WEIGHTS).hexdigest() in message
    assert hashlib.sha1(OTHER).hexdigest() in message
    assert cli.resolve_model("alexnet", str(weights), verify=False)[1] == str(weights)


def test_weights_hash_is_remembered_per_path_size_and_mtime(served, tmp_path, monkeypatch):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(OTHER)
    assert zoo.file_sha1(weights) == hashlib.sha1(OTHER).hexdigest()
    ledger = json.loads((tmp_path / "home" / "digests.json").read_text())
    assert ledger[str(weights)]["sha1"] == hashlib.sha1(OTHER).hexdigest()
    # a new process (empty memory) reads the ledger instead of the file
    monkeypatch.setattr(files, "_DIGESTS", {})
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(str(p))
                        or real_open(p, *a, **k))
    zoo.file_sha1(weights)
    assert str(weights) not in opened
    monkeypatch.setattr("builtins.open", real_open)
    # a changed file is hashed again
    weights.write_bytes(WEIGHTS)
    assert zoo.file_sha1(weights) == hashlib.sha1(WEIGHTS).hexdigest()


def test_imagenet_class_names_are_bundled():
    names = bundled.class_names("caffenet")
    assert len(names) == 1000 and names[281] == "tabby, tabby cat"
    assert names[0] == "tench, Tinca tinca"
    assert bundled.class_names("vgg16") == names
    assert bundled.class_names("smallnet")[8] == "white moon"
    assert bundled.class_names("some/deploy.prototxt") is None


def test_classify_says_the_class_name():
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "caffelrp", "classify",
                             str(repo / "models/smallnet/example.png"), "--model", "smallnet",
                             "--top", "1", "--json"], capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr
    top = json.loads(result.stdout)[0]["top"][0]
    names = (repo / "models/smallnet/synset10.txt").read_text().splitlines()
    assert top["name"] == names[top["class"]].split(" ", 1)[1]


def test_named_imagenet_models_fall_back_to_the_bundled_names():
    from caffelrp import cli
    names = cli.class_names(bundled.bundled_prototxt("caffenet"), None, "caffenet")
    assert len(names) == 1000 and names[281] == bundled.class_names("caffenet")[281]
    assert "tabby" in names[281]


def test_sidecar_names_the_explained_classes(tmp_path):
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    assert cli.main(["explain", str(repo / "models/smallnet/example.png"), "--model", "smallnet",
                     "--class", "2,8", "--out", str(tmp_path), "--quiet"]) == 0
    sidecar = json.loads((tmp_path / "example.json").read_text())
    names = bundled.class_names("smallnet")
    assert sidecar["class_names"] == {"2": names[2], "8": names[8]}
    assert names[2] == "blue triangle"
