// OnnxDecoder's CPU kernels, registered with ONNX Runtime as a custom-op library (domain ai.onnxdecoder.cpu, CPU EP).
// The runtime swaps them into its in-memory form of an export (the file stays standard ONNX); every op here computes what
// the nodes it replaces compute, so a graph without them is the reference.
//
// MatMulNBits takes com.microsoft MatMulNBits's inputs and attributes (restricted to block 32, 4 or 8 bits, no zero
// points, no g_idx, no bias) so the runtime can swap the domain of an exported node and keep its initializers. It computes
// what MatMulNBits computes with accuracy_level 4:
//   A  [..., K] float      rows m = 0 .. M-1 (every leading dimension folded into M)
//   B  [N, KB, 32*bits/8]  uint8, KB = ceil(K / 32); 4 bits: byte j of a block holds element 2j (low nibble), 2j+1 (high)
//   scales [N * KB] float  (or [N, KB])
//   Y  [..., N] float
// Each 32-wide block of a row of A (zero-padded past K) becomes int8: inv = 127 / max|a| (0 for an all-zero block),
// q = round-half-even(a * inv), scale_a = max|a| / 127; then
//   Y[m, n] = sum_b scale_w[n, b] * scale_a[m, b] * sum_i (w_i - zero_point) * q_i,   zero_point 8 (4 bits) or 128 (8 bits).
// The inner sums are exact integers; only the per-block float accumulation differs between code paths (order of adds).
//
// SplitRotaryQkv and SiluMul fuse the three-kernel patterns around a decoder layer's attention and MLP (see each below):
// on small models every kernel launch is a measurable part of a decode step.
//
// Code paths: AVX-512BW, AVX2 (+FMA) and portable C, chosen once from the CPU (or forced by the node's "isa" attribute).
// Threads: ONNX Runtime's intra-op pool through KernelContext_ParallelFor.
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#include "onnxruntime_c_api.h"

#define EXPORT __attribute__((visibility("default")))
#define BLOCK 32
#define ROWS_PER_TASK 16
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))

static const OrtApi* g_ort;

typedef enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512BW = 2 } Isa;
static const char* const kIsaNames[] = {"scalar", "avx2", "avx512bw"};

static Isa detect_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma")) return ISA_AVX512BW;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
    return ISA_SCALAR;
}

EXPORT const char* OnnxDecoderKernelsIsa(void) { return kIsaNames[detect_isa()]; }

// ---------------------------------------------------------------------------------------------------------------------
// Quantized activations. Per row m, laid out for the 4-bit kernels in quads of 4 blocks (QG = ceil(KB / 4) quads):
//   q4    [QG][128] int8   bytes 0..63: block t's even elements at t*16 + j; bytes 64..127: its odd elements
//   sexp  [QG][16] float   scale_a of block t in lanes 4t .. 4t+3 (0 for padding blocks)
//   corr  [QG][16] int32   2 * sum(q of block t) in lanes 4t .. 4t+3: four lanes subtract 8 * sum(q), the zero point's part
// and for the 8-bit kernels per block (KB blocks):
//   q16   [KB][32] int16, sa [KB] float, qsum [KB] int32
// ---------------------------------------------------------------------------------------------------------------------
typedef struct
{
    int64_t M, N, K, KB, QG;
    int bits;
    Isa isa;
    const float* a;         // [M, K]
    const uint8_t* b;       // [N, KB, 16 or 32]
    const float* sw;        // [N, KB]
    float* y;               // [M, N]
    int8_t* q4;             // [M][QG][128]
    float* sexp;            // [M][QG][16]
    int32_t* corr;          // [M][QG][16]
    int16_t* q16;           // [M][KB][32]
    float* sa;              // [M][KB]
    int32_t* qsum;          // [M][KB]
} MatMulJob;

// One block of 32 values of a (count valid, rest zero) to int8; returns scale_a and the sum of q.
static void quantize_block_scalar(const float* a, int count, int8_t q[BLOCK], float* scale, int32_t* sum)
{
    float amax = 0.0f;
    for (int i = 0; i < count; i++) amax = fmaxf(amax, fabsf(a[i]));
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t total = 0;
    for (int i = 0; i < BLOCK; i++)
    {
        int v = i < count ? (int)lrintf(a[i] * inv) : 0;
        v = v > 127 ? 127 : v < -127 ? -127 : v;
        q[i] = (int8_t)v;
        total += v;
    }
    *scale = amax / 127.0f;
    *sum = total;
}

TARGET_AVX512 static void quantize_block_avx512(const float* a, int count, int8_t q[BLOCK], float* scale, int32_t* sum)
{
    __mmask16 m0 = count >= 16 ? 0xFFFF : (__mmask16)((1u << count) - 1);
    __mmask16 m1 = count >= 32 ? 0xFFFF : count <= 16 ? 0 : (__mmask16)((1u << (count - 16)) - 1);
    __m512 x0 = _mm512_maskz_loadu_ps(m0, a), x1 = _mm512_maskz_loadu_ps(m1, a + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, inv)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, inv));
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    i0 = _mm512_max_epi32(_mm512_min_epi32(i0, lim), nlim);
    i1 = _mm512_max_epi32(_mm512_min_epi32(i1, lim), nlim);
    _mm_storeu_si128((__m128i*)q, _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i*)(q + 16), _mm512_cvtepi32_epi8(i1));
    *scale = amax / 127.0f;
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
}

TARGET_AVX2 static float hmax256(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

TARGET_AVX2 static int32_t hsum256i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

TARGET_AVX2 static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TARGET_AVX2 static void quantize_block_avx2(const float* a, int count, int8_t q[BLOCK], float* scale, int32_t* sum)
{
    if (count < BLOCK) { quantize_block_scalar(a, count, q, scale, sum); return; }
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    __m256 x[4], m = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) { x[i] = _mm256_loadu_ps(a + 8 * i); m = _mm256_max_ps(m, _mm256_andnot_ps(signbit, x[i])); }
    float amax = hmax256(m);
    __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i total = _mm256_setzero_si256();
    int32_t lanes[BLOCK];
    for (int i = 0; i < 4; i++)
    {
        __m256i v = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x[i], inv)), lim), nlim);
        total = _mm256_add_epi32(total, v);
        _mm256_storeu_si256((__m256i*)(lanes + 8 * i), v);
    }
    for (int i = 0; i < BLOCK; i++) q[i] = (int8_t)lanes[i];
    *scale = amax / 127.0f;
    *sum = hsum256i(total);
}

