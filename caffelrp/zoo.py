"""The published weights by name: ``python -m caffelrp fetch NAME``, the cache they land in, and
the checksum check of weights given for a named model.

The cache is ``$CAFFELRP_HOME`` (default ``$XDG_CACHE_HOME/caffelrp``, i.e. ``~/.cache/caffelrp``):
``models/<published file name>`` and ``imagenet/`` (mean file and class names from Caffe's
ILSVRC12 auxiliary archive). A download goes to ``<file>.part`` and is renamed only once its sha1
matches the published one, so the cache never holds a half-downloaded or wrong file under the real
name; an interrupted download resumes with an HTTP Range request. Addresses and sums:
shared/spec/model-zoo.md (copied into bundled.BUNDLED).
"""
import hashlib
import os
import sys
import tarfile
import time
from pathlib import Path

from .bundled import BUNDLED, IMAGENET_MODELS
from .errors import CaffeLRPError, WeightsError
from .files import cache_dir, file_digest, record_digest

NAMES = IMAGENET_MODELS          # the models whose published weights can be fetched
AUX_ARCHIVE = "http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz"
AUX_FILES = ("imagenet_mean.binaryproto", "synset_words.txt")
MIRROR_ENV = "CAFFELRP_ZOO_MIRROR"
CHUNK = 1 << 20


class FetchError(CaffeLRPError):
    """A download failed: server unreachable, HTTP error, transfer cut, cache not writable."""


class ChecksumError(FetchError):
    """A downloaded file's sha1 is not the published one (the file was deleted)."""


class WeightsMismatchError(WeightsError):
    """--weights given for a named model are not that model's published file."""


def published(name):
    """(file name, address, sha1 or None) of a named model's published weights."""
    _, filename, url, checksum = BUNDLED[name]
    sha1 = checksum[len("sha1 "):] if checksum.startswith("sha1 ") else None
    return filename, url, sha1


# ------------------------------------------------------------------------------ the cache
def weights_path(name):
    return cache_dir() / "models" / published(name)[0]


def cached_weights(name):
    """The fetched weights of a named model, or None."""
    if name not in NAMES:
        return None
    path = weights_path(name)
    return path if path.is_file() else None


def file_sha1(path):
    """Hex sha1 of a file (``files.file_digest``: once per file identity, large files remembered
    across runs in the cache's ledger, so checking a 500 MB weights file costs a stat)."""
    return file_digest(path, "sha1")


def check_named_weights(name, weights):
    """Refuse ``weights`` for the named model unless their sha1 is the published one (models
    without a published checksum are not checked)."""
    filename, _, expected = published(name)
    if expected is None:
        return
    found = file_sha1(weights)
    if found == expected:
        return
    others = [n for n in NAMES if n != name and published(n)[2] == found]
    what = ("the published %s weights (%s)" % (others[0], published(others[0])[0]) if others
            else "not the published %s" % filename)
    raise WeightsMismatchError(
        "--weights %s is %s, but --model %s expects %s (sha1 expected %s, found %s); give the "
        "matching --model, or --no-weights-check to run these weights anyway (e.g. your own "
        "training of this definition)" % (weights, what, name, filename, expected, found))


def add_weights_check_option(parser):
    parser.add_argument("--no-weights-check", action="store_true",
                        help="run --weights under a named --model even if their sha1 is not "
                             "the published one")


# ---------------------------------------------------------------------------- downloading
def mirrored(url, mirror):
    """The address on a mirror: the mirror's base address plus the published file name."""
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


