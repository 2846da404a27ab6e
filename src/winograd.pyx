# cython: language_level=3
"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, section 4: a 4x4
block of outputs of the correlation of a 6x6 input tile d with a 3x3 filter g is

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A        ((.) the element-wise product)

with the matrices of the Toom-Cook construction at the interpolation points 0, 1, -1, 2, -2 and
infinity (the F(4x4,3x3) matrices as the paper gives them):

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
given by the caller from the shapes. A chunk is: input transform (per channel, over all the
chunk's tiles), the 36 products (one sgemm per tile position over all the chunk's tiles), output
transform with the bias (per output channel). With enough chunks each thread takes whole chunks
(their transformed data stays in its cache); with few, the threads share each chunk's three
phases. Both schedules make the same sgemm calls on the same operands and the same transform
calls per channel, so the results do not depend on the thread count.

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


# The two transforms, in C: ``restrict`` lets gcc vectorize the loops over the tiles (in Cython,
# with a dozen possibly aliasing pointers, it did not), and each runs over all the tiles of a
# chunk at once (contiguous in V and M), so the vectors stay long even where a tile row is short
# (4 tiles on VGG-16's 14x14 layers).
cdef extern from *:
    """
    #include <stddef.h>
    #include <string.h>

    /* The loops over the tiles carry no dependences (each writes its own rows, read from other
       rows), which gcc cannot prove for rows of one buffer: "ivdep" tells it. */
    /* The package is built for the baseline x86-64 (SSE2); these loops run several times faster
       with wider vectors, so gcc also makes x86-64-v3 (AVX2, FMA) and v4 (AVX-512) versions,
       picked at load time by the CPU's features. */
    #if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
    #define CAFFELRP_WIDE \
        __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define CAFFELRP_WIDE
    #endif

    /* U = G g G^T in float64, rounded once, for n filters g = w + i*stride (3x3, row-major;
       flipped in both axes with flip), into out[xi*ld + i], xi = 6a + b. */
    CAFFELRP_WIDE static void caffelrp_wino_filters(const float *w, ptrdiff_t stride,
                                                    ptrdiff_t n, int flip, float *restrict out,
                                                    ptrdiff_t ld)
    {
        static const double G[6][3] = {
            {1.0 / 4, 0.0, 0.0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
            {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0.0, 0.0, 1.0}};
        /* blocks of 64 filters, written out row by row: the 36 output rows lie ld apart, often a
           power of two, and written one value at a time they evicted each other from the cache
           (8x slower) */
        float block[36][64];
        for (ptrdiff_t i0 = 0; i0 < n; i0 += 64) {
            const ptrdiff_t m = n - i0 < 64 ? n - i0 : 64;
            for (ptrdiff_t i = 0; i < m; i++) {
                const float *g = w + (i0 + i) * stride;
                double f[3][3], t[6][3];
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 3; c++)
                        f[r][c] = flip ? g[(2 - r) * 3 + (2 - c)] : g[r * 3 + c];
                for (int a = 0; a < 6; a++)
                    for (int c = 0; c < 3; c++)
                        t[a][c] = G[a][0] * f[0][c] + G[a][1] * f[1][c] + G[a][2] * f[2][c];
                for (int a = 0; a < 6; a++)
                    for (int b = 0; b < 6; b++)
                        block[6 * a + b][i] =
                            (float)(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
            }
            for (int xi = 0; xi < 36; xi++)
                memcpy(out + xi * ld + i0, block[xi], m * sizeof(float));
        }
    }

    /* V = B^T d B of input channel c for the T = rows*TW tiles of tile rows u0..u0+rows-1 (tile
       row q: image q / TH, tile row q % TH, of ceil(OW/4) = TW tiles). x: channel c of image 0,
       image n's plane at x + n*plane. Tile j of a tile row reads plane rows 4*ty - ph + 0..5 and
       columns 4j - pw + 0..5 (outside the plane: 0). d and v: work of 36 T floats each, element
       (r, t) of every tile at [(6r + t) T + tile], so that each step is one contiguous loop over
       the chunk's tiles; prow: 4 TW + 2 floats. Tile position xi = 6a + b goes to
       out[xi*ld + tile]. */
    CAFFELRP_WIDE static void caffelrp_wino_input(
            const float *x, ptrdiff_t plane, ptrdiff_t H, ptrdiff_t W, ptrdiff_t TH,
            ptrdiff_t TW, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t u0, ptrdiff_t rows,
            float *restrict prow, float *restrict d, float *restrict v, float *restrict out,
            ptrdiff_t ld)
    {
        const ptrdiff_t T = rows * TW, S = 6 * T, P = 4 * TW + 2;
        ptrdiff_t lo = pw > 0 ? pw : 0, hi = W + pw;   /* valid prow entries: [lo, hi) */
        if (hi > P) hi = P;
        if (hi < 0) hi = 0;
        if (lo > hi) lo = hi;
        for (ptrdiff_t rr = 0; rr < rows; rr++) {
            const ptrdiff_t q = u0 + rr, n = q / TH, ty = q - n * TH;
            const float *xp = x + n * plane;
            for (int r = 0; r < 6; r++) {
                const ptrdiff_t iy = 4 * ty - ph + r;
                float *restrict dr = d + r * S + rr * TW;
                if (iy < 0 || iy >= H || hi == lo) {
                    for (int t = 0; t < 6; t++)
                        memset(dr + t * T, 0, TW * sizeof(float));
                    continue;
                }
                memset(prow, 0, lo * sizeof(float));
                memcpy(prow + lo, xp + iy * W + (lo - pw), (hi - lo) * sizeof(float));
                memset(prow + hi, 0, (P - hi) * sizeof(float));
                for (int t = 0; t < 6; t++)
                    for (ptrdiff_t j = 0; j < TW; j++)
                        dr[t * T + j] = prow[4 * j + t];
            }
        }
        /* vertical: v[a] = sum_r B^T[a, r] d[r], for every column t of every tile at once */
        const float *d0 = d, *d1 = d + S, *d2 = d + 2 * S, *d3 = d + 3 * S, *d4 = d + 4 * S,
                    *d5 = d + 5 * S;
        #pragma GCC ivdep
        for (ptrdiff_t i = 0; i < S; i++) {
            v[i] = 4.0f * d0[i] - 5.0f * d2[i] + d4[i];
            v[S + i] = -4.0f * (d1[i] + d2[i]) + d3[i] + d4[i];
            v[2 * S + i] = 4.0f * (d1[i] - d2[i]) - d3[i] + d4[i];
            v[3 * S + i] = 2.0f * (d3[i] - d1[i]) - d2[i] + d4[i];
            v[4 * S + i] = 2.0f * (d1[i] - d3[i]) - d2[i] + d4[i];
            v[5 * S + i] = 4.0f * d1[i] - 5.0f * d3[i] + d5[i];
        }
        /* horizontal: V[6a + b] = sum_t v[a, t] B[t, b] */
        for (int a = 0; a < 6; a++) {
            const float *e0 = v + a * S, *e1 = e0 + T, *e2 = e1 + T, *e3 = e2 + T,
                        *e4 = e3 + T, *e5 = e4 + T;
            float *restrict o0 = out + (6 * a) * ld, *restrict o1 = o0 + ld,
                  *restrict o2 = o1 + ld, *restrict o3 = o2 + ld, *restrict o4 = o3 + ld,
                  *restrict o5 = o4 + ld;
            #pragma GCC ivdep
            for (ptrdiff_t i = 0; i < T; i++) {
                o0[i] = 4.0f * e0[i] - 5.0f * e2[i] + e4[i];
                o1[i] = -4.0f * (e1[i] + e2[i]) + e3[i] + e4[i];
                o2[i] = 4.0f * (e1[i] - e2[i]) - e3[i] + e4[i];
                o3[i] = 2.0f * (e3[i] - e1[i]) - e2[i] + e4[i];
                o4[i] = 2.0f * (e1[i] - e3[i]) - e2[i] + e4[i];
                o5[i] = 4.0f * e1[i] - 5.0f * e3[i] + e5[i];
            }
        }
    }

    /* Y = A^T M A + bias of output channel k for the T = rows*TW tiles of tile rows u0.. (as
       above): m[xi*ld + tile] holds the products at tile position xi. h (24 T) and o (16 T):
       work. y: channel k of image 0, image n's plane (OH x OW) at y + n*plane; only the rows and
       columns of a tile inside the plane are written. */
    CAFFELRP_WIDE static void caffelrp_wino_output(
            const float *m, ptrdiff_t ld, ptrdiff_t TH, ptrdiff_t TW, ptrdiff_t u0,
            ptrdiff_t rows, float bias, float *restrict h, float *restrict o, float *y,
            ptrdiff_t plane, ptrdiff_t OH, ptrdiff_t OW)
    {
        const ptrdiff_t T = rows * TW, S = 4 * T;
        /* horizontal: h[i, a] = sum_b M[6i + b] A[b, a], at h[(4i + a) T + tile] */
        for (int i = 0; i < 6; i++) {
            const float *m0 = m + (6 * i) * ld, *m1 = m0 + ld, *m2 = m1 + ld, *m3 = m2 + ld,
                        *m4 = m3 + ld, *m5 = m4 + ld;
            float *restrict h0 = h + i * S, *restrict h1 = h0 + T, *restrict h2 = h1 + T,
                  *restrict h3 = h2 + T;
            #pragma GCC ivdep
            for (ptrdiff_t j = 0; j < T; j++) {
                h0[j] = m0[j] + m1[j] + m2[j] + m3[j] + m4[j];
                h1[j] = m1[j] - m2[j] + 2.0f * (m3[j] - m4[j]);
                h2[j] = m1[j] + m2[j] + 4.0f * (m3[j] + m4[j]);
                h3[j] = m1[j] - m2[j] + 8.0f * (m3[j] - m4[j]) + m5[j];
            }
        }
        /* vertical: o[b, a] = sum_i A^T[b, i] h[i, a] + bias, at o[(4b + a) T + tile] */
        const float *g0 = h, *g1 = h + S, *g2 = h + 2 * S, *g3 = h + 3 * S, *g4 = h + 4 * S,
                    *g5 = h + 5 * S;
        #pragma GCC ivdep
        for (ptrdiff_t j = 0; j < S; j++) {
            o[j] = g0[j] + g1[j] + g2[j] + g3[j] + g4[j] + bias;
            o[S + j] = g1[j] - g2[j] + 2.0f * (g3[j] - g4[j]) + bias;
            o[2 * S + j] = g1[j] + g2[j] + 4.0f * (g3[j] + g4[j]) + bias;
            o[3 * S + j] = g1[j] - g2[j] + 8.0f * (g3[j] - g4[j]) + g5[j] + bias;
        }
        /* scatter the 4x4 blocks: row b of tile row rr, tile j, column a is
           o[(4b + a) T + rr*TW + j] */
        const ptrdiff_t full = OW / 4;
        for (ptrdiff_t rr = 0; rr < rows; rr++) {
            const ptrdiff_t q = u0 + rr, n = q / TH, ty = q - n * TH;
            const ptrdiff_t nrows = OH - 4 * ty < 4 ? OH - 4 * ty : 4;
            for (ptrdiff_t b = 0; b < nrows; b++) {
                float *restrict yr = y + n * plane + (4 * ty + b) * OW;
                const float *ob = o + 4 * b * T + rr * TW;
                for (ptrdiff_t j = 0; j < full; j++)
                    for (int a = 0; a < 4; a++)
                        yr[4 * j + a] = ob[a * T + j];
                for (ptrdiff_t col = 4 * full; col < OW; col++)
                    yr[col] = ob[(col & 3) * T + (col >> 2)];
            }
        }
    }
    """
    void caffelrp_wino_filters(const float* w, Py_ssize_t stride, Py_ssize_t n, int flip,
                               float* out, Py_ssize_t ld) noexcept nogil
    void caffelrp_wino_input(const float* x, Py_ssize_t plane, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t TH, Py_ssize_t TW, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t u0, Py_ssize_t rows, float* prow, float* d, float* v,
                             float* out, Py_ssize_t ld) noexcept nogil
    void caffelrp_wino_output(const float* m, Py_ssize_t ld, Py_ssize_t TH, Py_ssize_t TW,
                              Py_ssize_t u0, Py_ssize_t rows, float bias, float* h, float* o,
                              float* y, Py_ssize_t plane, Py_ssize_t OH,
                              Py_ssize_t OW) noexcept nogil


