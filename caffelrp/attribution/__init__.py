"""Explanations of predictions: Layer-wise Relevance Propagation as in the LRP Toolbox (Caffe)."""
from .lrp import relevance

__all__ = ["relevance"]