// Quantizes row m of A into the job's layout for its bit width.
static void quantize_row(const MatMulJob* job, int64_t m)
{
    const float* row = job->a + m * job->K;
    for (int64_t block = 0; block < job->KB; block++)
    {
        int64_t start = block * BLOCK;
        int count = (int)(job->K - start < BLOCK ? job->K - start : BLOCK);
        int8_t q[BLOCK];
        float scale;
        int32_t sum;
        if (job->isa == ISA_AVX512BW) quantize_block_avx512(row + start, count, q, &scale, &sum);
        else if (job->isa == ISA_AVX2) quantize_block_avx2(row + start, count, q, &scale, &sum);
        else quantize_block_scalar(row + start, count, q, &scale, &sum);
        if (job->bits == 4)
        {
            int64_t quad = block / 4, t = block % 4;
            int8_t* dst = job->q4 + (m * job->QG + quad) * 128;
            for (int j = 0; j < 16; j++) { dst[t * 16 + j] = q[2 * j]; dst[64 + t * 16 + j] = q[2 * j + 1]; }
            float* sexp = job->sexp + (m * job->QG + quad) * 16;
            int32_t* corr = job->corr + (m * job->QG + quad) * 16;
            for (int lane = 0; lane < 4; lane++) { sexp[4 * t + lane] = scale; corr[4 * t + lane] = 2 * sum; }
        }
        else
        {
            int16_t* dst = job->q16 + (m * job->KB + block) * BLOCK;
            for (int i = 0; i < BLOCK; i++) dst[i] = q[i];
            job->sa[m * job->KB + block] = scale;
            job->qsum[m * job->KB + block] = sum;
        }
    }
    if (job->bits == 4)
    {
        // Padding blocks of the last quad: q, scale and correction zero, so whatever their weight bytes hold adds nothing.
        for (int64_t block = job->KB; block < job->QG * 4; block++)
        {
            int64_t quad = block / 4, t = block % 4;
            int8_t* dst = job->q4 + (m * job->QG + quad) * 128;
            for (int j = 0; j < 16; j++) { dst[t * 16 + j] = 0; dst[64 + t * 16 + j] = 0; }
            for (int lane = 0; lane < 4; lane++)
            {
                job->sexp[(m * job->QG + quad) * 16 + 4 * t + lane] = 0.0f;
                job->corr[(m * job->QG + quad) * 16 + 4 * t + lane] = 0;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// 4 bits, portable C: one output at a time, block by block.
// ---------------------------------------------------------------------------------------------------------------------
static float q4_dot_scalar(const MatMulJob* job, int64_t n, int64_t m, int64_t first_block)
{
    const uint8_t* wrow = job->b + n * job->KB * 16;
    const float* srow = job->sw + n * job->KB;
    float acc = 0.0f;
    for (int64_t block = first_block; block < job->KB; block++)
    {
        int64_t quad = block / 4, t = block % 4;
        const int8_t* q = job->q4 + (m * job->QG + quad) * 128;
        const uint8_t* w = wrow + block * 16;
        int32_t dot = 0;
        for (int j = 0; j < 16; j++) dot += (w[j] & 0x0F) * q[t * 16 + j] + (w[j] >> 4) * q[64 + t * 16 + j];
        int32_t zero_point_part = 4 * job->corr[(m * job->QG + quad) * 16 + 4 * t]; // 4 lanes x 2 * sum(q)
        acc += srow[block] * job->sexp[(m * job->QG + quad) * 16 + 4 * t] * (float)(dot - zero_point_part);
    }
    return acc;
}

static void q4_rows_scalar(const MatMulJob* job, int64_t n0, int64_t n1)
{
    for (int64_t n = n0; n < n1; n++)
        for (int64_t m = 0; m < job->M; m++) job->y[m * job->N + n] = q4_dot_scalar(job, n, m, 0);
}

// ---------------------------------------------------------------------------------------------------------------------
// 4 bits, AVX-512BW: a tile of R rows of B x MT rows of A; one quad (4 blocks, 64 weight bytes) per 512-bit load.
// maddubs pairs unsigned nibbles (0..15) with signed q: |15 * 127 * 2| fits int16, so no saturation. Full quads run
// unmasked; the last quad, when K leaves it partial, loads only its blocks' bytes and scales.
// ---------------------------------------------------------------------------------------------------------------------
TARGET_AVX512 static ALWAYS_INLINE __m512 q4_quad_avx512(__m512i w, __m512 sw, const MatMulJob* job, int64_t row, __m512 acc)
{
    const __m512i low4 = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi16(1);
    const int8_t* q = job->q4 + row * 128;
    __m512i lo = _mm512_and_si512(w, low4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low4);
    __m512i s16 = _mm512_add_epi16(_mm512_maddubs_epi16(lo, _mm512_loadu_si512(q)), _mm512_maddubs_epi16(hi, _mm512_loadu_si512(q + 64)));
    __m512i dot = _mm512_sub_epi32(_mm512_madd_epi16(s16, ones), _mm512_loadu_si512(job->corr + row * 16));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sw, _mm512_loadu_ps(job->sexp + row * 16)), acc);
}

TARGET_AVX512 static ALWAYS_INLINE void q4_tile_avx512(const MatMulJob* job, int64_t n0, int64_t m0, const int R, const int MT)
{
    const __m512i by_block = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const int64_t QG = job->QG, KB = job->KB;
    const int tail_blocks = (int)(KB - (QG - 1) * 4); // 1..4 blocks in the last quad
    const int64_t full_quads = tail_blocks == 4 ? QG : QG - 1;
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) acc[r][t] = _mm512_setzero_ps();
    const uint8_t* wrow = job->b + n0 * KB * 16;
    const float* srow = job->sw + n0 * KB;
    for (int64_t g = 0; g < full_quads; g++)
        for (int r = 0; r < R; r++)
        {
            __m512i w = _mm512_loadu_si512(wrow + (r * KB + g * 4) * 16);
            __m512 sw = _mm512_permutexvar_ps(by_block, _mm512_castps128_ps512(_mm_loadu_ps(srow + r * KB + g * 4)));
            for (int t = 0; t < MT; t++) acc[r][t] = q4_quad_avx512(w, sw, job, (m0 + t) * QG + g, acc[r][t]);
        }
    if (full_quads < QG)
    {
        const int64_t g = QG - 1;
        const __mmask64 bytes = ((__mmask64)1 << (tail_blocks * 16)) - 1;
        const __mmask16 scales = (__mmask16)((1u << tail_blocks) - 1);
        for (int r = 0; r < R; r++)
        {
            __m512i w = _mm512_maskz_loadu_epi8(bytes, wrow + (r * KB + g * 4) * 16);
            __m512 sw = _mm512_permutexvar_ps(by_block, _mm512_maskz_loadu_ps(scales, srow + r * KB + g * 4));
            for (int t = 0; t < MT; t++) acc[r][t] = q4_quad_avx512(w, sw, job, (m0 + t) * QG + g, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) job->y[(m0 + t) * job->N + n0 + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define Q4_AVX512_TILE(R, MT) TARGET_AVX512 static void q4_tile_avx512_##R##x##MT(const MatMulJob* j, int64_t n, int64_t m) \
    { q4_tile_avx512(j, n, m, R, MT); }
Q4_AVX512_TILE(4, 1) Q4_AVX512_TILE(4, 2) Q4_AVX512_TILE(4, 3) Q4_AVX512_TILE(4, 4)
Q4_AVX512_TILE(1, 1) Q4_AVX512_TILE(1, 2) Q4_AVX512_TILE(1, 3) Q4_AVX512_TILE(1, 4)

typedef void (*TileFn)(const MatMulJob*, int64_t, int64_t);

static void run_tiles(const MatMulJob* job, int64_t n0, int64_t n1, const TileFn wide[4], const TileFn narrow[4])
{
    for (int64_t n = n0; n < n1;)
    {
        const TileFn* fns = n1 - n >= 4 ? wide : narrow;
        int64_t rows = n1 - n >= 4 ? 4 : 1;
        for (int64_t m = 0; m < job->M; m += 4)
        {
            int64_t left = job->M - m;
            fns[(left >= 4 ? 4 : left) - 1](job, n, m);
        }
        n += rows;
    }
}

static void q4_rows_avx512(const MatMulJob* job, int64_t n0, int64_t n1)
{
    static const TileFn wide[4] = {q4_tile_avx512_4x1, q4_tile_avx512_4x2, q4_tile_avx512_4x3, q4_tile_avx512_4x4};
    static const TileFn narrow[4] = {q4_tile_avx512_1x1, q4_tile_avx512_1x2, q4_tile_avx512_1x3, q4_tile_avx512_1x4};
    run_tiles(job, n0, n1, wide, narrow);
}

// ---------------------------------------------------------------------------------------------------------------------
// 4 bits, AVX2: the same tile, each quad as two 256-bit halves of two blocks; a partial last quad goes to the C path.
// ---------------------------------------------------------------------------------------------------------------------
TARGET_AVX2 static ALWAYS_INLINE void q4_tile_avx2(const MatMulJob* job, int64_t n0, int64_t m0, const int R, const int MT)
{
    const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i by_block = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
    const int64_t QG = job->QG, KB = job->KB;
    const int64_t full_quads = KB / 4;
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < full_quads; g++)
        for (int half = 0; half < 2; half++)
            for (int r = 0; r < R; r++)
            {
                const uint8_t* wq = job->b + ((n0 + r) * KB + g * 4 + half * 2) * 16;
                __m256i w = _mm256_loadu_si256((const __m256i*)wq);
                __m256i lo = _mm256_and_si256(w, low4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);
                const float* s2 = job->sw + (n0 + r) * KB + g * 4 + half * 2;
                __m256 sw = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd((const double*)s2))), by_block);
                for (int t = 0; t < MT; t++)
                {
                    int64_t row = (m0 + t) * QG + g;
                    const int8_t* q = job->q4 + row * 128 + half * 32;
                    __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)q)),
                                                   _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q + 64))));
                    __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones),
                                                   _mm256_loadu_si256((const __m256i*)(job->corr + row * 16 + half * 8)));
                    __m256 scale = _mm256_mul_ps(sw, _mm256_loadu_ps(job->sexp + row * 16 + half * 8));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r][t]);
                }
            }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++)
        {
            float tail = full_quads * 4 < KB ? q4_dot_scalar(job, n0 + r, m0 + t, full_quads * 4) : 0.0f;
            job->y[(m0 + t) * job->N + n0 + r] = hsum256(acc[r][t]) + tail;
        }
}

