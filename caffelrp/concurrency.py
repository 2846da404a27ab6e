"""One Net, several Python threads: every public pass of a Net holds that net's lock.

A Net keeps the blobs of its last forward pass (and layers keep what their backward needs: MAX
pooling's argmax, LRN's scale), so two passes interleaved on one net would read each other's
values. The lock (re-entrant: ``relevance`` calls ``forward``) makes concurrent calls on one net
run one after the other, with the results of sequential calls. For parallel work, use one Net per
thread (or processes); nets do not share state, so separate nets run truly in parallel.
"""
import functools
import threading

_CREATE = threading.Lock()


def net_lock(net):
    """The re-entrant lock of ``net`` (made on first use)."""
    lock = net.__dict__.get("_pass_lock")
    if lock is None:
        with _CREATE:
            lock = net.__dict__.setdefault("_pass_lock", threading.RLock())
    return lock


def serialize_methods(cls, names):
    """Wrap the methods ``names`` of ``cls`` so that each call holds the instance's lock."""
    for name in names:
        method = getattr(cls, name)

        def locked(self, *args, _method=method, **kwargs):
            with net_lock(self):
                return _method(self, *args, **kwargs)
        functools.update_wrapper(locked, method)
        setattr(cls, name, locked)