class ByteProgress:
    """Download progress on stderr (terminal only): bytes, MiB/s, ETA."""

    def __init__(self, name, total, done=0, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.name, self.total, self.done, self.first = name, total, done, done
        self.start = time.monotonic()

    def advance(self, n):
        self.done += n
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (self.done - self.first) / elapsed
        if self.total:
            filled = int(30 * self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.stream.write("\r%s [%s%s] %.1f/%.1f MiB, %.2f MiB/s, ETA %s " % (
                self.name, "#" * filled, "." * (30 - filled), self.done / 2**20,
                self.total / 2**20, rate / 2**20, _clock(eta)))
        else:
            self.stream.write("\r%s %.1f MiB, %.2f MiB/s " % (self.name, self.done / 2**20,
                                                              rate / 2**20))
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds):
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def _sha1_of(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url, dest, sha1=None, quiet=False, timeout=30):
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file with a Range
    request; with ``sha1``, a mismatch deletes the partial file and raises ChecksumError."""
    # here, not at the top: every command imports this module, few download (~25 ms of start-up)
    import http.client
    import urllib.error
    import urllib.request
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": "bytes=%d-" % have} if have
                                         else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:   # nothing after what we have: the part is complete
                response = None
            else:
                raise FetchError("%s: HTTP %d %s" % (url, e.code, e.reason)) from None
        if response is not None:
            with response:
                if response.status == 206:
                    first = response.headers.get("Content-Range", "").split(" ")[-1]
                    if not first.startswith("%d-" % have):
                        raise FetchError("%s: the server resumed at %r, not at byte %d"
                                         % (url, first, have))
                    mode = "ab"
                else:            # the server ignores Range: start again
                    have, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                progress = ByteProgress(dest.name, total, have, quiet)
                try:
                    with open(part, mode) as f:
                        for chunk in iter(lambda: response.read(CHUNK), b""):
                            f.write(chunk)
                            progress.advance(len(chunk))
                finally:
                    progress.close()
            got = part.stat().st_size
            if total is not None and got < total:
                raise FetchError("%s: the transfer stopped at %d of %d bytes; run fetch again "
                                 "to resume from there" % (url, got, total))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        if getattr(e, "filename", None) and not isinstance(e, urllib.error.URLError):  # local
            raise FetchError("cannot write to the cache folder %s: %s (set CAFFELRP_HOME to a "
                             "writable folder)" % (dest.parent, e.strerror or e)) from None
        kept = part.is_file() and part.stat().st_size > 0
        raise FetchError("%s: cannot download: %s (%sa lab mirror can be given with --mirror or "
                         "%s)" % (url, getattr(e, "reason", e), "the partial file is kept and "
                                  "the next fetch resumes it; " if kept else "", MIRROR_ENV)
                         ) from None
    if sha1 is not None:
        found = _sha1_of(part)
        if found != sha1:
            part.unlink()
            raise ChecksumError("%s: sha1 mismatch, expected %s, found %s; the file was deleted"
                                % (url, sha1, found))
    os.replace(part, dest)
    if sha1 is not None:
        record_digest(dest, "sha1", sha1)
    return dest


def fetch_model(name, mirror=None, quiet=False):
    """The named model's weights in the cache (downloaded and verified unless already there)."""
    filename, url, sha1 = published(name)
    dest = weights_path(name)
    if dest.is_file() and (sha1 is None or file_sha1(dest) == sha1):
        if not quiet:
            print("%s: %s is already in the cache" % (name, dest))
        return dest
    download(mirrored(url, mirror), dest, sha1, quiet)
    if not quiet:
        print("%s: %s (%s)" % (name, dest, "sha1 verified" if sha1 else
                               "no checksum is published for this file: not verified"))
    return dest


def fetch_imagenet_aux(mirror=None, quiet=False):
    """The ImageNet mean file and class names (from Caffe's ILSVRC12 archive) in the cache."""
    folder = cache_dir() / "imagenet"
    if all((folder / f).is_file() for f in AUX_FILES):
        return folder
    archive = download(mirrored(AUX_ARCHIVE, mirror), folder / "caffe_ilsvrc12.tar.gz",
                       quiet=quiet)
    from .io.caffemodel import read_mean_binaryproto, write_atomically
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in AUX_FILES:
                if name not in members:
                    raise FetchError("%s: the archive holds no %s" % (archive, name))
                write_atomically(folder / name, tar.extractfile(members[name]).read())
    except tarfile.TarError as e:
        archive.unlink()
        raise FetchError("%s: not a readable tar.gz archive (%s); it was deleted"
                         % (archive, e)) from None
    archive.unlink()
    # no checksum is published for the archive: check what it holds instead
    try:
        read_mean_binaryproto(folder / AUX_FILES[0])
    except CaffeLRPError as e:
        (folder / AUX_FILES[0]).unlink()
        raise FetchError("%s: %s" % (AUX_FILES[0], e)) from None
    if not quiet:
        print("imagenet: %s (mean file and class names)" % folder)
    return folder


# ------------------------------------------------------------------------ the subcommand
def add_parser(sub):
    fetch = sub.add_parser(
        "fetch", help="download the published weights of a named model into the cache",
        description="Download the published caffemodel of a model (and Caffe's ImageNet mean "
                    "file and class names) into $CAFFELRP_HOME (default ~/.cache/caffelrp), "
                    "verify its sha1, and resume an interrupted download. Afterwards --model "
                    "NAME finds the weights without --weights.")
    fetch.add_argument("names", nargs="+", choices=NAMES + ("all",), metavar="NAME",
                       help="%s or all" % "|".join(NAMES))
    fetch.add_argument("--mirror", metavar="URL", default=os.environ.get(MIRROR_ENV) or None,
                       help="base address that serves the same file names, instead of the "
                            "published hosts (default $%s)" % MIRROR_ENV)
    fetch.add_argument("--no-aux", action="store_true",
                       help="skip the ImageNet mean file and class names")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    fetch.set_defaults(run=run)


def run(args):
    names = NAMES if "all" in args.names else tuple(dict.fromkeys(args.names))
    failures = []
    for name in names:
        try:
            fetch_model(name, args.mirror, args.quiet)
        except FetchError as e:
            failures.append(str(e))
    if not args.no_aux:
        try:
            fetch_imagenet_aux(args.mirror, args.quiet)
        except FetchError as e:
            failures.append(str(e))
    for message in failures:
        print("error: %s" % message, file=sys.stderr)
    return 1 if failures else 0