#define Q4_AVX2_TILE(R, MT) TARGET_AVX2 static void q4_tile_avx2_##R##x##MT(const MatMulJob* j, int64_t n, int64_t m) \
    { q4_tile_avx2(j, n, m, R, MT); }
Q4_AVX2_TILE(4, 1) Q4_AVX2_TILE(4, 2) Q4_AVX2_TILE(4, 3) Q4_AVX2_TILE(4, 4)
Q4_AVX2_TILE(1, 1) Q4_AVX2_TILE(1, 2) Q4_AVX2_TILE(1, 3) Q4_AVX2_TILE(1, 4)

static void q4_rows_avx2(const MatMulJob* job, int64_t n0, int64_t n1)
{
    static const TileFn wide[4] = {q4_tile_avx2_4x1, q4_tile_avx2_4x2, q4_tile_avx2_4x3, q4_tile_avx2_4x4};
    static const TileFn narrow[4] = {q4_tile_avx2_1x1, q4_tile_avx2_1x2, q4_tile_avx2_1x3, q4_tile_avx2_1x4};
    run_tiles(job, n0, n1, wide, narrow);
}

// ---------------------------------------------------------------------------------------------------------------------
// 8 bits: weights widened to int16 and multiplied with int16 q (madd: exact int32), minus 128 * sum(q) per block.
// ---------------------------------------------------------------------------------------------------------------------
static float q8_dot_scalar(const MatMulJob* job, int64_t n, int64_t m)
{
    const uint8_t* wrow = job->b + n * job->KB * 32;
    const float* srow = job->sw + n * job->KB;
    float acc = 0.0f;
    for (int64_t block = 0; block < job->KB; block++)
    {
        const int16_t* q = job->q16 + (m * job->KB + block) * BLOCK;
        const uint8_t* w = wrow + block * 32;
        int32_t dot = 0;
        for (int i = 0; i < BLOCK; i++) dot += w[i] * q[i];
        dot -= 128 * job->qsum[m * job->KB + block];
        acc += srow[block] * job->sa[m * job->KB + block] * (float)dot;
    }
    return acc;
}

static void q8_rows_scalar(const MatMulJob* job, int64_t n0, int64_t n1)
{
    for (int64_t n = n0; n < n1; n++)
        for (int64_t m = 0; m < job->M; m++) job->y[m * job->N + n] = q8_dot_scalar(job, n, m);
}

TARGET_AVX512 static ALWAYS_INLINE void q8_tile_avx512(const MatMulJob* job, int64_t n0, int64_t m0, const int R, const int MT)
{
    const int64_t KB = job->KB;
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t block = 0; block < KB; block++)
        for (int r = 0; r < R; r++)
        {
            __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(job->b + ((n0 + r) * KB + block) * 32)));
            float sw = job->sw[(n0 + r) * KB + block];
            for (int t = 0; t < MT; t++)
            {
                int64_t at = (m0 + t) * KB + block;
                __m512i dot = _mm512_sub_epi32(_mm512_madd_epi16(w, _mm512_loadu_si512(job->q16 + at * BLOCK)),
                                               _mm512_set1_epi32(8 * job->qsum[at])); // 16 lanes x 8 = 128 * sum(q)
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(sw * job->sa[at]), acc[r][t]);
            }
        }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) job->y[(m0 + t) * job->N + n0 + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define Q8_AVX512_TILE(R, MT) TARGET_AVX512 static void q8_tile_avx512_##R##x##MT(const MatMulJob* j, int64_t n, int64_t m) \
    { q8_tile_avx512(j, n, m, R, MT); }
Q8_AVX512_TILE(4, 1) Q8_AVX512_TILE(4, 2) Q8_AVX512_TILE(4, 3) Q8_AVX512_TILE(4, 4)
Q8_AVX512_TILE(1, 1) Q8_AVX512_TILE(1, 2) Q8_AVX512_TILE(1, 3) Q8_AVX512_TILE(1, 4)

static void q8_rows_avx512(const MatMulJob* job, int64_t n0, int64_t n1)
{
    static const TileFn wide[4] = {q8_tile_avx512_4x1, q8_tile_avx512_4x2, q8_tile_avx512_4x3, q8_tile_avx512_4x4};
    static const TileFn narrow[4] = {q8_tile_avx512_1x1, q8_tile_avx512_1x2, q8_tile_avx512_1x3, q8_tile_avx512_1x4};
    run_tiles(job, n0, n1, wide, narrow);
}

TARGET_AVX2 static ALWAYS_INLINE void q8_tile_avx2(const MatMulJob* job, int64_t n0, int64_t m0, const int R, const int MT)
{
    const int64_t KB = job->KB;
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t block = 0; block < KB; block++)
        for (int r = 0; r < R; r++)
        {
            const uint8_t* wb = job->b + ((n0 + r) * KB + block) * 32;
            __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)wb));
            __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(wb + 16)));
            float sw = job->sw[(n0 + r) * KB + block];
            for (int t = 0; t < MT; t++)
            {
                int64_t at = (m0 + t) * KB + block;
                const int16_t* q = job->q16 + at * BLOCK;
                __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i*)q)),
                                               _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i*)(q + 16))));
                dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(16 * job->qsum[at])); // 8 lanes x 16 = 128 * sum(q)
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(sw * job->sa[at]), acc[r][t]);
            }
        }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < MT; t++) job->y[(m0 + t) * job->N + n0 + r] = hsum256(acc[r][t]);
}

