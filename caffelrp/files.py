"""Output files and file identities: the one atomic writer and the one file hash of caffelrp.

``write_atomically`` writes through a temporary file in the target's folder and renames it, so an
interrupted run never leaves a complete-looking partial file; the result gets the mode a plain
``open()`` would give (0666 minus the umask: 0644 under umask 022), not the 0600 of ``mkstemp``.
The temporary name is short and fixed in length (``.caffelrp-XXXXXXXX.tmp``), so any file name
the file system accepts can be written, also a 255-byte one.

``json_bytes`` is the one JSON writer: strict JSON, never the bare ``NaN`` / ``Infinity`` tokens
Python's ``json`` writes by default and other parsers refuse.
"""
import hashlib
import json
import math
import os
import secrets
import threading

from .errors import NonFiniteError

_UMASK_LOCK = threading.Lock()
_SHA256 = {}


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


def file_sha256(path):
    """Hex sha256 of a file's content (remembered per path, size and modification time)."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


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
