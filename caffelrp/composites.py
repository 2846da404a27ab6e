"""The original's formula numbers (relpropformulatype) -> what every layer type does.

One table, ``COMPOSITES``: formula -> {layer type or "output": behaviour}. Keys:

* "Convolution", "InnerProduct": a *rule spec*, called as ``spec(layer_index, eps, beta, aux)``
  and returning a ``caffelrp.rules.Rule``. Layer indices are Caffe's (implicit Split layers
  counted); ``aux`` is the original's auxiliaryvariable_maxlayerindexforflatdistinconv, the
  switch is inclusive (index <= aux takes the "below" rule, spec 2.1).
* "ReLU": "identity" (R passes unchanged), "deconv" (max(R, 0)), "guided" (max(R, 0) where the
  ReLU input > 0) or "gradient" (R where the input > 0, negative_slope * R elsewhere).
* "Pooling", "LRN": "relevance" (the original's relevance rules, spec 2.3) or "gradient"
  (Caffe's Backward: MAX to the argmax, AVE the adjoint 1/pool_size, the true LRN gradient).
* "output": None, or "channel_norm" (per pixel sqrt(sum_c g_c^2) copied to every channel, 99).

Missing non-linear keys take ``LAYER_DEFAULTS``. Spec 2.1 / the reference README's "Run tags":
0 epsilon; 2 alpha-beta; 100 alpha-beta conv + epsilon IP (aux unused); 102 / 104 as 100 but
flat / w^2 for index <= aux; 114 alpha-beta for index <= aux, else epsilon; 54 / 56 flat / w^2
for index <= aux, else epsilon; 58 / 60 flat / w^2 for index <= aux, else alpha-beta; 22
alpha-beta with beta 0 above index 15 and 1 at or below (the user's beta ignored); 26 deconvnet;
166 guided backprop; 11 gradient (x the logits injected); 99 its per-pixel channel norm.
"""
from .rules import alpha_beta, backprojection, epsilon, flat, w_square

LAYER_DEFAULTS = {"ReLU": "identity", "Pooling": "relevance", "LRN": "relevance", "output": None}


# ------------------------------------------------------------------------- rule specs
def EPSILON(layer_index, eps, beta, aux):
    return epsilon(eps)


def ALPHA_BETA(layer_index, eps, beta, aux):
    return alpha_beta(beta=beta)


def FLAT(layer_index, eps, beta, aux):
    return flat()


def W_SQUARE(layer_index, eps, beta, aux):
    return w_square()


def BACKPROJECTION(layer_index, eps, beta, aux):
    return backprojection()


def ALPHA_BETA_FC6_SWITCH(layer_index, eps, beta, aux):
    """The original's hard-coded "fc6 = layer 15": beta 0 above index 15, 1 at or below."""
    return alpha_beta(beta=0.0 if layer_index > 15 else 1.0)


def below_aux(lower, upper):
    """``lower`` for layer index <= aux, else ``upper``; aux < 0 is an error (the original's
    A-check aborts)."""
    def spec(layer_index, eps, beta, aux):
        if aux is None or aux < 0:
            raise ValueError("this formula type needs switch_layer >= 0 (the original aborts "
                             "for a negative auxiliaryvariable_maxlayerindexforflatdistinconv)")
        chosen = lower if layer_index <= aux else upper
        return chosen(layer_index, eps, beta, aux)
    spec.__name__ = "%s_below_aux_else_%s" % (lower.__name__, upper.__name__)
    return spec


def _linear(conv, ip=None):
    return {"Convolution": conv, "InnerProduct": conv if ip is None else ip}


COMPOSITES = {
    0: _linear(EPSILON),
    2: _linear(ALPHA_BETA),
    100: _linear(ALPHA_BETA, EPSILON),
    102: _linear(below_aux(FLAT, ALPHA_BETA), below_aux(FLAT, EPSILON)),
    104: _linear(below_aux(W_SQUARE, ALPHA_BETA), below_aux(W_SQUARE, EPSILON)),
    114: _linear(below_aux(ALPHA_BETA, EPSILON)),
    54: _linear(below_aux(FLAT, EPSILON)),
    56: _linear(below_aux(W_SQUARE, EPSILON)),
    58: _linear(below_aux(FLAT, ALPHA_BETA)),
    60: _linear(below_aux(W_SQUARE, ALPHA_BETA)),
    22: _linear(ALPHA_BETA_FC6_SWITCH),
    26: dict(_linear(BACKPROJECTION), ReLU="deconv"),
    166: dict(_linear(BACKPROJECTION), ReLU="guided"),
    11: dict(_linear(BACKPROJECTION), ReLU="gradient", Pooling="gradient", LRN="gradient"),
    99: dict(_linear(BACKPROJECTION), ReLU="gradient", Pooling="gradient", LRN="gradient",
             output="channel_norm"),
}


def supported_formulas():
    return sorted(COMPOSITES)


def _table(formula):
    try:
        return COMPOSITES[formula]
    except (KeyError, TypeError):
        raise ValueError("formula type %r is not supported; supported: %s"
                         % (formula, supported_formulas())) from None


def behaviour(formula, key):
    """What ``formula`` does for a non-linear layer type ("ReLU", "Pooling", "LRN") or "output"."""
    table = _table(formula)
    return table.get(key, LAYER_DEFAULTS.get(key))


def rule_for(formula, layer_type, layer_index=None, eps=1.0, beta=1.0, switch_layer=0):
    """The rule object for a linear layer of ``layer_type`` under formula ``formula``."""
    table = _table(formula)
    try:
        spec = table[layer_type]
    except KeyError:
        raise ValueError("formula type %r has no rule for layer type %r" % (formula, layer_type))
    return spec(-1 if layer_index is None else layer_index, eps, beta, switch_layer)