#define Q8_AVX2_TILE(R, MT) TARGET_AVX2 static void q8_tile_avx2_##R##x##MT(const MatMulJob* j, int64_t n, int64_t m) \
    { q8_tile_avx2(j, n, m, R, MT); }
Q8_AVX2_TILE(4, 1) Q8_AVX2_TILE(4, 2) Q8_AVX2_TILE(4, 3) Q8_AVX2_TILE(4, 4)
Q8_AVX2_TILE(1, 1) Q8_AVX2_TILE(1, 2) Q8_AVX2_TILE(1, 3) Q8_AVX2_TILE(1, 4)

static void q8_rows_avx2(const MatMulJob* job, int64_t n0, int64_t n1)
{
    static const TileFn wide[4] = {q8_tile_avx2_4x1, q8_tile_avx2_4x2, q8_tile_avx2_4x3, q8_tile_avx2_4x4};
    static const TileFn narrow[4] = {q8_tile_avx2_1x1, q8_tile_avx2_1x2, q8_tile_avx2_1x3, q8_tile_avx2_1x4};
    run_tiles(job, n0, n1, wide, narrow);
}

// ---------------------------------------------------------------------------------------------------------------------
// Parallel tasks
// ---------------------------------------------------------------------------------------------------------------------
static void matmul_task(void* data, size_t index)
{
    const MatMulJob* job = (const MatMulJob*)data;
    int64_t n0 = (int64_t)index * ROWS_PER_TASK;
    int64_t n1 = n0 + ROWS_PER_TASK < job->N ? n0 + ROWS_PER_TASK : job->N;
    if (job->bits == 4)
    {
        if (job->isa == ISA_AVX512BW) q4_rows_avx512(job, n0, n1);
        else if (job->isa == ISA_AVX2) q4_rows_avx2(job, n0, n1);
        else q4_rows_scalar(job, n0, n1);
    }
    else
    {
        if (job->isa == ISA_AVX512BW) q8_rows_avx512(job, n0, n1);
        else if (job->isa == ISA_AVX2) q8_rows_avx2(job, n0, n1);
        else q8_rows_scalar(job, n0, n1);
    }
}

static void quantize_task(void* data, size_t index) { quantize_row((const MatMulJob*)data, (int64_t)index); }

// ---------------------------------------------------------------------------------------------------------------------
// The custom op
// ---------------------------------------------------------------------------------------------------------------------
typedef struct
{
    int64_t K, N, KB;
    int bits;
    Isa isa;
    OrtMemoryInfo* cpu_memory;
} MatMulKernel;

static OrtStatus* fail(const char* message) { return g_ort->CreateStatus(ORT_INVALID_ARGUMENT, message); }

static OrtStatus* read_int_attribute(const OrtKernelInfo* info, const char* name, int64_t* value)
{
    OrtStatus* status = g_ort->KernelInfoGetAttribute_int64(info, name, value);
    if (status == NULL) return NULL;
    g_ort->ReleaseStatus(status);
    char message[160];
    snprintf(message, sizeof message, "ai.onnxdecoder.cpu MatMulNBits: the node has no integer attribute '%s'", name);
    return fail(message);
}

static OrtStatus* read_isa(const OrtKernelInfo* info, const char* op, Isa* isa);

static OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out)
{
    (void)op;
    (void)api;
    int64_t K, N, bits, block_size;
    OrtStatus* status;
    if ((status = read_int_attribute(info, "K", &K)) || (status = read_int_attribute(info, "N", &N)) ||
        (status = read_int_attribute(info, "bits", &bits)) || (status = read_int_attribute(info, "block_size", &block_size)))
        return status;
    char message[256];
    if (bits != 4 && bits != 8) return fail("ai.onnxdecoder.cpu MatMulNBits: attribute 'bits' must be 4 or 8");
    if (block_size != BLOCK) return fail("ai.onnxdecoder.cpu MatMulNBits: attribute 'block_size' must be 32");
    if (K <= 0 || N <= 0 || K > INT32_MAX || N > INT32_MAX)
    {
        snprintf(message, sizeof message, "ai.onnxdecoder.cpu MatMulNBits: K = %lld and N = %lld must be in 1 .. 2^31 - 1",
                 (long long)K, (long long)N);
        return fail(message);
    }
    Isa isa;
    if ((status = read_isa(info, "MatMulNBits", &isa)) != NULL) return status;
    MatMulKernel* kernel = (MatMulKernel*)calloc(1, sizeof *kernel);
    if (kernel == NULL) return g_ort->CreateStatus(ORT_FAIL, "ai.onnxdecoder.cpu MatMulNBits: out of memory");
    kernel->K = K;
    kernel->N = N;
    kernel->KB = (K + BLOCK - 1) / BLOCK;
    kernel->bits = (int)bits;
    kernel->isa = isa;
    if ((status = g_ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &kernel->cpu_memory)) != NULL)
    {
        free(kernel);
        return status;
    }
    *out = kernel;
    return NULL;
}

static void ORT_API_CALL destroy_kernel(void* data)
{
    MatMulKernel* kernel = (MatMulKernel*)data;
    if (kernel == NULL) return;
    if (kernel->cpu_memory != NULL) g_ort->ReleaseMemoryInfo(kernel->cpu_memory);
    free(kernel);
}

static int64_t element_count(const OrtValue* value, OrtStatus** status)
{
    OrtTensorTypeAndShapeInfo* shape = NULL;
    size_t count = 0;
    if ((*status = g_ort->GetTensorTypeAndShape(value, &shape)) != NULL) return -1;
    *status = g_ort->GetTensorShapeElementCount(shape, &count);
    g_ort->ReleaseTensorTypeAndShapeInfo(shape);
    return *status != NULL ? -1 : (int64_t)count;
}

