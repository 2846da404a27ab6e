# cython: language_level=3
"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, section 4: a 4x4
block of outputs of the correlation of a 6x6 input tile d with a 3x3 filter g is

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A        ((.) the element-wise product)

with the matrices of the Toom-Cook construction at the interpolation points 0, 1, -1, 2, -2 and
infinity (the standard F(4x4,3x3) set, eq. (11) of the paper's F(4,3)):

    B^T = [ 4  0 -5  0  1  0 ]    G = [  1/4     0     0  ]    A^T = [ 1  1  1  1  1  0 ]
          [ 0 -4 -4  1  1  0 ]        [ -1/6  -1/6  -1/6  ]          [ 0  1 -1  2 -2  0 ]
          [ 0  4 -4 -1  1  0 ]        [ -1/6   1/6  -1/6  ]          [ 0  1  1  4  4  0 ]
          [ 0 -2 -1  2  1  0 ]        [ 1/24  1/12   1/6  ]          [ 0  1 -1  8 -8  1 ]
          [ 0  2 -1 -2  1  0 ]        [ 1/24 -1/12   1/6  ]
          [ 0  4  0 -5  0  1 ]        [  0      0     1   ]

36 multiplications per 16 outputs instead of 144 (4x fewer). Summed over the input channels, the
element-wise products become 36 independent matrix products, one per tile position xi = (a, b):

    M_xi (K x T) = U_xi (K x C) @ V_xi (C x T),   U = G g G^T per (k, c),  V = B^T d B per (c, tile)

over all T tiles of the chunk, made by single-threaded sgemm (scipy's OpenBLAS, as src/gemm.pyx).

Geometry: output (i, j) reads input rows i - ph + 0..2 and columns j - pw + 0..2 (outside the
input: 0). ph, pw may be negative (the backward-data pass of a convolution padded by more than 2
crops), the output size is the caller's. Output tiles are 4x4 from (0, 0); edge tiles read zeros
past the input and write only their rows and columns inside the output.

Work is cut into chunks of whole tile rows (one image's row of ceil(OW/4) tiles), their size
given by the caller from the shapes. A chunk is: input transform (per channel and tile row), the
36 products (one sgemm per tile position over all the chunk's tiles), output transform with the
bias (per output channel and tile row). With enough chunks each thread takes whole chunks (their
transformed data stays in its cache); with few, the threads share each chunk's three phases.
Both schedules make the same sgemm calls on the same operands, and the transforms are the same
code per tile row, so the results do not depend on the thread count.

Arithmetic: the input and output transforms in float32 (additions and multiplications by 2, 4, 5,
8: exact up to the rounding of each sum); the filter transform in float64, rounded once to
float32 (it is made once per weights array, so its cost does not matter and its rounding of 1/6,
1/12, 1/24 is as small as float32 allows). The error is measured in tests/test_winograd.py.
"""
import numpy as np

from cython.parallel cimport prange, threadid
from scipy.linalg.cython_blas cimport sgemm

from kernel_limits cimport check_int_range, checked_mul

cdef enum:
    TILES = 36           # 6x6 transformed tile positions


cdef inline void _gemm_rm(int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                          float* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = A (m x k) @ B (k x n), both untransposed."""
    cdef float one = 1.0, zero = 0.0
    cdef char t = b'n'
    # column-major view: C^T (n x m) = B^T (n x k) @ A^T (k x m)
    sgemm(&t, &t, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &zero, c, &ldc)


def filters(const float[:, :, :, ::1] w, float[:, :, ::1] u, bint adjoint):
    """The transformed filters U[xi, k, c] = (G w[k, c] G^T)[a, b], xi = 6a + b, of w (K, C, 3, 3)
    into u (36, K, C); with ``adjoint``, those of the backward-data pass into u (36, C, K): the
    filter flipped in both axes and the channels swapped (w[k, c, 2-s, 2-t] as filter (c, k)).
    Computed in float64, rounded once."""
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1]
    if w.shape[2] != 3 or w.shape[3] != 3:
        raise ValueError("winograd filters: need (K, C, 3, 3) weights, got %s"
                         % ((w.shape[0], w.shape[1], w.shape[2], w.shape[3]),))
    if u.shape[0] != TILES or u.shape[1] != (C if adjoint else K) or \
            u.shape[2] != (K if adjoint else C):
        raise ValueError("winograd filters: output has shape %s, expected (36, %d, %d)"
                         % ((u.shape[0], u.shape[1], u.shape[2]), C if adjoint else K, K if adjoint else C))
    cdef double G[6][3]
    G[0][:] = [0.25, 0.0, 0.0]
    G[1][:] = [-1.0 / 6, -1.0 / 6, -1.0 / 6]
    G[2][:] = [-1.0 / 6, 1.0 / 6, -1.0 / 6]
    G[3][:] = [1.0 / 24, 1.0 / 12, 1.0 / 6]
    G[4][:] = [1.0 / 24, -1.0 / 12, 1.0 / 6]
    G[5][:] = [0.0, 0.0, 1.0]
    cdef Py_ssize_t k, c, a, b, s, t
    cdef double g[3][3]
    cdef double tmp[6][3]
    cdef double acc
    with nogil:
        for k in range(K):
            for c in range(C):
                for s in range(3):
                    for t in range(3):
                        if adjoint:
                            g[s][t] = w[k, c, 2 - s, 2 - t]
                        else:
                            g[s][t] = w[k, c, s, t]
                for a in range(6):          # tmp = G g
                    for t in range(3):
                        tmp[a][t] = G[a][0] * g[0][t] + G[a][1] * g[1][t] + G[a][2] * g[2][t]
                for a in range(6):          # (G g) G^T
                    for b in range(6):
                        acc = tmp[a][0] * G[b][0] + tmp[a][1] * G[b][1] + tmp[a][2] * G[b][2]
                        if adjoint:
                            u[a * 6 + b, c, k] = <float>acc
                        else:
                            u[a * 6 + b, k, c] = <float>acc


# The two transforms of one tile row, in C: ``restrict`` lets gcc vectorize the loops over the
# tiles (in Cython, with a dozen possibly aliasing pointers, it did not: 5x slower).
cdef extern from *:
    """
    #include <stddef.h>
    #include <string.h>

    /* The package is built for the baseline x86-64 (SSE2); these loops run 2-4x faster with
       wider vectors, so gcc makes AVX2 and AVX-512 versions too, picked at load time. */
    #if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
    #define CAFFELRP_WIDE __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
    #else
    #define CAFFELRP_WIDE
    #endif

    /* V = B^T d B for the TW tiles of one tile row of an input plane xp (H x W): rows
       iy0..iy0+5, columns 4j - pw + 0..5 of tile j (outside the plane: 0). Column 4j + s of the
       row is stored at row[s*L + j] (L = TW + 1), so that tile column t of all tiles is one
       contiguous run: t = 0..3 at [t*L + j], t = 4, 5 at [(t-4)*L + j + 1]. Work: prow (4L),
       d and v (24L each). Tile position xi = 6a + b goes to out[xi*ld + j]. */
    CAFFELRP_WIDE static void caffelrp_wino_input_row(const float *xp, ptrdiff_t H, ptrdiff_t W,
                                        ptrdiff_t iy0, ptrdiff_t pw, ptrdiff_t TW,
                                        float *restrict prow, float *restrict d,
                                        float *restrict v, float *restrict out, ptrdiff_t ld)
    {
        const ptrdiff_t L = TW + 1, S = 4 * L;
        ptrdiff_t lo = pw > 0 ? pw : 0, hi = W + pw;
        if (hi > S) hi = S;
        if (hi < 0) hi = 0;
        if (lo > hi) lo = hi;
        for (int r = 0; r < 6; r++) {
            float *restrict dr = d + r * S;
            ptrdiff_t iy = iy0 + r;
            if (iy < 0 || iy >= H || hi == lo) {
                memset(dr, 0, S * sizeof(float));
                continue;
            }
            memset(prow, 0, lo * sizeof(float));
            memcpy(prow + lo, xp + iy * W + (lo - pw), (hi - lo) * sizeof(float));
            memset(prow + hi, 0, (S - hi) * sizeof(float));
            for (int s = 0; s < 4; s++)
                for (ptrdiff_t j = 0; j < L; j++)
                    dr[s * L + j] = prow[4 * j + s];
        }
        /* vertical: v[a] = sum_r B^T[a, r] d[r], all stored columns at once */
        const float *d0 = d, *d1 = d + S, *d2 = d + 2 * S, *d3 = d + 3 * S, *d4 = d + 4 * S,
                    *d5 = d + 5 * S;
        for (ptrdiff_t j = 0; j < S; j++) {
            v[j] = 4.0f * d0[j] - 5.0f * d2[j] + d4[j];
            v[S + j] = -4.0f * (d1[j] + d2[j]) + d3[j] + d4[j];
            v[2 * S + j] = 4.0f * (d1[j] - d2[j]) - d3[j] + d4[j];
            v[3 * S + j] = 2.0f * (d3[j] - d1[j]) - d2[j] + d4[j];
            v[4 * S + j] = 2.0f * (d1[j] - d3[j]) - d2[j] + d4[j];
            v[5 * S + j] = 4.0f * d1[j] - 5.0f * d3[j] + d5[j];
        }
        /* horizontal: V[6a + b] = sum_t v[a, t] B[t, b] */
        for (int a = 0; a < 6; a++) {
            const float *e0 = v + a * S, *e1 = e0 + L, *e2 = e0 + 2 * L, *e3 = e0 + 3 * L,
                        *e4 = e0 + 1, *e5 = e1 + 1;
            float *restrict o0 = out + (6 * a) * ld, *restrict o1 = o0 + ld,
                  *restrict o2 = o1 + ld, *restrict o3 = o2 + ld, *restrict o4 = o3 + ld,
                  *restrict o5 = o4 + ld;
            for (ptrdiff_t j = 0; j < TW; j++) {
                o0[j] = 4.0f * e0[j] - 5.0f * e2[j] + e4[j];
                o1[j] = -4.0f * (e1[j] + e2[j]) + e3[j] + e4[j];
                o2[j] = 4.0f * (e1[j] - e2[j]) - e3[j] + e4[j];
                o3[j] = 2.0f * (e3[j] - e1[j]) - e2[j] + e4[j];
                o4[j] = 2.0f * (e1[j] - e3[j]) - e2[j] + e4[j];
                o5[j] = 4.0f * e1[j] - 5.0f * e3[j] + e5[j];
            }
        }
    }

    /* Y = A^T M A + bias for the TW tiles of one tile row of an output plane yp (OH x OW):
       m[xi*ld + j] holds tile j's product at position xi; h (24 TW) and o (16 TW) are work.
       Writes rows oy0..oy0+3 that lie inside the plane. */
    CAFFELRP_WIDE static void caffelrp_wino_output_row(const float *m, ptrdiff_t ld, ptrdiff_t TW, float bias,
                                         float *restrict h, float *restrict o, float *yp,
                                         ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t oy0)
    {
        const ptrdiff_t S = 4 * TW;
        /* horizontal: h[i, a] = sum_b M[6i + b] A[b, a], stored at h[i*S + a*TW + j] */
        for (int i = 0; i < 6; i++) {
            const float *m0 = m + (6 * i) * ld, *m1 = m0 + ld, *m2 = m1 + ld, *m3 = m2 + ld,
                        *m4 = m3 + ld, *m5 = m4 + ld;
            float *restrict h0 = h + i * S, *restrict h1 = h0 + TW, *restrict h2 = h1 + TW,
                  *restrict h3 = h2 + TW;
            for (ptrdiff_t j = 0; j < TW; j++) {
                h0[j] = m0[j] + m1[j] + m2[j] + m3[j] + m4[j];
                h1[j] = m1[j] - m2[j] + 2.0f * (m3[j] - m4[j]);
                h2[j] = m1[j] + m2[j] + 4.0f * (m3[j] + m4[j]);
                h3[j] = m1[j] - m2[j] + 8.0f * (m3[j] - m4[j]) + m5[j];
            }
        }
        /* vertical: o[b, a] = sum_i A^T[b, i] h[i, a] + bias */
        const float *g0 = h, *g1 = h + S, *g2 = h + 2 * S, *g3 = h + 3 * S, *g4 = h + 4 * S,
                    *g5 = h + 5 * S;
        for (ptrdiff_t j = 0; j < S; j++) {
            o[j] = g0[j] + g1[j] + g2[j] + g3[j] + g4[j] + bias;
            o[S + j] = g1[j] - g2[j] + 2.0f * (g3[j] - g4[j]) + bias;
            o[2 * S + j] = g1[j] + g2[j] + 4.0f * (g3[j] + g4[j]) + bias;
            o[3 * S + j] = g1[j] - g2[j] + 8.0f * (g3[j] - g4[j]) + g5[j] + bias;
        }
        /* scatter: row b of tile j is o[b*S + a*TW + j], a = 0..3 */
        ptrdiff_t rows = OH - oy0 < 4 ? OH - oy0 : 4, full = OW / 4;
        for (ptrdiff_t b = 0; b < rows; b++) {
            float *restrict yr = yp + (oy0 + b) * OW;
            const float *ob = o + b * S;
            for (ptrdiff_t j = 0; j < full; j++)
                for (int a = 0; a < 4; a++)
                    yr[4 * j + a] = ob[a * TW + j];
            for (ptrdiff_t col = 4 * full; col < OW; col++)
                yr[col] = ob[(col & 3) * TW + (col >> 2)];
        }
    }
    """
    void caffelrp_wino_input_row(const float* xp, Py_ssize_t H, Py_ssize_t W, Py_ssize_t iy0,
                                 Py_ssize_t pw, Py_ssize_t TW, float* prow, float* d, float* v,
                                 float* out, Py_ssize_t ld) noexcept nogil
    void caffelrp_wino_output_row(const float* m, Py_ssize_t ld, Py_ssize_t TW, float bias,
                                  float* h, float* o, float* yp, Py_ssize_t OH, Py_ssize_t OW,
                                  Py_ssize_t oy0) noexcept nogil


cdef struct Plan:
    # one convolution: shapes, geometry and pointers shared by every chunk
    const float* x
    const float* u
    const float* bias
    float* y
    Py_ssize_t C, H, W, K, OH, OW, ph, pw, TH, TW, Tc


cdef inline void _input_job(const Plan* p, Py_ssize_t u0, Py_ssize_t r, Py_ssize_t c,
                            float* v, float* wk) noexcept nogil:
    """Tile row u0 + r (image n, tile row ty) of input channel c into the chunk's V."""
    cdef Py_ssize_t q = u0 + r, n = q // p.TH, ty = q - (q // p.TH) * p.TH, L = p.TW + 1
    caffelrp_wino_input_row(p.x + (n * p.C + c) * p.H * p.W, p.H, p.W, 4 * ty - p.ph, p.pw, p.TW,
                            wk, wk + 4 * L, wk + 28 * L, v + c * p.Tc + r * p.TW, p.C * p.Tc)


cdef inline void _product_job(const Plan* p, Py_ssize_t xi, Py_ssize_t tiles, const float* v,
                              float* m) noexcept nogil:
    """M_xi (K x tiles) = U_xi (K x C) @ V_xi (C x tiles): one sgemm, the same call whichever
    thread and schedule makes it."""
    _gemm_rm(<int>p.K, <int>tiles, <int>p.C, p.u + xi * p.K * p.C, <int>p.C, v + xi * p.C * p.Tc,
             <int>p.Tc, m + xi * p.K * p.Tc, <int>p.Tc)


cdef inline void _output_job(const Plan* p, Py_ssize_t u0, Py_ssize_t r, Py_ssize_t k,
                             const float* m, float* wk) noexcept nogil:
    """Tile row u0 + r of output channel k from the chunk's M, plus the bias."""
    cdef Py_ssize_t q = u0 + r, n = q // p.TH, ty = q - (q // p.TH) * p.TH
    caffelrp_wino_output_row(m + k * p.Tc + r * p.TW, p.K * p.Tc, p.TW, p.bias[k], wk,
                             wk + 24 * p.TW, p.y + (n * p.K + k) * p.OH * p.OW, p.OH, p.OW,
                             4 * ty)


cdef void _whole_chunk(const Plan* p, Py_ssize_t u0, Py_ssize_t rows, float* v, float* m,
                       float* wk) noexcept nogil:
    """One chunk of tile rows start to end on the calling thread."""
    cdef Py_ssize_t c, r, xi, k
    for c in range(p.C):
        for r in range(rows):
            _input_job(p, u0, r, c, v, wk)
    for xi in range(TILES):
        _product_job(p, xi, rows * p.TW, v, m)
    for k in range(p.K):
        for r in range(rows):
            _output_job(p, u0, r, k, m, wk)


def conv3x3(const float[:, :, :, ::1] x, const float[:, :, ::1] u, const float[::1] bias,
            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t chunk_rows, float[:, :, :, ::1] y,
            float[::1] vbuf, float[::1] mbuf, int num_threads):
    """y[n, k] = sum_c correlate(x[n, c], w[k, c]) + bias[k] by F(4x4, 3x3), u = filters(w).

    x (N, C, H, W); u (36, K, C); bias (K,) or None; y (N, K, OH, OW), any OH, OW >= 1, overwritten;
    output (i, j) reads x rows i - ph .. i - ph + 2 (ph, pw any sign). chunk_rows: tile rows (of
    ceil(OW/4) tiles) transformed and multiplied together (the caller's choice from the shapes,
    never from the thread count: it fixes the sgemm calls). vbuf and mbuf: work space of
    36*C*T and 36*K*T floats per thread, T = chunk_rows*ceil(OW/4) (one thread's worth at least).

    Two schedules, with the same calls and so the same bits: with many chunks each thread takes
    whole chunks (transforms and products stay in its cache); with few, the threads share each
    chunk's channels, tile positions and output channels in three phases.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = u.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t TH, TW, L, units, Tc, per_thread, vsize, msize, chunks, slots
    cdef Py_ssize_t ci, u0, rows, job, jobs, c, k, r, xi
    cdef int tid
    cdef float* wk
    cdef Plan plan
    if u.shape[0] != TILES or u.shape[2] != C:
        raise ValueError("conv3x3: filters have shape %s, expected (36, K, %d)"
                         % ((u.shape[0], u.shape[1], u.shape[2]), C))
    if y.shape[0] != N or y.shape[1] != K:
        raise ValueError("conv3x3: output has shape %s, expected (%d, %d, OH, OW)"
                         % ((y.shape[0], y.shape[1], y.shape[2], y.shape[3]), N, K))
    if bias is not None and bias.shape[0] != K:
        raise ValueError("conv3x3: bias has %d values, expected %d" % (bias.shape[0], K))
    for what, value in (("pad height", ph), ("pad width", pw)):
        if value < -2147483647 or value > 2147483647:
            raise ValueError("%s %d is out of Caffe's int range" % (what, value))
    check_int_range("output height", OH, 0)
    check_int_range("output width", OW, 0)
    check_int_range("chunk rows", chunk_rows, 1)
    if N == 0 or K == 0 or OH == 0 or OW == 0:
        return
    if C == 0:   # no input channels: the bias alone
        np.asarray(y)[...] = 0.0 if bias is None else np.asarray(bias)[None, :, None, None]
        return
    if K > 2147483647 or C > 2147483647:
        raise ValueError("conv3x3: channel counts above 2**31-1 are not supported by BLAS")
    TH = (OH + 3) // 4
    TW = (OW + 3) // 4
    units = checked_mul(N, TH)
    if chunk_rows > units:
        chunk_rows = units
    Tc = checked_mul(chunk_rows, TW)
    if Tc > 2147483647:
        raise ValueError("conv3x3: %d tiles in one chunk exceed BLAS's int" % Tc)
    vsize = checked_mul(checked_mul(TILES, C), Tc)
    msize = checked_mul(checked_mul(TILES, K), Tc)
    if vbuf.shape[0] < vsize or mbuf.shape[0] < msize:
        raise ValueError("conv3x3: work buffers too small for %d tiles" % Tc)
    if num_threads < 1:
        num_threads = 1
    chunks = (units + chunk_rows - 1) // chunk_rows
    slots = min(vbuf.shape[0] // vsize, mbuf.shape[0] // msize, num_threads)
    L = TW + 1
    per_thread = 52 * L     # input: prow (4L), d, v (24L each); output: h, o (40 TW)
    work_array = np.empty((num_threads, per_thread), dtype=np.float32)
    cdef float[:, ::1] work = work_array
    cdef float[::1] zeros = np.zeros(K, dtype=np.float32)
    plan.x = &x[0, 0, 0, 0]
    plan.u = &u[0, 0, 0]
    if bias is None:
        plan.bias = &zeros[0]
    else:
        plan.bias = &bias[0]
    plan.y = &y[0, 0, 0, 0]
    plan.C, plan.H, plan.W, plan.K, plan.OH, plan.OW = C, H, W, K, OH, OW
    plan.ph, plan.pw, plan.TH, plan.TW, plan.Tc = ph, pw, TH, TW, Tc
    cdef float* vb = &vbuf[0]
    cdef float* mb = &mbuf[0]
    if chunks >= 2 * num_threads and slots == num_threads:
        for ci in prange(chunks, nogil=True, schedule="dynamic", num_threads=num_threads):
            tid = threadid()
            u0 = ci * chunk_rows
            _whole_chunk(&plan, u0, min(chunk_rows, units - u0), vb + tid * vsize,
                         mb + tid * msize, &work[tid, 0])
        return
    for u0 in range(0, units, chunk_rows):
        rows = min(chunk_rows, units - u0)
        jobs = C * rows
        for job in prange(jobs, nogil=True, schedule="static", num_threads=num_threads):
            c = job // rows
            _input_job(&plan, u0, job - c * rows, c, vb, &work[threadid(), 0])
        for xi in prange(TILES, nogil=True, schedule="static", num_threads=num_threads):
            _product_job(&plan, xi, rows * TW, vb, mb)
        jobs = K * rows
        for job in prange(jobs, nogil=True, schedule="static", num_threads=num_threads):
            k = job // rows
            _output_job(&plan, u0, job - k * rows, k, mb, &work[threadid(), 0])
