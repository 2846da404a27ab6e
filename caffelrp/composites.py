"""What every layer type does under one explanation method: the original's formula numbers
(relpropformulatype) and caffelrp's own composites, as ONE table.

``COMPOSITES``: key -> {layer type or "output": behaviour}. Keys are the original's formula numbers
(ints) and caffelrp's composites (strings); ``NAMES`` maps readable names to keys. Entries:

* "Convolution", "InnerProduct": a *rule spec*, called as ``spec(where, settings)`` and returning a
  ``caffelrp.rules.Rule``; ``where`` is a ``LayerPlace`` (Caffe index with the implicit Split layers
  counted, whether the layer reads the network input), ``settings`` the user's ``Settings``. The
  switch of the original's types is inclusive: index <= aux takes the "below" rule (spec 2.1).
  Standalone BatchNorm/Scale/Bias layers (not foldable into a linear layer below) take the
  "Convolution" rule as per-channel affine maps.
* "ReLU": "identity" (R passes unchanged), "deconv" (max(R, 0)), "guided" (max(R, 0) where the
  ReLU input > 0) or "gradient" (R where the input > 0, negative_slope * R elsewhere).
* "Pooling", "LRN": "relevance" (the original's relevance rules, spec 2.3) or "gradient"
  (Caffe's Backward: MAX to the argmax, AVE the adjoint 1/pool_size, the true LRN gradient).
* "output": None, or "channel_norm" (per pixel sqrt(sum_c g_c^2) copied to every channel, 99).

Missing non-linear keys take ``LAYER_DEFAULTS``. Spec 2.1 / the reference README's "Run tags":
0 epsilon; 2 alpha-beta; 100 alpha-beta conv + epsilon IP (aux unused); 102 / 104 as 100 but
flat / w^2 for index <= aux; 114 alpha-beta for index <= aux, else epsilon; 54 / 56 flat / w^2
for index <= aux, else epsilon; 58 / 60 flat / w^2 for index <= aux, else alpha-beta; 22
alpha-beta with beta 0 above index 15 and 1 at or below (the user's beta ignored); 6 / 8 / 18
z^B on the first layer, else alpha-beta / epsilon / the 22 switch in convolutions, and the 22
switch in inner products; 26 deconvnet; 166 guided backprop; 11 gradient (x the logits injected);
99 its per-pixel channel norm.

z^B (6, 8, 18) deliberately differs from the original, whose bounds buffer is never filled (spec
2.2 "ZB", undefined behaviour): caffelrp applies the intended rule with bounds low = 0 - mean,
high = 255 - mean per input pixel, on the linear layer(s) that read the network input (the
original compares with firstlayerindex, 0 in the demonstrator).

caffelrp's composites (Kohlbrenner et al., "Towards best practice in explaining neural network
decisions with LRP", arXiv:1910.09840; Montavon et al., "Layer-wise relevance propagation: an
overview", 2019): "zplus" (z+ everywhere), "gamma" (gamma on convolutions, epsilon on inner
products), "epsilon-plus" (z+ on convolutions, epsilon on inner products), "epsilon-plus-flat"
(the same with a conservative flat rule on the first layer), "epsilon-gamma-box" (z^B on the
first layer, gamma on the other convolutions, epsilon on inner products).

* "Eltwise": the rule spec of an Eltwise SUM y = sum_k c_k x_k (a linear map with the coeff
  weights and no bias), the composite's own convolution rule on that map: z+ (the alpha-beta
  family's member with beta 0 and no bias) for zplus, epsilon-plus, epsilon-plus-flat and the
  original's alpha-beta formulas (2, 6, 18, 22, 58, 60, 100, 102, 104), R_k = (c_k x_k)^+ /
  sum_j (c_j x_j)^+ R, which passes all of R wherever some c_k x_k > 0 (always where a ReLU
  follows the join and R != 0) and never flips its sign -- alpha-beta itself would pass alpha R
  where both inputs are positive; the generalised gamma rule for gamma and epsilon-gamma-box
  (exact on a map without bias); epsilon with the pass's eps for the original's epsilon formulas
  (0, 8, 54, 56, 114: eps = 1 keeps 40-64 % per join on open_nsfw); "gradient" (its own
  backward) for 11, 99, 26, 166. ``benchmarks/conservation.py`` measures the candidates.

Conservation of caffelrp's composites (zplus, epsilon-plus, epsilon-plus-flat, gamma,
epsilon-gamma-box): their convolution and join rules take no bias, so each passes every neuron's
R_j on in full, except where nothing can carry it -- no positive product under z+ (a neuron whose
output is its bias: a folded BatchNorm shift), products summing to exactly 0 under gamma -- where
R_j is dropped; the gamma denominator |sum_i (z_ij + gamma z^sigma_ij)| >= gamma |sum_i z^sigma_ij|
cannot vanish while a product is non-zero. zplus keeps one sign everywhere, so it cannot create
relevance; in the others only the epsilon inner product (its bias and stabiliser) and dropped
neurons of the other sign change the total (tests/test_lrp_resnet.py checks every layer's
share; open_nsfw keeps 97-98 % under epsilon-plus and gamma, 100 % under zplus).
"""
from collections import namedtuple

