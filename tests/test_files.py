"""caffelrp.files: the digest of a file, once per file identity, large files across runs."""
import hashlib
import json
import os

import pytest

from caffelrp import files


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder and an empty memory (as in a new process); 'large' from 1 KiB."""
    monkeypatch.setenv("CAFFELRP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(files, "_DIGESTS", {})
    monkeypatch.setattr(files, "LEDGER_MIN_BYTES", 1024)
    return tmp_path / "home"


def _new_process(monkeypatch):
    monkeypatch.setattr(files, "_DIGESTS", {})


def _count_reads(monkeypatch, path):
    """Calls of open() on ``path`` from now on (file_digest reads files with open())."""
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (reads.append(1) if os.fspath(p)
                                                              == str(path) else None)
                        or real_open(p, *a, **k))
    return reads


def test_a_large_file_is_hashed_once_across_runs(cache, tmp_path, monkeypatch):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"x" * 4096)
    assert files.file_sha256(weights) == hashlib.sha256(b"x" * 4096).hexdigest()
    ledger = json.loads((cache / "digests.json").read_text())
    assert ledger[str(weights)]["sha256"] == hashlib.sha256(b"x" * 4096).hexdigest()
    _new_process(monkeypatch)
    reads = _count_reads(monkeypatch, weights)
    assert files.file_sha256(weights) == hashlib.sha256(b"x" * 4096).hexdigest()
    assert reads == []                     # the ledger answered: a stat, no read


def test_a_small_file_is_not_in_the_ledger(cache, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"small")
    assert files.file_sha256(image) == hashlib.sha256(b"small").hexdigest()
    assert not (cache / "digests.json").exists()


def test_a_replaced_file_of_the_same_size_is_hashed_again(cache, tmp_path, monkeypatch):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"a" * 2048)
    stat = weights.stat()
    files.file_sha256(weights)
    _new_process(monkeypatch)
    # same size and, forced, the same mtime: a rename puts a new inode under the path
    files.write_atomically(weights, b"b" * 2048)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files.file_sha256(weights) == hashlib.sha256(b"b" * 2048).hexdigest()


def test_sha1_and_sha256_share_one_entry(cache, tmp_path):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"z" * 2048)
    files.file_digest(weights, "sha1")
    files.file_sha256(weights)
    entry = json.loads((cache / "digests.json").read_text())[str(weights)]
    assert entry["sha1"] == hashlib.sha1(b"z" * 2048).hexdigest()
    assert entry["sha256"] == hashlib.sha256(b"z" * 2048).hexdigest()


def test_the_ledger_keeps_the_most_recent_entries(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "LEDGER_ENTRIES", 3)
    paths = []
    for i in range(5):
        paths.append(tmp_path / ("w%d" % i))
        paths[-1].write_bytes(bytes([i]) * 2048)
        files.file_sha256(paths[-1])
    assert list(json.loads((cache / "digests.json").read_text())) == [str(p) for p in paths[2:]]


def test_an_unwritable_cache_only_costs_the_hash(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CAFFELRP_HOME", str(blocker / "home"))
    monkeypatch.setattr(files, "_DIGESTS", {})
    monkeypatch.setattr(files, "LEDGER_MIN_BYTES", 1024)
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"q" * 2048)
    assert files.file_sha256(weights) == hashlib.sha256(b"q" * 2048).hexdigest()


def test_a_corrupt_ledger_is_ignored_and_rewritten(cache, tmp_path):
    cache.mkdir(parents=True)
    (cache / "digests.json").write_text("{not json")
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"c" * 2048)
    assert files.file_sha256(weights) == hashlib.sha256(b"c" * 2048).hexdigest()
    assert str(weights) in json.loads((cache / "digests.json").read_text())