// a * b + c with overflow refused (sizes of the scratch buffer come from tensor shapes).
static int checked_mul_add(int64_t a, int64_t b, int64_t c, int64_t* out)
{
    int64_t product;
    if (__builtin_mul_overflow(a, b, &product) || __builtin_add_overflow(product, c, out)) return 0;
    return 1;
}

static OrtStatus* ORT_API_CALL compute(void* data, OrtKernelContext* context)
{
    const MatMulKernel* kernel = (const MatMulKernel*)data;
    const OrtValue *a_value, *b_value, *s_value;
    OrtStatus* status;
    if ((status = g_ort->KernelContext_GetInput(context, 0, &a_value)) || (status = g_ort->KernelContext_GetInput(context, 1, &b_value)) ||
        (status = g_ort->KernelContext_GetInput(context, 2, &s_value)))
        return status;
    if (a_value == NULL || b_value == NULL || s_value == NULL)
        return fail("ai.onnxdecoder.cpu MatMulNBits: inputs A, B and scales are required");

    OrtTensorTypeAndShapeInfo* a_shape;
    if ((status = g_ort->GetTensorTypeAndShape(a_value, &a_shape)) != NULL) return status;
    size_t rank = 0;
    int64_t dims[16];
    status = g_ort->GetDimensionsCount(a_shape, &rank);
    if (status == NULL && (rank < 1 || rank > 16)) status = fail("ai.onnxdecoder.cpu MatMulNBits: A must have rank 1 to 16");
    if (status == NULL) status = g_ort->GetDimensions(a_shape, dims, rank);
    g_ort->ReleaseTensorTypeAndShapeInfo(a_shape);
    if (status != NULL) return status;
    char message[256];
    if (dims[rank - 1] != kernel->K)
    {
        snprintf(message, sizeof message, "ai.onnxdecoder.cpu MatMulNBits: A's last dimension is %lld but attribute K is %lld",
                 (long long)dims[rank - 1], (long long)kernel->K);
        return fail(message);
    }
    int64_t M = 1;
    for (size_t i = 0; i + 1 < rank; i++)
        if (dims[i] < 0 || __builtin_mul_overflow(M, dims[i], &M)) return fail("ai.onnxdecoder.cpu MatMulNBits: A's shape overflows");
    int64_t blob = kernel->bits == 4 ? 16 : 32;
    int64_t b_count = element_count(b_value, &status);
    if (status != NULL) return status;
    int64_t s_count = element_count(s_value, &status);
    if (status != NULL) return status;
    if (b_count != kernel->N * kernel->KB * blob || s_count != kernel->N * kernel->KB)
    {
        snprintf(message, sizeof message,
                 "ai.onnxdecoder.cpu MatMulNBits: B has %lld bytes and scales %lld values; N = %lld, K = %lld, %d bits need %lld and %lld",
                 (long long)b_count, (long long)s_count, (long long)kernel->N, (long long)kernel->K, kernel->bits,
                 (long long)(kernel->N * kernel->KB * blob), (long long)(kernel->N * kernel->KB));
        return fail(message);
    }

    dims[rank - 1] = kernel->N;
    OrtValue* y_value;
    if ((status = g_ort->KernelContext_GetOutput(context, 0, dims, rank, &y_value)) != NULL) return status;
    if (M == 0) return NULL;

    MatMulJob job = {0};
    job.M = M;
    job.N = kernel->N;
    job.K = kernel->K;
    job.KB = kernel->KB;
    job.QG = (kernel->KB + 3) / 4;
    job.bits = kernel->bits;
    job.isa = kernel->isa;
    const void* raw;
    if ((status = g_ort->GetTensorData(a_value, &raw)) != NULL) return status;
    job.a = (const float*)raw;
    if ((status = g_ort->GetTensorData(b_value, &raw)) != NULL) return status;
    job.b = (const uint8_t*)raw;
    if ((status = g_ort->GetTensorData(s_value, &raw)) != NULL) return status;
    job.sw = (const float*)raw;
    void* out;
    if ((status = g_ort->GetTensorMutableData(y_value, &out)) != NULL) return status;
    job.y = (float*)out;

    // Scratch: the quantized rows of A (about 1.3 bytes per element of A for 4 bits, 2.25 for 8 bits).
    int64_t per_row = job.bits == 4 ? job.QG * (128 + 16 * 4 + 16 * 4) : job.KB * (BLOCK * 2 + 4 + 4);
    int64_t bytes;
    if (!checked_mul_add(M, per_row, 64, &bytes)) return fail("ai.onnxdecoder.cpu MatMulNBits: A is too large to quantize");
    OrtAllocator* allocator;
    if ((status = g_ort->KernelContext_GetAllocator(context, kernel->cpu_memory, &allocator)) != NULL) return status;
    uint8_t* scratch = (uint8_t*)allocator->Alloc(allocator, (size_t)bytes);
    if (scratch == NULL)
    {
        g_ort->ReleaseAllocator(allocator);
        return g_ort->CreateStatus(ORT_FAIL, "ai.onnxdecoder.cpu MatMulNBits: could not allocate the quantized activations");
    }
    if (job.bits == 4)
    {
        job.sexp = (float*)scratch;
        job.corr = (int32_t*)(scratch + M * job.QG * 64);
        job.q4 = (int8_t*)(scratch + M * job.QG * 128);
    }
    else
    {
        job.q16 = (int16_t*)scratch;
        job.sa = (float*)(scratch + M * job.KB * BLOCK * 2);
        job.qsum = (int32_t*)(scratch + M * job.KB * (BLOCK * 2 + 4));
    }

    if (M == 1) quantize_row(&job, 0);
    else status = g_ort->KernelContext_ParallelFor(context, quantize_task, (size_t)M, 0, &job);
    if (status == NULL)
        status = g_ort->KernelContext_ParallelFor(context, matmul_task, (size_t)((job.N + ROWS_PER_TASK - 1) / ROWS_PER_TASK), 0, &job);
    allocator->Free(allocator, scratch);
    g_ort->ReleaseAllocator(allocator);
    return status;
}

// ---------------------------------------------------------------------------------------------------------------------
// SplitRotaryQkv: Split(qkv, [Hq*D, Hkv*D, Hkv*D]) with com.microsoft RotaryEmbedding on q and k, in one kernel.
//   qkv [B, S, (Hq + 2 Hkv) * D] float, position_ids [B, S] int64 (or [1]: position = p[0] + s),
//   cos_cache, sin_cache [P, R/2] float  ->  q [B, S, Hq*D], k [B, S, Hkv*D] rotated, v [B, S, Hkv*D] copied.
// Rotation of dims i < R/2 of each head (non-interleaved: pairs (i, i + R/2); interleaved: pairs (2i, 2i + 1)):
//   out1 = x1 * cos[p, i] - x2 * sin[p, i],  out2 = x2 * cos[p, i] + x1 * sin[p, i];  dims >= R are copied.
// ---------------------------------------------------------------------------------------------------------------------
typedef struct
{
    int64_t q_heads, kv_heads, head_size, rotary_dim;
    int interleaved;
} RotaryKernel;

