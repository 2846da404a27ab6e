"""Output files and file identities: the one atomic writer, the cache folder and the one file hash
of caffelrp.

``write_atomically`` writes through a temporary file in the target's folder and renames it, so an
interrupted run never leaves a complete-looking partial file; the result gets the mode a plain
``open()`` would give (0666 minus the umask: 0644 under umask 022), not the 0600 of ``mkstemp``.
The temporary name is short and fixed in length (``.caffelrp-XXXXXXXX.tmp``), so any file name
the file system accepts can be written, also a 255-byte one.

``file_digest`` hashes a file once per identity (path, size, mtime, inode); the digests of large
files (weights) are kept in ``<cache>/digests.json`` across runs.

``json_bytes`` is the one JSON writer: strict JSON, never the bare ``NaN`` / ``Infinity`` tokens
Python's ``json`` writes by default and other parsers refuse.
"""
import hashlib
import json
import math
import os
import secrets
import threading
from pathlib import Path

from .errors import NonFiniteError

_UMASK_LOCK = threading.Lock()
_DIGESTS = {}


def _umask():
    # os.umask can only be read by setting it; do it once per process, under a lock
    global _CURRENT_UMASK
    try:
        return _CURRENT_UMASK
    except NameError:
        with _UMASK_LOCK:
            mask = os.umask(0o022)
            os.umask(mask)
            _CURRENT_UMASK = mask
        return mask


def _temporary(directory):
    """Open a new temporary file in ``directory``: (fd, path)."""
    for _ in range(100):
        path = os.path.join(directory, ".caffelrp-%s.tmp" % secrets.token_hex(4))
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError("%s: cannot create a temporary file" % directory)


def write_atomically(path, data):
    """Write bytes to ``path`` through a temporary file and a rename: never a half-written file.
    The file's mode is 0666 minus the umask."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _temporary(directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:   # also KeyboardInterrupt: no temporary file is left behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_orphaned_temporaries(folder, since):
    """Temporary files of the atomic writer that a killed worker left in ``folder`` during this
    run (every task has finished, so none is still being written by this run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in list(folder.glob(".tmp-*")) + list(folder.glob(".caffelrp-*.tmp")):
        try:
            if path.stat().st_mtime >= since - 1:
                path.unlink()
        except OSError:
            pass


def cache_dir():
    """caffelrp's cache folder: ``$CAFFELRP_HOME``, else ``$XDG_CACHE_HOME/caffelrp``, else
    ``~/.cache/caffelrp`` (fetched weights, the digest ledger)."""
    home = os.environ.get("CAFFELRP_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "caffelrp"


# Files this large have their digests kept across runs: hashing VGG-16's 553 MB costs ~0.8 s,
# a stat costs microseconds; small files (images, prototxts) are cheaper to hash than to look up.
LEDGER_MIN_BYTES = 16 << 20
LEDGER_ENTRIES = 256      # most recently hashed files kept; an evicted one is only hashed again


def _ledger_path():
    return cache_dir() / "digests.json"


def _identity(st):
    # size and modification time, and the inode: a file replaced by a rename within the clock's
    # granularity keeps size and mtime but not the inode
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _read_ledger():
    try:
        ledger = json.loads(_ledger_path().read_text())
    except (OSError, ValueError):
        return {}
    return ledger if isinstance(ledger, dict) else {}


def _remember(path, identity, algorithm, digest):
    """Add a digest to the ledger (read again just before the write, so entries other processes
    added meanwhile are kept; two writers at once lose at most one entry, hashed again later)."""
    ledger = _read_ledger()
    entry = ledger.pop(path, None)
    if not (isinstance(entry, dict) and entry.get("file") == identity):
        entry = {"file": identity}
    entry[algorithm] = digest
    ledger[path] = entry                       # last: the most recent entry
    for stale in list(ledger)[:-LEDGER_ENTRIES]:
        del ledger[stale]
    try:   # a read-only or missing cache only costs the hash again next run
        _ledger_path().parent.mkdir(parents=True, exist_ok=True)
        write_atomically(_ledger_path(), json.dumps(ledger, indent=0).encode())
    except OSError:
        pass


def file_digest(path, algorithm="sha256"):
    """Hex digest (``hashlib`` algorithm name) of a file's content, computed once per file
    identity (path, size, modification time, inode): remembered in memory, and for files of at
    least ``LEDGER_MIN_BYTES`` in the cache's ``digests.json``, so a later run checks a large
    weights file with a stat instead of reading it."""
    path = os.path.abspath(os.fspath(path))
    identity = _identity(os.stat(path))
    key = (path, tuple(identity), algorithm)
    if key in _DIGESTS:
        return _DIGESTS[key]
    large = identity[0] >= LEDGER_MIN_BYTES
    if large:
        entry = _read_ledger().get(path)
        if isinstance(entry, dict) and entry.get("file") == identity \
                and isinstance(entry.get(algorithm), str):
            _DIGESTS[key] = entry[algorithm]
            return _DIGESTS[key]
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
    if large:
        _remember(path, identity, algorithm, _DIGESTS[key])
    return _DIGESTS[key]


def record_digest(path, algorithm, digest):
    """Remember a digest computed elsewhere (a download verified while it was written)."""
    path = os.path.abspath(os.fspath(path))
    identity = _identity(os.stat(path))
    _DIGESTS[(path, tuple(identity), algorithm)] = digest
    if identity[0] >= LEDGER_MIN_BYTES:
        _remember(path, identity, algorithm, digest)


def file_sha256(path):
    """Hex sha256 of a file's content (``file_digest``: remembered per file identity)."""
    return file_digest(path, "sha256")


def json_bytes(value, what="JSON output", indent=1):
    """``value`` as strict JSON (UTF-8, a newline at the end). numpy scalars and arrays become
    numbers and lists; a NaN or infinite number raises NonFiniteError naming ``what`` and where
    in ``value`` it is (a result with NaN is not usable, and JSON has no way to say it)."""
    try:
        text = json.dumps(value, indent=indent, allow_nan=False, default=_plain)
    except ValueError:
        where = _non_finite_path(value)
        if where is None:
            raise
        raise NonFiniteError("%s: %s is %s; JSON has no NaN or infinity"
                             % (what, where[0] or "the value", where[1])) from None
    return (text + "\n").encode("utf-8")


def _plain(value):
    """numpy scalars and arrays as Python numbers and lists (json's ``default`` hook)."""
    for method in ("tolist", "item"):
        if hasattr(value, method) and type(value).__module__ == "numpy":
            return getattr(value, method)()
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


def _non_finite_path(value, path=""):
    """(dotted path, repr) of the first NaN / infinite number inside value, or None."""
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return path, repr(value)
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, (list, tuple)) else ())
    for key, item in items:
        found = _non_finite_path(item, "%s[%d]" % (path, key) if isinstance(key, int)
                                 else (path + "." if path else "") + str(key))
        if found is not None:
            return found
    return None
