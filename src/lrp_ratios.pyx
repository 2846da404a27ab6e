# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The element-wise steps of the LRP rules for linear maps, fused into single parallel passes.

Between its matrix products a rule divides the upper relevance by the (stabilised) outputs and
finally multiplies by the inputs. In numpy each of these is several passes over (O, P) or (K, P)
matrices with temporaries; at the sizes of a convolution (up to millions of entries) that costs as
much as a matrix product. Here every step is one OpenMP pass, row-parallel.

Arrays are 2-D float32 with any strides (the rules see an inner product's data transposed), and
the per-output vectors index the rows. The formulas are those of caffelrp.rules (spec 2.2, 2.4):

* ``epsilon_ratio``: s = R / (z + eps) if z > 0, R / (z - eps) if z < 0, R if z == 0.
* ``alpha_beta_ratios``: z+ = zp + bias_p[o]; s+ = alpha R / z+ where z+ > 0, else 0; with beta > 0
  also z- = z - z+ - offset[o] and s- = beta R / z- where z- < 0, else 0. (z is the forward's
  pre-activation with the whole bias; z - z+ is then the sum of the negative products plus b-.)
* ``multiply_into``: g *= x.
* ``signed_product``: x * pos where x > 0, else x * neg.
"""
from cython.parallel cimport prange


def epsilon_ratio(const float[:, :] r, const float[:, :] z, float eps, float[:, :] out,
                  int num_threads):
    cdef Py_ssize_t rows = r.shape[0], cols = r.shape[1], i, j
    cdef float zv
    if z.shape[0] != rows or z.shape[1] != cols or out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError("epsilon_ratio: shapes do not match")
    for i in prange(rows, nogil=True, num_threads=num_threads, schedule="static"):
        for j in range(cols):
            zv = z[i, j]
            if zv > 0:
                out[i, j] = r[i, j] / (zv + eps)
            elif zv < 0:
                out[i, j] = r[i, j] / (zv - eps)
            else:
                out[i, j] = r[i, j]


def alpha_beta_ratios(const float[:, :] r, float[:, :] zp, const float[:, :] z,
                      const float[:] bias_p, const float[:] offset, float alpha, float beta,
                      float[:, :] sp, float[:, :] sn, int num_threads):
    """Also leaves z+ (with its bias) in ``zp``. ``z``, ``offset`` and ``sn`` are only read or
    written when beta > 0."""
    cdef Py_ssize_t rows = r.shape[0], cols = r.shape[1], i, j
    cdef float zpv, znv, bp, off
    if zp.shape[0] != rows or zp.shape[1] != cols or sp.shape[0] != rows or \
            sp.shape[1] != cols or bias_p.shape[0] != rows:
        raise ValueError("alpha_beta_ratios: shapes do not match")
    if beta > 0 and (z.shape[0] != rows or z.shape[1] != cols or sn.shape[0] != rows or
                     sn.shape[1] != cols or offset.shape[0] != rows):
        raise ValueError("alpha_beta_ratios: shapes of z / offset / s- do not match")
    for i in prange(rows, nogil=True, num_threads=num_threads, schedule="static"):
        bp = bias_p[i]
        off = offset[i] if beta > 0 else 0
        for j in range(cols):
            zpv = zp[i, j] + bp
            zp[i, j] = zpv
            sp[i, j] = alpha * r[i, j] / zpv if zpv > 0 else 0
            if beta > 0:
                znv = z[i, j] - zpv - off
                sn[i, j] = beta * r[i, j] / znv if znv < 0 else 0


def multiply_into(const float[:, :] x, float[:, :] g, int num_threads):
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i, j
    if g.shape[0] != rows or g.shape[1] != cols:
        raise ValueError("multiply_into: shapes do not match")
    for i in prange(rows, nogil=True, num_threads=num_threads, schedule="static"):
        for j in range(cols):
            g[i, j] = g[i, j] * x[i, j]


def signed_product(const float[:, :] x, const float[:, :] pos, const float[:, :] neg,
                   float[:, :] out, int num_threads):
    """out = x * pos where x > 0, x * neg elsewhere (alpha-beta on inputs of both signs: the
    positive inputs meet one combination of weight parts, the negative ones another)."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i, j
    cdef float v
    if pos.shape[0] != rows or pos.shape[1] != cols or neg.shape[0] != rows or \
            neg.shape[1] != cols or out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError("signed_product: shapes do not match")
    for i in prange(rows, nogil=True, num_threads=num_threads, schedule="static"):
        for j in range(cols):
            v = x[i, j]
            out[i, j] = v * pos[i, j] if v > 0 else v * neg[i, j]