typedef struct
{
    const RotaryKernel* kernel;
    const float *qkv, *cos, *sin;
    const int64_t* positions;
    int64_t S, positions_per_row, P, width;
    float *q, *k, *v;
    int bad_position; // set (by any thread, only ever to 1) when a position is outside [0, P)
} RotaryJob;

static void rotate_head(const float* x, float* out, const float* cos, const float* sin, int64_t D, int64_t R, int interleaved)
{
    int64_t half = R / 2;
    if (interleaved)
        for (int64_t i = 0; i < half; i++)
        {
            float x1 = x[2 * i], x2 = x[2 * i + 1];
            out[2 * i] = x1 * cos[i] - x2 * sin[i];
            out[2 * i + 1] = x2 * cos[i] + x1 * sin[i];
        }
    else
        for (int64_t i = 0; i < half; i++)
        {
            float x1 = x[i], x2 = x[i + half];
            out[i] = x1 * cos[i] - x2 * sin[i];
            out[i + half] = x2 * cos[i] + x1 * sin[i];
        }
    for (int64_t i = R; i < D; i++) out[i] = x[i];
}

static void rotary_row(void* data, size_t index)
{
    RotaryJob* job = (RotaryJob*)data;
    const RotaryKernel* kernel = job->kernel;
    int64_t row = (int64_t)index, D = kernel->head_size, R = kernel->rotary_dim;
    int64_t position = job->positions_per_row ? job->positions[row] : job->positions[0] + row % job->S;
    if (position < 0 || position >= job->P)
    {
        __atomic_store_n(&job->bad_position, 1, __ATOMIC_RELAXED);
        return;
    }
    const float* x = job->qkv + row * job->width;
    const float* cos = job->cos + position * (R / 2);
    const float* sin = job->sin + position * (R / 2);
    float* q = job->q + row * kernel->q_heads * D;
    float* k = job->k + row * kernel->kv_heads * D;
    for (int64_t h = 0; h < kernel->q_heads; h++) rotate_head(x + h * D, q + h * D, cos, sin, D, R, kernel->interleaved);
    x += kernel->q_heads * D;
    for (int64_t h = 0; h < kernel->kv_heads; h++) rotate_head(x + h * D, k + h * D, cos, sin, D, R, kernel->interleaved);
    x += kernel->kv_heads * D;
    memcpy(job->v + row * kernel->kv_heads * D, x, (size_t)(kernel->kv_heads * D) * sizeof(float));
}

static OrtStatus* ORT_API_CALL rotary_create(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out)
{
    (void)op;
    (void)api;
    int64_t q_heads, kv_heads, head_size, rotary_dim, interleaved;
    OrtStatus* status;
    if ((status = read_int_attribute(info, "num_heads", &q_heads)) || (status = read_int_attribute(info, "kv_num_heads", &kv_heads)) ||
        (status = read_int_attribute(info, "head_size", &head_size)) || (status = read_int_attribute(info, "rotary_dim", &rotary_dim)) ||
        (status = read_int_attribute(info, "interleaved", &interleaved)))
        return status;
    if (q_heads <= 0 || kv_heads <= 0 || head_size <= 0 || q_heads > 65536 || kv_heads > 65536 || head_size > 65536)
        return fail("ai.onnxdecoder.cpu SplitRotaryQkv: num_heads, kv_num_heads and head_size must be in 1 .. 65536");
    if (rotary_dim <= 0 || rotary_dim > head_size || rotary_dim % 2 != 0)
        return fail("ai.onnxdecoder.cpu SplitRotaryQkv: rotary_dim must be even and in 2 .. head_size");
    if (interleaved != 0 && interleaved != 1) return fail("ai.onnxdecoder.cpu SplitRotaryQkv: interleaved must be 0 or 1");
    RotaryKernel* kernel = (RotaryKernel*)calloc(1, sizeof *kernel);
    if (kernel == NULL) return g_ort->CreateStatus(ORT_FAIL, "ai.onnxdecoder.cpu SplitRotaryQkv: out of memory");
    kernel->q_heads = q_heads;
    kernel->kv_heads = kv_heads;
    kernel->head_size = head_size;
    kernel->rotary_dim = rotary_dim;
    kernel->interleaved = (int)interleaved;
    *out = kernel;
    return NULL;
}

static void ORT_API_CALL plain_destroy(void* data) { free(data); }

// The dimensions of input `index` into dims (at most 8); its rank into *rank.
static OrtStatus* input_shape(OrtKernelContext* context, size_t index, const OrtValue** value, int64_t dims[8], size_t* rank)
{
    OrtStatus* status;
    if ((status = g_ort->KernelContext_GetInput(context, index, value)) != NULL) return status;
    if (*value == NULL) return fail("ai.onnxdecoder.cpu: a required input is missing");
    OrtTensorTypeAndShapeInfo* shape;
    if ((status = g_ort->GetTensorTypeAndShape(*value, &shape)) != NULL) return status;
    status = g_ort->GetDimensionsCount(shape, rank);
    if (status == NULL && *rank > 8) status = fail("ai.onnxdecoder.cpu: an input has rank over 8");
    if (status == NULL) status = g_ort->GetDimensions(shape, dims, *rank);
    g_ort->ReleaseTensorTypeAndShapeInfo(shape);
    return status;
}

