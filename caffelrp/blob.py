"""pycaffe's view of blobs and weights: ``net.blobs[name].data`` and ``net.params[name][i].data``.

A ``Blob`` is a numpy array (so ``net.blobs["fc8"].mean()`` and ``net.params["conv1"][0].shape``
work as before) whose ``.data`` is the array itself, as pycaffe's ``Blob.data`` is, instead of
numpy's raw memoryview. A weight Blob is a view of the layer's own weights: writing it
(``net.params["conv1"][0].data[...] = w``, ``p *= 2``) changes the weights, and tells the net, which
drops what it derived from them (the LRP weight caches) and counts them as set by the user.
Arithmetic on a Blob gives plain numpy arrays.
"""
import numpy as np

from .errors import ArgumentError


class Blob(np.ndarray):
    _on_write = None

    def __array_finalize__(self, obj):
        self._on_write = getattr(obj, "_on_write", None)

    @property
    def data(self):
        """The array itself (pycaffe's ``blob.data``); writable, writes reach the net."""
        self._written()
        return self

    def _written(self):
        if self._on_write is not None:
            self._on_write()

    def __setitem__(self, index, value):
        self._written()
        super().__setitem__(index, value)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = tuple(i.view(np.ndarray) if isinstance(i, Blob) else i for i in inputs)
        if out is not None:
            for o in out:
                if isinstance(o, Blob):
                    o._written()
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Blob) else o for o in out)
        return getattr(ufunc, method)(*inputs, **kwargs)


def blob_view(array, on_write=None):
    view = np.asarray(array).view(Blob)
    view._on_write = on_write
    return view


class ParamList(list):
    """The weight blobs of one layer; ``params[name][i] = array`` copies into blob i (shape
    checked), so the layer keeps its own contiguous float32 weights."""

    def __init__(self, layer_name, blobs):
        super().__init__(blobs)
        self.layer_name = layer_name

    def __setitem__(self, index, value):
        if not isinstance(index, int):
            raise ArgumentError("params['%s']: assign one weight blob by its index"
                                % self.layer_name)
        target = self[index]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ArgumentError("params['%s'][%d] has shape %s, cannot take an array of shape %s"
                                % (self.layer_name, index, target.shape, value.shape))
        target[...] = value
