/* spikeport.sim.fast_seq's expectation-compensated operators, all T steps in one call
   (spikeport.sim.native): G(t) = t f(m_t), m_t = floor(S_t mul / (t 2^shift)) the requantized
   running mean of the input's running sums S_t (fast_seq.Requant), f the operator's integer
   function (spikeport.sim.intfunc), the same operations as the torch loop in fast_seq:

     gelu:      f(q) = floor(q gate[clamp(q, -clip, clip) + clip] 2^-shift)
     softmax:   e_j = table[min(max_k q_k - q_j, last)], f(q)_j = floor(e_j one / max(sum e, 1))
     layernorm: q -= floor(sum q / d); v = floor(sum q^2 / d) + eps (>= 2^49: step failed);
                q = floor(q norm / max(floor(sqrt(v)), 1)); f(q) = floor((beta + q gamma) 2^-s)

   Every value is an integer in double, and every product, sum and quotient stays below 2^52
   (the range proof's bounds, checked by the callers, and layernorm's own check of its sum
   of squares): so each operation is exact, or a correctly rounded division (or square root)
   floored, exact for integers below 2^53, whatever the order of the sums.

   Layout: s (the input's running sums, float/double/int32/int64: kind 0-3) and out (float
   or double: kind 0/1) hold T steps of `step` elements, contiguous, rows of `d` along the
   last axis; mul, gamma and beta `period` elements (a sample's), repeated. A call covers
   elements [m0, m1) of every step (whole rows), with q scratch for a row (or 1024 values). */

#include <math.h>
#include <stdint.h>

#include "blocks.h"

/* q[j] = floor(s[j] mul[j] / div), j < len: the requantized running mean, one loop per input
   type (each vectorises) */
#define MEANS(TYPE)                                                                        \
    {                                                                                      \
        const TYPE *restrict v = (const TYPE *)s + at;                                     \
        for (int64_t j = 0; j < len; j++) q[j] = floor((double)v[j] * mul[j] / div);       \
    }

static void means(const void *s, int kind, int64_t at, const double *restrict mul,
                  int64_t len, double div, double *restrict q) {
    switch (kind) {
    case 0: MEANS(float) break;
    case 1: MEANS(double) break;
    case 2: MEANS(int32_t) break;
    default: MEANS(int64_t) break;
    }
}

/* out[at + j] = y[j] t, j < len */
static void store(void *out, int kind, int64_t at, const double *restrict y, int64_t len,
                  double t) {
    if (kind == 0) {
        float *restrict o = (float *)out + at;
        for (int64_t j = 0; j < len; j++) o[j] = (float)(y[j] * t);
    } else {
        double *restrict o = (double *)out + at;
        for (int64_t j = 0; j < len; j++) o[j] = y[j] * t;
    }
}

void ec_gelu(const void *s, int s_kind, void *out, int out_kind, int64_t T, int64_t step,
             int64_t m0, int64_t m1, const double *mul, int64_t period, int32_t shift,
             const double *gates, double clip, int64_t out_shift, double *q) {
    const double unshift = ldexp(1.0, -(int)out_shift);
    for (int64_t t = 1; t <= T; t++) {
        const double div = (double)t * ldexp(1.0, shift);
        for (int64_t b0 = m0, len; b0 < m1; b0 += len) {
            const int64_t off = b0 % period;
            len = block_len(b0, m1, period);
            const int64_t at = (t - 1) * step + b0;
            means(s, s_kind, at, mul + off, len, div, q);
            for (int64_t j = 0; j < len; j++) {
                double c = q[j] < -clip ? -clip : q[j] > clip ? clip : q[j];
                q[j] = floor(q[j] * gates[(int64_t)(c + clip)] * unshift);
            }
            store(out, out_kind, at, q, len, (double)t);
        }
    }
}

void ec_softmax(const void *s, int s_kind, void *out, int out_kind, int64_t T, int64_t step,
                int64_t m0, int64_t m1, const double *mul, int64_t period, int32_t shift,
                int64_t d, const double *table, double last, double one, double *q) {
    for (int64_t t = 1; t <= T; t++) {
        const double div = (double)t * ldexp(1.0, shift);
        for (int64_t r = m0; r < m1; r += d) {
            const int64_t at = (t - 1) * step + r;
            double top = -INFINITY, total = 0;
            means(s, s_kind, at, mul + r % period, d, div, q);
            for (int64_t j = 0; j < d; j++) top = q[j] > top ? q[j] : top;
            for (int64_t j = 0; j < d; j++) {
                double gap = top - q[j];
                q[j] = table[(int64_t)(gap > last ? last : gap)];
                total += q[j];
            }
            total = total < 1 ? 1 : total;
            for (int64_t j = 0; j < d; j++) q[j] = floor(q[j] * one / total);
            store(out, out_kind, at, q, d, (double)t);
        }
    }
}

/* failed[t - 1] = 1 where a row's sum of squares reached 2^49 (that step's outputs are then
   not all written: the caller runs its reference there) */
void ec_layernorm(const void *s, int s_kind, void *out, int out_kind, int64_t T, int64_t step,
                  int64_t m0, int64_t m1, const double *mul, int64_t period, int32_t shift,
                  int64_t d, const double *gamma, const double *beta, double eps, double norm,
                  int64_t out_shift, double *q, int32_t *failed) {
    const double unshift = ldexp(1.0, -(int)out_shift);
    for (int64_t t = 1; t <= T; t++) {
        const double div = (double)t * ldexp(1.0, shift);
        for (int64_t r = m0; r < m1; r += d) {
            const int64_t at = (t - 1) * step + r, p = r % period;
            const double *restrict g = gamma + p, *restrict b = beta + p;
            double sum = 0, squares = 0;
            means(s, s_kind, at, mul + p, d, div, q);
            for (int64_t j = 0; j < d; j++) sum += q[j];
            const double mean = floor(sum / (double)d);
            for (int64_t j = 0; j < d; j++) {
                q[j] -= mean;
                squares += q[j] * q[j];
            }
            if (squares >= 0x1p49) {
                failed[t - 1] = 1;
                continue;
            }
            double root = floor(sqrt(floor(squares / (double)d) + eps));
            root = root < 1 ? 1 : root;
            for (int64_t j = 0; j < d; j++)
                q[j] = floor((b[j] + floor(q[j] * norm / root) * g[j]) * unshift);
            store(out, out_kind, at, q, d, (double)t);
        }
    }
}
