"""Output files and file identities: the one atomic writer and the one file hash of caffelrp.

``write_atomically`` writes through a temporary file in the target's folder and renames it, so an
interrupted run never leaves a complete-looking partial file; the result gets the mode a plain
``open()`` would give (0666 minus the umask: 0644 under umask 022), not the 0600 of ``mkstemp``.
The temporary name is short and fixed in length (``.caffelrp-XXXXXXXX.tmp``), so any file name
the file system accepts can be written, also a 255-byte one.
"""
import hashlib
import os
import secrets
import threading

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