def filters(const float[:, :, :, ::1] w, float[:, :, ::1] u, bint adjoint, int num_threads=1):
    """The transformed filters U[xi, k, c] = (G w[k, c] G^T)[a, b], xi = 6a + b, of w (K, C, 3, 3)
    into u (36, K, C); with ``adjoint``, those of the backward-data pass into u (36, C, K): the
    filter flipped in both axes and the channels swapped (w[k, c, 2-s, 2-t] as filter (c, k)).
    Computed in float64, rounded once; each output row by one thread."""
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1], rows, cols, r
    if w.shape[2] != 3 or w.shape[3] != 3:
        raise ValueError("winograd filters: need (K, C, 3, 3) weights, got %s"
                         % ((w.shape[0], w.shape[1], w.shape[2], w.shape[3]),))
    rows, cols = (C, K) if adjoint else (K, C)
    if u.shape[0] != TILES or u.shape[1] != rows or u.shape[2] != cols:
        raise ValueError("winograd filters: output has shape %s, expected (36, %d, %d)"
                         % ((u.shape[0], u.shape[1], u.shape[2]), rows, cols))
    if K == 0 or C == 0:
        return
    if num_threads < 1:
        num_threads = 1
    cdef const float* wp = &w[0, 0, 0, 0]
    cdef float* up = &u[0, 0, 0]
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        if adjoint:     # row c: filters (k, c) for k = 0..K-1, 9*C floats apart
            caffelrp_wino_filters(wp + r * 9, 9 * C, K, 1, up + r * K, C * K)
        else:           # row k: filters (k, c) for c = 0..C-1, contiguous
            caffelrp_wino_filters(wp + r * C * 9, 9, C, 0, up + r * C, K * C)


