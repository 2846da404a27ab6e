"""Exception types of caffelrp.

Every error a user can cause with a bad file or a bad call is one of these, with a message that
names the file (and line), the layer and what was expected, so that no traceback from deep inside
numpy or protobuf reaches the user.
"""


class CaffeLRPError(Exception):
    """Base class of all errors caffelrp raises on purpose."""


class PrototxtError(CaffeLRPError):
    """A prototxt cannot be parsed or describes a network Caffe would refuse."""


class UnsupportedLayerError(CaffeLRPError):
    """A layer type is unknown to Caffe 1.0 or cannot be run here (Python, data, loss layers)."""


class WeightsError(CaffeLRPError):
    """A .caffemodel (or mean .binaryproto) is corrupt, truncated or does not fit the prototxt."""


class ShapeError(CaffeLRPError):
    """Blob shapes do not fit a layer (shape inference failed)."""


class InputShapeError(ShapeError):
    """The array passed to Net.forward does not fit the network's input."""


class ArgumentError(CaffeLRPError, ValueError, TypeError):
    """An argument of an API call is invalid (a ValueError and TypeError too, for callers that
    caught those before)."""


class NoSuchLayerError(CaffeLRPError, KeyError):
    """A layer name that the network does not have."""

    def __str__(self):   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoSuchBlobError(ArgumentError, KeyError):
    """A blob name that the network does not have: an argument error, and a KeyError too, as a
    dict lookup is."""

    def __str__(self):   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NonFiniteError(CaffeLRPError, ValueError):
    """A result to be written holds NaN or infinity (JSON has no such numbers)."""
