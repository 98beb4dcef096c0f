/* spikeport.sim.fast's "add" in "int" mode, one fused pass (spikeport.sim.native).

   At every step t the weighted sum D_t = sum_i m_i x_i,t of its inputs, then
       shift == 0:              D_t                          (either form: the add is linear)
       shift > 0, per-step x:   y_t = floor(D_t / 2^shift)
       shift > 0, running sums: y_t = floor((D_t - D_{t-1}) / 2^shift), out as running sums
                                y_1 + ... + y_t (what a neuron after it reads)
   in double, exact: the range proof bounds sum |m_i| |x_i| below 2^53 before this runs
   (spikeport.sim.fast._add hands larger sums to its int64 torch loop), so every product, sum
   and difference (and the outputs' running sums, which the proof bounds too) is an integer
   double holds, and a multiplication by 2^-shift is exact.
   The torch loop does the same sums in a narrower exact type: the same integers.

   Layout as csrc/if_levels.c: T steps of `step` elements; inputs of float, double, int32 or
   int64 (the kinds below), each in the same order; multipliers `period` doubles (a sample's), repeated; the
   output float or double. A call covers elements [m0, m1) of every step, block by block. */

#include <math.h>
#include <stdint.h>

#include "blocks.h"

/* acc (+)= m x over a block, for x of one of the kinds below: each a loop that vectorises */
enum { FLOAT32 = 0, FLOAT64 = 1, INT32 = 2, INT64 = 3 };

#define WEIGH(TYPE)                                                                        \
    {                                                                                      \
        const TYPE *restrict v = x;                                                        \
        if (first)                                                                         \
            for (int64_t i = 0; i < len; i++) acc[i] = m[i] * (double)v[i];                \
        else                                                                               \
            for (int64_t i = 0; i < len; i++) acc[i] += m[i] * (double)v[i];               \
    }

static void weigh(double *restrict acc, const void *x, int kind, const double *restrict m,
                  int64_t len, int first) {
    switch (kind) {
    case FLOAT32: WEIGH(float) break;
    case FLOAT64: WEIGH(double) break;
    case INT32: WEIGH(int32_t) break;
    default: WEIGH(int64_t) break; /* |x| < 2^53: the proof's bound, so exact in double */
    }
}

static void store(void *out, int is_double, const double *restrict y, int64_t len) {
    if (is_double) {
        double *restrict o = out;
        for (int64_t i = 0; i < len; i++) o[i] = y[i];
    } else {
        float *restrict o = out;
        for (int64_t i = 0; i < len; i++) o[i] = (float)y[i];
    }
}

void weighted_add(int64_t T, int64_t step, int64_t m0, int64_t m1, int64_t inputs,
                  const void *const *xs, const int32_t *x_kind, const double *const *mults,
                  int64_t period, int32_t shift, int32_t cumulative, void *out,
                  int32_t out_double) {
    double acc[BLOCK], prev[BLOCK], run[BLOCK];
    const double scale = ldexp(1.0, -shift);
    const int64_t xsize[4] = {sizeof(float), sizeof(double), sizeof(int32_t), sizeof(int64_t)};
    for (int64_t b0 = m0, len; b0 < m1; b0 += len) {
        int64_t off = b0 % period;
        len = block_len(b0, m1, period);
        for (int64_t i = 0; i < len; i++) prev[i] = run[i] = 0;
        for (int64_t t = 0; t < T; t++) {
            int64_t at = t * step + b0;
            for (int64_t k = 0; k < inputs; k++)
                weigh(acc, (const char *)xs[k] + at * xsize[x_kind[k]], x_kind[k],
                      mults[k] + off, len, k == 0);
            if (shift && cumulative)
                for (int64_t i = 0; i < len; i++) {
                    double d = acc[i] - prev[i];
                    prev[i] = acc[i];
                    acc[i] = run[i] += floor(d * scale);
                }
            else if (shift)
                for (int64_t i = 0; i < len; i++) acc[i] = floor(acc[i] * scale);
            store((char *)out + at * xsize[out_double], out_double, acc, len);
        }
    }
}