cdef struct Plan:
    # one convolution: shapes, geometry and pointers shared by every chunk
    const float* x
    const float* u
    const float* bias
    float* y
    Py_ssize_t C, H, W, K, OH, OW, ph, pw, TH, TW, Tc


cdef inline void _input_job(const Plan* p, Py_ssize_t u0, Py_ssize_t rows, Py_ssize_t c,
                            float* v, float* wk) noexcept nogil:
    """Input channel c of the chunk's tile rows u0..u0+rows-1 into the chunk's V (36, C, Tc).
    wk: 72 Tc + 4 TW + 2 floats."""
    caffelrp_wino_input(p.x + c * p.H * p.W, p.C * p.H * p.W, p.H, p.W, p.TH, p.TW, p.ph, p.pw,
                        u0, rows, wk, wk + 4 * p.TW + 2, wk + 4 * p.TW + 2 + 36 * p.Tc,
                        v + c * p.Tc, p.C * p.Tc)


cdef inline void _product_job(const Plan* p, Py_ssize_t xi, Py_ssize_t tiles, const float* v,
                              float* m) noexcept nogil:
    """M_xi (K x tiles) = U_xi (K x C) @ V_xi (C x tiles): one sgemm, the same call whichever
    thread and schedule makes it."""
    _gemm_rm(<int>p.K, <int>tiles, <int>p.C, p.u + xi * p.K * p.C, <int>p.C, v + xi * p.C * p.Tc,
             <int>p.Tc, m + xi * p.K * p.Tc, <int>p.Tc)


