"""The original's formula numbers (relpropformulatype) -> the rule of each linear layer type.

Spec 2.1: type 0 = epsilon everywhere, type 2 = alpha-beta everywhere, type 100 = alpha-beta on
convolutions and epsilon on inner products (the aux switch index does not affect 100). Layers
without weights (pooling, LRN, ReLU, Dropout, Split, Concat) behave the same for every type.
"""
from .rules import alpha_beta, epsilon

EPSILON, ALPHA_BETA = "epsilon", "alpha_beta"

COMPOSITES = {
    0: {"Convolution": EPSILON, "InnerProduct": EPSILON},
    2: {"Convolution": ALPHA_BETA, "InnerProduct": ALPHA_BETA},
    100: {"Convolution": ALPHA_BETA, "InnerProduct": EPSILON},
}


def supported_formulas():
    return sorted(COMPOSITES)


def rule_for(formula, layer_type, layer_index=None, eps=1.0, beta=1.0, switch_layer=0):
    """The rule object for a linear layer of ``layer_type`` under formula ``formula``."""
    try:
        table = COMPOSITES[formula]
    except KeyError:
        raise ValueError("formula type %r is not supported; supported: %s"
                         % (formula, supported_formulas())) from None
    try:
        kind = table[layer_type]
    except KeyError:
        raise ValueError("formula type %r has no rule for layer type %r" % (formula, layer_type))
    return epsilon(eps) if kind == EPSILON else alpha_beta(beta=beta)
