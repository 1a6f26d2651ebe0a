/* Peak multiply-add throughput of one core: 16-lane f32 FMA (`vfmadd231ps zmm`) against the
 * bf16 pair dot product (`vdpbf16ps zmm`, 32 pairs into 16 f32 lanes), each with 24 independent
 * accumulators so neither is latency-bound. Which of the two is faster decides how `--compute
 * bf16` multiplies (src/model/half_gemm.rs). Run it alone on an idle machine:
 *
 *     gcc -O2 -mavx512f -mavx512bf16 scripts/peak_flops.c -o /tmp/peak_flops && /tmp/peak_flops
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define ACC 24
#define ITERS 10000000L

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f,avx512bf16"))) static double bf16_gflops(float *sink) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_setzero_ps();
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);
    double t0 = now();
    for (long n = 0; n < ITERS; n++) {
#pragma GCC unroll 24
        for (int j = 0; j < ACC; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, a);
    }
    double t = now() - t0;
    for (int i = 0; i < ACC; i++) *sink += _mm512_reduce_add_ps(acc[i]);
    return ITERS * ACC * 64.0 / t / 1e9; /* 32 pairs: 32 multiplies and 32 adds */
}

__attribute__((target("avx512f"))) static double f32_gflops(float *sink) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_setzero_ps();
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    double t0 = now();
    for (long n = 0; n < ITERS; n++) {
#pragma GCC unroll 24
        for (int j = 0; j < ACC; j++) acc[j] = _mm512_fmadd_ps(x, y, acc[j]);
    }
    double t = now() - t0;
    for (int i = 0; i < ACC; i++) *sink += _mm512_reduce_add_ps(acc[i]);
    return ITERS * ACC * 32.0 / t / 1e9; /* 16 lanes: 16 multiplies and 16 adds */
}

int main(void) {
    float sink = 0;
    if (!__builtin_cpu_supports("avx512f")) {
        printf("no AVX-512 on this CPU\n");
        return 1;
    }
    printf("f32 FMA (zmm):      %6.1f GFLOP/s on one core\n", f32_gflops(&sink));
    if (__builtin_cpu_supports("avx512bf16"))
        printf("bf16 vdpbf16ps:     %6.1f GFLOP/s on one core\n", bf16_gflops(&sink));
    else
        printf("no AVX512-BF16 on this CPU\n");
    return sink == 12345.0f; /* keeps the sums live */
}