static OrtStatus* ORT_API_CALL rotary_compute(void* data, OrtKernelContext* context)
{
    const RotaryKernel* kernel = (const RotaryKernel*)data;
    const OrtValue *qkv_value, *pos_value, *cos_value, *sin_value;
    int64_t qkv_dims[8], pos_dims[8], cos_dims[8], sin_dims[8];
    size_t qkv_rank, pos_rank, cos_rank, sin_rank;
    OrtStatus* status;
    if ((status = input_shape(context, 0, &qkv_value, qkv_dims, &qkv_rank)) ||
        (status = input_shape(context, 1, &pos_value, pos_dims, &pos_rank)) ||
        (status = input_shape(context, 2, &cos_value, cos_dims, &cos_rank)) ||
        (status = input_shape(context, 3, &sin_value, sin_dims, &sin_rank)))
        return status;
    int64_t D = kernel->head_size, width = (kernel->q_heads + 2 * kernel->kv_heads) * D;
    char message[256];
    if (qkv_rank != 3 || qkv_dims[2] != width)
    {
        snprintf(message, sizeof message,
                 "ai.onnxdecoder.cpu SplitRotaryQkv: qkv must be [batch, sequence, %lld] for %lld + 2 x %lld heads of %lld",
                 (long long)width, (long long)kernel->q_heads, (long long)kernel->kv_heads, (long long)D);
        return fail(message);
    }
    int64_t B = qkv_dims[0], S = qkv_dims[1], rows;
    if (B < 0 || S < 0 || __builtin_mul_overflow(B, S, &rows)) return fail("ai.onnxdecoder.cpu SplitRotaryQkv: qkv's shape overflows");
    int per_row;
    if (pos_rank == 2 && pos_dims[0] == B && pos_dims[1] == S) per_row = 1;
    else if (pos_rank == 1 && pos_dims[0] == 1) per_row = 0;
    else return fail("ai.onnxdecoder.cpu SplitRotaryQkv: position_ids must be [batch, sequence] or [1]");
    int64_t half = kernel->rotary_dim / 2;
    if (cos_rank != 2 || sin_rank != 2 || cos_dims[1] != half || sin_dims[1] != half || cos_dims[0] != sin_dims[0])
    {
        snprintf(message, sizeof message, "ai.onnxdecoder.cpu SplitRotaryQkv: cos_cache and sin_cache must both be [positions, %lld]",
                 (long long)half);
        return fail(message);
    }
    int64_t q_dims[3] = {B, S, kernel->q_heads * D}, kv_dims[3] = {B, S, kernel->kv_heads * D};
    OrtValue *q_value, *k_value, *v_value;
    if ((status = g_ort->KernelContext_GetOutput(context, 0, q_dims, 3, &q_value)) ||
        (status = g_ort->KernelContext_GetOutput(context, 1, kv_dims, 3, &k_value)) ||
        (status = g_ort->KernelContext_GetOutput(context, 2, kv_dims, 3, &v_value)))
        return status;
    if (rows == 0) return NULL;
    RotaryJob job = {0};
    job.kernel = kernel;
    job.S = S;
    job.positions_per_row = per_row;
    job.P = cos_dims[0];
    job.width = width;
    const void* raw;
    void* out;
    if ((status = g_ort->GetTensorData(qkv_value, &raw)) != NULL) return status;
    job.qkv = (const float*)raw;
    if ((status = g_ort->GetTensorData(pos_value, &raw)) != NULL) return status;
    job.positions = (const int64_t*)raw;
    if ((status = g_ort->GetTensorData(cos_value, &raw)) != NULL) return status;
    job.cos = (const float*)raw;
    if ((status = g_ort->GetTensorData(sin_value, &raw)) != NULL) return status;
    job.sin = (const float*)raw;
    if ((status = g_ort->GetTensorMutableData(q_value, &out)) != NULL) return status;
    job.q = (float*)out;
    if ((status = g_ort->GetTensorMutableData(k_value, &out)) != NULL) return status;
    job.k = (float*)out;
    if ((status = g_ort->GetTensorMutableData(v_value, &out)) != NULL) return status;
    job.v = (float*)out;
    // With one start position the whole run must fit in the cache (checked before adding, so nothing overflows).
    if (!per_row && (job.positions[0] < 0 || job.positions[0] > job.P - S)) job.bad_position = 1;
    // A decode step's few rows are cheaper on this thread than a hand-off to the pool.
    if (!job.bad_position)
    {
        if (rows * width < (1 << 15))
            for (int64_t row = 0; row < rows; row++) rotary_row(&job, (size_t)row);
        else if ((status = g_ort->KernelContext_ParallelFor(context, rotary_row, (size_t)rows, 0, &job)) != NULL)
            return status;
    }
    if (job.bad_position)
    {
        snprintf(message, sizeof message,
                 "ai.onnxdecoder.cpu SplitRotaryQkv: a position id is outside the rotary cache's %lld positions: shorten the sequence",
                 (long long)job.P);
        return fail(message);
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------------
// SiluMul: gate_up [..., 2F] -> [..., F] = silu(gate) * up, silu(g) = g / (1 + exp(-g)) (the Split + Sigmoid + Mul + Mul of
// a SwiGLU MLP). exp is a degree-6 polynomial after range reduction (relative error about 2e-7 on float).
// ---------------------------------------------------------------------------------------------------------------------
typedef struct
{
    Isa isa;
} SiluKernel;

typedef struct
{
    const float* x;
    float* y;
    int64_t F;
    Isa isa;
} SiluJob;

static float silu_scalar(float g) { return g / (1.0f + expf(-g)); }

TARGET_AVX512 static __m512 exp_avx512(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-87.3365478515625f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

TARGET_AVX512 static void silu_row_avx512(const float* x, float* y, int64_t F)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < F; i += 16)
    {
        __mmask16 mask = F - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (F - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(mask, x + i), u = _mm512_maskz_loadu_ps(mask, x + F + i);
        __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_mask_storeu_ps(y + i, mask, _mm512_mul_ps(silu, u));
    }
}

TARGET_AVX2 static __m256 exp_avx2(__m256 x)
{
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.3365478515625f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n: n is in [-126, 128] after the clamp; build it in two halves so 2^128 (x near the top) does not overflow the exponent.
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i half = _mm256_srai_epi32(ni, 1);
    __m256 two_half = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    __m256 two_rest = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, two_half), two_rest);
}

TARGET_AVX2 static void silu_row_avx2(const float* x, float* y, int64_t F)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= F; i += 8)
    {
        __m256 g = _mm256_loadu_ps(x + i), u = _mm256_loadu_ps(x + F + i);
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, u));
    }
    for (; i < F; i++) y[i] = silu_scalar(x[i]) * x[F + i];
}

static void silu_row(void* data, size_t index)
{
    const SiluJob* job = (const SiluJob*)data;
    const float* x = job->x + (int64_t)index * 2 * job->F;
    float* y = job->y + (int64_t)index * job->F;
    if (job->isa == ISA_AVX512BW) silu_row_avx512(x, y, job->F);
    else if (job->isa == ISA_AVX2) silu_row_avx2(x, y, job->F);
    else
        for (int64_t i = 0; i < job->F; i++) y[i] = silu_scalar(x[i]) * x[job->F + i];
}

static OrtStatus* read_isa(const OrtKernelInfo* info, const char* op, Isa* isa)
{
    Isa available = detect_isa();
    *isa = available;
    char requested[32] = "auto", message[200];
    size_t size = sizeof requested;
    OrtStatus* status = g_ort->KernelInfoGetAttribute_string(info, "isa", requested, &size);
    if (status != NULL) { g_ort->ReleaseStatus(status); return NULL; } // absent: auto
    if (strcmp(requested, "auto") == 0) return NULL;
    for (int i = 0; i <= ISA_AVX512BW; i++)
        if (strcmp(requested, kIsaNames[i]) == 0)
        {
            if (i > (int)available)
            {
                snprintf(message, sizeof message, "ai.onnxdecoder.cpu %s: this CPU has no %s (best: %s); use isa auto", op, requested,
                         kIsaNames[available]);
                return fail(message);
            }
            *isa = (Isa)i;
            return NULL;
        }
    snprintf(message, sizeof message, "ai.onnxdecoder.cpu %s: attribute 'isa' is '%s'; use auto, avx512bw, avx2 or scalar", op, requested);
    return fail(message);
}

static OrtStatus* ORT_API_CALL silu_create(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out)
{
    (void)op;
    (void)api;
    Isa isa;
    OrtStatus* status = read_isa(info, "SiluMul", &isa);
    if (status != NULL) return status;
    SiluKernel* kernel = (SiluKernel*)calloc(1, sizeof *kernel);
    if (kernel == NULL) return g_ort->CreateStatus(ORT_FAIL, "ai.onnxdecoder.cpu SiluMul: out of memory");
    kernel->isa = isa;
    *out = kernel;
    return NULL;
}

