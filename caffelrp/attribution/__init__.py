"""Explanations of predictions, the drivers users call: Layer-wise Relevance Propagation as in the
LRP Toolbox (Caffe) (``lrp``), the gradient, gradient x input and SmoothGrad (``gradients``),
Integrated Gradients (``integrated_gradients``); one reverse walk for all of them (``backward``)
and one target resolver (``targets``)."""
from .lrp import relevance

__all__ = ["relevance"]