from .errors import ArgumentError
from .layers.base import GRADIENT  # noqa: F401  (a layer's own backward: no second copy)
from .rules import alpha_beta, backprojection, epsilon, flat, gamma, w_square, zbox, zplus

LAYER_DEFAULTS = {"ReLU": "identity", "Pooling": "relevance", "LRN": "relevance", "output": None}

# Where a linear layer sits: its Caffe index, and whether it reads the network input.
LayerPlace = namedtuple("LayerPlace", "index first")


class Settings:
    """The user's parameters of one relevance pass: ``eps`` (epsstab), ``beta`` (alphabeta_beta,
    alpha = 1 + beta), ``switch_layer`` (auxiliaryvariable_maxlayerindexforflatdistinconv),
    ``gamma`` (gamma rule), ``bounds`` ((low, high) of the input for z^B, or None)."""

    def __init__(self, eps=1.0, beta=1.0, switch_layer=0, gamma=0.25, bounds=None):
        self.eps, self.beta, self.switch_layer = eps, beta, switch_layer
        self.gamma, self.bounds = gamma, bounds


# ------------------------------------------------------------------------- rule specs
def EPSILON(where, s):
    return epsilon(s.eps)


def ALPHA_BETA(where, s):
    return alpha_beta(beta=s.beta)


def FLAT(where, s):
    return flat()


def FLAT_CONSERVATIVE(where, s):
    return flat(conservative=True)


def W_SQUARE(where, s):
    return w_square()


def BACKPROJECTION(where, s):
    return backprojection()


def ZPLUS(where, s):
    return zplus()


def GAMMA(where, s):
    # without the bias (like z+): a folded BatchNorm shift opposite in sign to a neuron's
    # products would hand its inputs more than R_j, one of the same sign absorbs most of it
    # (open_nsfw: 3-6 % of the relevance reached the input with the bias, 97-98 % without)
    return gamma(s.gamma, bias=False)


def Z_BOX(where, s):
    if s.bounds is None:
        raise ArgumentError("the z^B rule needs the input's bounds: pass mean= (the mean that "
                         "preprocessing subtracted; bounds 0 - mean .. 255 - mean) or bounds=")
    return zbox(*s.bounds)


def ALPHA_BETA_FC6_SWITCH(where, s):
    """The original's hard-coded "fc6 = layer 15": beta 0 above index 15, 1 at or below."""
    return alpha_beta(beta=0.0 if where.index > 15 else 1.0)


def below_aux(lower, upper):
    """``lower`` for layer index <= aux, else ``upper``; aux < 0 is an error (the original's
    A-check aborts)."""
    def spec(where, s):
        if s.switch_layer is None or s.switch_layer < 0:
            raise ArgumentError("this formula type needs switch_layer >= 0 (the original aborts "
                             "for a negative auxiliaryvariable_maxlayerindexforflatdistinconv)")
        return (lower if where.index <= s.switch_layer else upper)(where, s)
    spec.__name__ = "%s_below_aux_else_%s" % (lower.__name__, upper.__name__)
    return spec


def first_layer(first, other):
    """``first`` on the linear layer(s) that read the network input, else ``other``."""
    def spec(where, s):
        return (first if where.first else other)(where, s)
    spec.__name__ = "%s_first_else_%s" % (first.__name__, other.__name__)
    return spec


def _linear(conv, ip=None, join=EPSILON):
    """Rule specs of the linear layers. ``join``: Eltwise SUM, a linear map with the weights
    coeff_k (1 by default) from its bottoms to its top, and no bias (see "Eltwise" above)."""
    return {"Convolution": conv, "InnerProduct": conv if ip is None else ip, "Eltwise": join}


# the gradient-type formulas: every layer but ReLU (and the linear layers' backprojection) is
# its gradient
_AS_GRADIENT = dict(Eltwise=GRADIENT, Pooling=GRADIENT, LRN=GRADIENT)