static OrtStatus* ORT_API_CALL silu_compute(void* data, OrtKernelContext* context)
{
    const SiluKernel* kernel = (const SiluKernel*)data;
    const OrtValue* x_value;
    int64_t dims[8];
    size_t rank;
    OrtStatus* status;
    if ((status = input_shape(context, 0, &x_value, dims, &rank)) != NULL) return status;
    if (rank < 1 || dims[rank - 1] % 2 != 0)
        return fail("ai.onnxdecoder.cpu SiluMul: the input's last dimension must be even (gate then up)");
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < rank; i++)
        if (dims[i] < 0 || __builtin_mul_overflow(rows, dims[i], &rows))
            return fail("ai.onnxdecoder.cpu SiluMul: the input's shape overflows");
    SiluJob job = {0};
    job.F = dims[rank - 1] / 2;
    job.isa = kernel->isa;
    dims[rank - 1] = job.F;
    OrtValue* y_value;
    if ((status = g_ort->KernelContext_GetOutput(context, 0, dims, rank, &y_value)) != NULL) return status;
    if (rows == 0 || job.F == 0) return NULL;
    const void* raw;
    void* out;
    if ((status = g_ort->GetTensorData(x_value, &raw)) != NULL) return status;
    job.x = (const float*)raw;
    if ((status = g_ort->GetTensorMutableData(y_value, &out)) != NULL) return status;
    job.y = (float*)out;
    if (rows * job.F < (1 << 14))
    {
        for (int64_t row = 0; row < rows; row++) silu_row(&job, (size_t)row);
        return NULL;
    }
    return g_ort->KernelContext_ParallelFor(context, silu_row, (size_t)rows, 0, &job);
}

// ---------------------------------------------------------------------------------------------------------------------
// Registration: one OrtCustomOp per op, described by a table.
// ---------------------------------------------------------------------------------------------------------------------
typedef struct
{
    OrtCustomOp base; // first member: ONNX Runtime passes &base back to the callbacks
    const char* name;
    size_t inputs, outputs;
    ONNXTensorElementDataType input_types[4];
} OpDescriptor;

static const OpDescriptor* descriptor(const OrtCustomOp* op) { return (const OpDescriptor*)op; }
static const char* ORT_API_CALL op_name(const OrtCustomOp* op) { return descriptor(op)->name; }
static const char* ORT_API_CALL op_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static size_t ORT_API_CALL input_count(const OrtCustomOp* op) { return descriptor(op)->inputs; }
static size_t ORT_API_CALL output_count(const OrtCustomOp* op) { return descriptor(op)->outputs; }
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp* op, size_t index) { return descriptor(op)->input_types[index]; }
static ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp* op, size_t index)
{
    (void)op;
    (void)index;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp* op, size_t index)
{
    (void)op;
    (void)index;
    return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL input_memory(const OrtCustomOp* op, size_t index)
{
    (void)op;
    (void)index;
    return OrtMemTypeDefault;
}
static int ORT_API_CALL variadic_min_arity(const OrtCustomOp* op) { (void)op; return 1; }
static int ORT_API_CALL variadic_homogeneity(const OrtCustomOp* op) { (void)op; return 1; }
static int ORT_API_CALL start_version(const OrtCustomOp* op) { (void)op; return 1; }
static int ORT_API_CALL end_version(const OrtCustomOp* op) { (void)op; return INT_MAX; }
static size_t ORT_API_CALL no_index_map(int** input_index, int** output_index)
{
    *input_index = NULL;
    *output_index = NULL;
    return 0;
}
static void ORT_API_CALL release_index_map(int* input_index, int* output_index)
{
    (void)input_index;
    (void)output_index;
}

#define FLOAT_T ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
static OpDescriptor g_ops[] = {
    {.name = "MatMulNBits", .inputs = 3, .outputs = 1, .input_types = {FLOAT_T, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, FLOAT_T}},
    {.name = "SplitRotaryQkv", .inputs = 4, .outputs = 3, .input_types = {FLOAT_T, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, FLOAT_T, FLOAT_T}},
    {.name = "SiluMul", .inputs = 1, .outputs = 1, .input_types = {FLOAT_T}},
};
#define OP_COUNT (sizeof g_ops / sizeof g_ops[0])

static OrtCustomOpDomain* g_domain;
static OrtStatus* g_domain_status;
static pthread_once_t g_domain_once = PTHREAD_ONCE_INIT;

static void create_domain(void)
{
    OrtStatus* (ORT_API_CALL* creates[OP_COUNT])(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**) = {
        create_kernel, rotary_create, silu_create};
    OrtStatus* (ORT_API_CALL* computes[OP_COUNT])(void*, OrtKernelContext*) = {compute, rotary_compute, silu_compute};
    void (ORT_API_CALL* destroys[OP_COUNT])(void*) = {destroy_kernel, plain_destroy, plain_destroy};
    // One domain for the process: ONNX Runtime keeps a pointer to it in every session options it is added to.
    if ((g_domain_status = g_ort->CreateCustomOpDomain("ai.onnxdecoder.cpu", &g_domain)) != NULL) return;
    for (size_t i = 0; i < OP_COUNT; i++)
    {
        OrtCustomOp* op = &g_ops[i].base;
        memset(op, 0, sizeof *op);
        op->version = ORT_API_VERSION;
        op->GetName = op_name;
        op->GetExecutionProviderType = op_provider;
        op->GetInputType = input_type;
        op->GetInputTypeCount = input_count;
        op->GetOutputType = output_type;
        op->GetOutputTypeCount = output_count;
        op->KernelDestroy = destroys[i];
        op->GetInputCharacteristic = required;
        op->GetOutputCharacteristic = required;
        op->GetInputMemoryType = input_memory;
        op->GetVariadicInputMinArity = variadic_min_arity;
        op->GetVariadicInputHomogeneity = variadic_homogeneity;
        op->GetVariadicOutputMinArity = variadic_min_arity;
        op->GetVariadicOutputHomogeneity = variadic_homogeneity;
        op->CreateKernelV2 = creates[i];
        op->KernelComputeV2 = computes[i];
        op->GetStartVersion = start_version;
        op->GetEndVersion = end_version;
        op->GetMayInplace = no_index_map;
        op->ReleaseMayInplace = release_index_map;
        op->GetAliasMap = no_index_map;
        op->ReleaseAliasMap = release_index_map;
        if ((g_domain_status = g_ort->CustomOpDomain_Add(g_domain, op)) != NULL) return;
    }
}

EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base)
{
    const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
    if (api == NULL) return NULL; // an ONNX Runtime older than these headers: nothing registered, models fail to load clearly
    g_ort = api;
    pthread_once(&g_domain_once, create_domain);
    if (g_domain_status != NULL)
        return api->CreateStatus(ORT_FAIL, "ai.onnxdecoder.cpu: could not create the custom-op domain");
    return api->AddCustomOpDomain(options, g_domain);
}
