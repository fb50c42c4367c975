/* A fused GroupNorm + SiLU CPU kernel for inference: the issue-22 experiment behind BENCHMARKS.md's fusion bound.
 *
 * y = silu(group_norm(x) * weight + bias) for a bf16 channels_last [N, C, H, W] activation (memory order
 * [N, H*W, C]) with fp32 affine parameters, the layout and dtypes of litevae-b's eager bf16 channels_last
 * forward. Two passes over x, as many as ATen's GroupNorm alone (the separate SiLU's read and write are gone):
 *   1. per-channel sum and sum of squares over pixel chunks (fp32), combined per group in double, giving each
 *      channel's scale = rstd * weight and shift = bias - mean * scale (the E[x^2] - E[x]^2 form of ATen's
 *      channels_last CPU kernel);
 *   2. v = x * scale + shift, y = v / (1 + exp(-v)) in fp32, rounded once to bf16 (ATen rounds twice: after
 *      the norm and after the SiLU). exp(-v) = 2^k * 2^f with 2^f as its degree-5 Taylor polynomial on
 *      |f| <= 1/2 (relative error ~2e-6) and 1 / (1 + e) as rcp14 (relative error <= 2^-14), both far below
 *      bf16's 2^-9, so y is within one bf16 unit of the exact value (tests/test_gn_silu_kernel.py). Cutting the
 *      clamps, the Newton step and a multiply made the kernel ~25% faster than the first version.
 * AVX-512 BF16 only (the CPU of these measurements); built at run time by gn_silu_kernel.py. Not used by the
 * toolkit: a measured experiment, not a product path.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
enum { CHUNK = 256 };  /* pixels per work item */

TARGET static inline __m512 load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

TARGET static inline __m512 silu16(__m512 v) {
    __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(-1.44269504f));           /* exp(-v) = 2^z = 2^k 2^f */
    __m512 k = _mm512_roundscale_ps(z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(z, k);
    __m512 p = _mm512_fmadd_ps(f, _mm512_set1_ps(1.3333558e-3f), _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(f, p, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(f, p, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(f, p, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(f, p, _mm512_set1_ps(1.f));
    __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, k), _mm512_set1_ps(1.f));
    return _mm512_mul_ps(v, _mm512_rcp14_ps(d));
}

/* Returns 0, or -1 when C is not a multiple of 16 or of G, or scratch memory is short. */
TARGET int gn_silu_bf16(const uint16_t *x, uint16_t *y, const float *weight, const float *bias, int N, int HW,
                        int C, int G, float eps) {
    if (C % 16 || C % G) return -1;
    const int cg = C / G, cv_n = C / 16, chunks = (HW + CHUNK - 1) / CHUNK;
    float *part = malloc(sizeof(float) * 2 * (size_t)N * chunks * C);
    float *affine = malloc(sizeof(float) * 2 * (size_t)N * C);
    if (!part || !affine) { free(part); free(affine); return -1; }
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int j = 0; j < chunks; j++) {
            float *s = part + (size_t)(n * chunks + j) * 2 * C, *q = s + C;
            const int p1 = (j + 1) * CHUNK < HW ? (j + 1) * CHUNK : HW;
            for (int cv = 0; cv < cv_n; cv++) {
                __m512 as = _mm512_setzero_ps(), aq = _mm512_setzero_ps();
                for (int p = j * CHUNK; p < p1; p++) {
                    __m512 v = load_bf16(x + ((size_t)n * HW + p) * C + cv * 16);
                    as = _mm512_add_ps(as, v);
                    aq = _mm512_fmadd_ps(v, v, aq);
                }
                _mm512_storeu_ps(s + cv * 16, as);
                _mm512_storeu_ps(q + cv * 16, aq);
            }
        }
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            double sum = 0, sq = 0;
            for (int j = 0; j < chunks; j++) {
                const float *s = part + (size_t)(n * chunks + j) * 2 * C;
                for (int c = g * cg; c < (g + 1) * cg; c++) { sum += s[c]; sq += s[C + c]; }
            }
            const double count = (double)HW * cg, mean = sum / count;
            const double var = sq / count - mean * mean > 0 ? sq / count - mean * mean : 0;
            const float rstd = (float)(1.0 / sqrt(var + eps));
            for (int c = g * cg; c < (g + 1) * cg; c++) {
                const float scale = rstd * weight[c];
                affine[(size_t)n * 2 * C + c] = scale;
                affine[(size_t)n * 2 * C + C + c] = bias[c] - (float)mean * scale;
            }
        }
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int j = 0; j < chunks; j++) {
            const float *scale = affine + (size_t)n * 2 * C, *shift = scale + C;
            const int p1 = (j + 1) * CHUNK < HW ? (j + 1) * CHUNK : HW;
            for (int p = j * CHUNK; p < p1; p++)
                for (int cv = 0; cv < cv_n; cv++) {
                    const size_t o = ((size_t)n * HW + p) * C + cv * 16;
                    __m512 v = _mm512_fmadd_ps(load_bf16(x + o), _mm512_loadu_ps(scale + cv * 16),
                                               _mm512_loadu_ps(shift + cv * 16));
                    _mm256_storeu_si256((__m256i *)(y + o), (__m256i)_mm512_cvtneps_pbh(silu16(v)));
                }
        }
    free(part);
    free(affine);
    return 0;
}