COMPOSITES = {
    0: _linear(EPSILON),
    2: _linear(ALPHA_BETA, join=ZPLUS),
    100: _linear(ALPHA_BETA, EPSILON, join=ZPLUS),
    102: _linear(below_aux(FLAT, ALPHA_BETA), below_aux(FLAT, EPSILON), join=ZPLUS),
    104: _linear(below_aux(W_SQUARE, ALPHA_BETA), below_aux(W_SQUARE, EPSILON), join=ZPLUS),
    114: _linear(below_aux(ALPHA_BETA, EPSILON)),
    54: _linear(below_aux(FLAT, EPSILON)),
    56: _linear(below_aux(W_SQUARE, EPSILON)),
    58: _linear(below_aux(FLAT, ALPHA_BETA), join=ZPLUS),
    60: _linear(below_aux(W_SQUARE, ALPHA_BETA), join=ZPLUS),
    22: _linear(ALPHA_BETA_FC6_SWITCH, join=ZPLUS),
    6: _linear(first_layer(Z_BOX, ALPHA_BETA), ALPHA_BETA_FC6_SWITCH, join=ZPLUS),
    8: _linear(first_layer(Z_BOX, EPSILON), ALPHA_BETA_FC6_SWITCH),
    18: _linear(first_layer(Z_BOX, ALPHA_BETA_FC6_SWITCH), ALPHA_BETA_FC6_SWITCH, join=ZPLUS),
    26: dict(_linear(BACKPROJECTION, join=GRADIENT), ReLU="deconv"),
    166: dict(_linear(BACKPROJECTION, join=GRADIENT), ReLU="guided"),
    11: dict(_linear(BACKPROJECTION), ReLU=GRADIENT, **_AS_GRADIENT),
    99: dict(_linear(BACKPROJECTION), ReLU=GRADIENT, **_AS_GRADIENT, output="channel_norm"),
    "zplus": _linear(ZPLUS, join=ZPLUS),
    "gamma": _linear(GAMMA, EPSILON, join=GAMMA),
    "epsilon-plus": _linear(ZPLUS, EPSILON, join=ZPLUS),
    "epsilon-plus-flat": _linear(first_layer(FLAT_CONSERVATIVE, ZPLUS), EPSILON, join=ZPLUS),
    "epsilon-gamma-box": _linear(first_layer(Z_BOX, GAMMA), EPSILON, join=GAMMA),
}

# Readable names of the original's formula types (and aliases of caffelrp's composites).
NAMES = {
    "epsilon": 0, "alphabeta": 2, "alpha-beta": 2, "composite": 100,
    "composite-flat": 102, "composite-wsquare": 104, "alphabeta-zb": 6, "epsilon-zb": 8,
    "deconvnet": 26, "guided-backprop": 166, "gradient": 11, "sensitivity": 99,
}


def supported_formulas():
    """The keys of ``COMPOSITES``: the original's formula numbers, then caffelrp's names."""
    return (sorted(k for k in COMPOSITES if isinstance(k, int)) +
            sorted(k for k in COMPOSITES if isinstance(k, str)))


def resolve(formula):
    """The ``COMPOSITES`` key for a formula number or a readable name."""
    if isinstance(formula, str):
        key = NAMES.get(formula.lower(), formula.lower())
    else:
        key = formula
    if key not in COMPOSITES or isinstance(key, bool):
        raise ArgumentError("rule %r is not supported; supported: formula numbers %s and names %s"
                         % (formula, [k for k in supported_formulas() if isinstance(k, int)],
                            sorted(set(NAMES) | {k for k in COMPOSITES if isinstance(k, str)})))
    return key


def _table(formula):
    return COMPOSITES[resolve(formula)]


def behaviour(formula, key):
    """What ``formula`` does for a non-linear layer type ("ReLU", "Pooling", "LRN") or "output"."""
    return _table(formula).get(key, LAYER_DEFAULTS.get(key))


def layer_rule(formula, rule_key, where, settings):
    """What a layer receives as its rule under ``formula`` (``Layer.relevance``): the table's
    entry ``rule_key`` (the layer type's ``rule_key``; None: no rule) at the layer's place
    ``where`` (a ``LayerPlace``) -- a ``Rule`` for a rule spec, else the behaviour name."""
    if rule_key is None:
        return None
    table = _table(formula)
    spec = table[rule_key] if rule_key in table else LAYER_DEFAULTS[rule_key]
    return spec(where, settings) if callable(spec) else spec


def rule_for(formula, layer_type, layer_index=None, eps=1.0, beta=1.0, switch_layer=0,
             first=None, settings=None):
    """The rule object for a linear layer of ``layer_type`` under ``formula``. ``first``: whether
    the layer reads the network input (defaults to layer index 0); ``settings`` overrides
    eps/beta/switch_layer with a full ``Settings``."""
    table = _table(formula)
    try:
        spec = table[layer_type]
    except KeyError:
        raise ArgumentError("rule %r has no rule for layer type %r" % (formula, layer_type))
    index = -1 if layer_index is None else layer_index
    if settings is None:
        settings = Settings(eps=eps, beta=beta, switch_layer=switch_layer)
    if spec == GRADIENT:
        return GRADIENT
    return spec(LayerPlace(index, index == 0 if first is None else first), settings)
