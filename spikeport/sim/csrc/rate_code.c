/* spikeport.convert.tune.rate_code's loop over steps, fused into one pass
   (spikeport.sim.native): the T-aware search's hottest loop, 34 rate codes a neuron.

   The float simulator's binary IF neuron (reset by subtraction, v0 = theta / 2) driven by
   currents c_t, its mean output over T steps:
       v += c_t;  s = theta if v >= theta, else -theta if bipolar and v < 0, else 0;
       v -= s;  total += s;        and at the end  total / T.
   The same double operations in the same order as numpy's loop in tune.rate_code (spikes
   are exactly +-theta or +0, so s = spike * theta needs no multiply), hence the same values
   bit for bit. Compile with -ffp-contract=off and without -ffast-math (native.py does).

   Layout: c holds T steps of `step` elements (C channels of `period` positions, dense);
   theta one value per channel; out one step's worth. A call covers elements [m0, m1) in
   blocks that stay in L1 over all T steps and never cross a channel, so a block reads one
   threshold. */

#include <stdint.h>

#include "blocks.h"

static inline void rate_code_rule(const double *c, double *out, int64_t T, int64_t step,
                                  int64_t m0, int64_t m1, const double *theta, int64_t period,
                                  int bipolar) {
    double v[BLOCK], total[BLOCK];
    for (int64_t b0 = m0, len; b0 < m1; b0 += len) {
        len = block_len(b0, m1, period);
        const double th = theta[b0 / period], half = th / 2;
        for (int64_t i = 0; i < len; i++) {
            v[i] = half;
            total[i] = 0;
        }
        for (int64_t t = 0; t < T; t++) {
            const double *restrict ct = c + t * step + b0;
            for (int64_t i = 0; i < len; i++) {
                double x = v[i] + ct[i];
                double s = x >= th ? th : (bipolar && x < 0 ? -th : 0.0);
                v[i] = x - s;
                total[i] += s;
            }
        }
        const double steps = (double)T;
        for (int64_t i = 0; i < len; i++) out[b0 + i] = total[i] / steps;
    }
}

/* one specialised copy of the loop per rule: each vectorises without a branch */
void rate_code_f64(const double *c, double *out, int64_t T, int64_t step, int64_t m0,
                   int64_t m1, const double *theta, int64_t period, int bipolar) {
    if (bipolar)
        rate_code_rule(c, out, T, step, m0, m1, theta, period, 1);
    else
        rate_code_rule(c, out, T, step, m0, m1, theta, period, 0);
}