cdef inline void _output_job(const Plan* p, Py_ssize_t u0, Py_ssize_t rows, Py_ssize_t k,
                             const float* m, float* wk) noexcept nogil:
    """Output channel k of the chunk's tile rows from its M (36, K, Tc), plus the bias."""
    caffelrp_wino_output(m + k * p.Tc, p.K * p.Tc, p.TH, p.TW, u0, rows, p.bias[k], wk,
                         wk + 24 * p.Tc, p.y + k * p.OH * p.OW, p.K * p.OH * p.OW, p.OH, p.OW)


cdef void _whole_chunk(const Plan* p, Py_ssize_t u0, Py_ssize_t rows, float* v, float* m,
                       float* wk) noexcept nogil:
    """One chunk on the calling thread."""
    cdef Py_ssize_t c, xi, k
    for c in range(p.C):
        _input_job(p, u0, rows, c, v, wk)
    for xi in range(TILES):
        _product_job(p, xi, rows * p.TW, v, m)
    for k in range(p.K):
        _output_job(p, u0, rows, k, m, wk)


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
    cdef Py_ssize_t TH, TW, units, Tc, per_thread, vsize, msize, chunks, slots
    cdef Py_ssize_t ci, u0, rows, c, k, xi
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
    per_thread = 72 * Tc + 4 * TW + 2   # input: prow, d, v; output: h, o (40 Tc)
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
        for c in prange(C, nogil=True, schedule="static", num_threads=num_threads):
            _input_job(&plan, u0, rows, c, vb, &work[threadid(), 0])
        for xi in prange(TILES, nogil=True, schedule="static", num_threads=num_threads):
            _product_job(&plan, xi, rows * TW, vb, mb)
        for k in prange(K, nogil=True, schedule="static", num_threads=num_threads):
            _output_job(&plan, u0, rows, k, mb, &work[threadid(), 0])
