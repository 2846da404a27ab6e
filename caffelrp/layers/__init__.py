"""Layer implementations, one module per family; importing this package registers them all."""
from . import conv, inner_product, lrn, neuron, normalization, pooling, routing  # noqa: F401
from .base import Layer, layer_class, supported_types  # noqa: F401
