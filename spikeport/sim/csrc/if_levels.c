/* spikeport.sim.fast.IntIF's loop over steps, fused into one pass (spikeport.sim.native).

   On running sums C_t of an IF population's input current, its net spike count after step t:
       N_t = N_{t-1} + clamp(floor((v0 + C_t) / theta) - N_{t-1}, lo, K)
   with lo = 0 (unsigned), -min(N_{t-1}, K) (signed) or -K (bipolar); and each step's events
   (nonzero counts), levels (sum of |count|) and, where `fanout` is given (the synapses each
   neuron drives), synaptic operations (sum of fanout over nonzero counts). With `ramp` the
   input is one current I equal at every step (a first layer's), and C_t = t I.

   The same floating-point operations, in the same type, as the torch loop it replaces: one
   IEEE add, one correctly rounded division and a floor, on integers the range proof bounds
   below 2^23 (float) or 2^53 (double), so exact (t I too: the proof bounds the running sums).
   Compile with -ffp-contract=off and without -ffast-math (spikeport.sim.native does);
   -fno-trapping-math lets the loop vectorise (floor as a vector round) and changes no value.

   Layout: n holds T steps of `step` elements each (one step's elements dense, in memory
   order), c the same (or, with `ramp`, one step); theta, v0 and fanout `period` elements (one
   sample's), repeated along a step. A call covers elements [m0, m1) of every step, in blocks
   that stay in L1 across all T steps: one read of C and one write of N per element and step,
   where the torch loop makes seven passes a step. */

#include <math.h>
#include <stdint.h>

#include "blocks.h"

enum { UNSIGNED = 0, SIGNED = 1, BIPOLAR = 2 };

#define IF_LEVELS(NAME, REAL, FLOOR)                                                          \
    static inline void NAME##_rule(const REAL *c, int ramp, REAL *n, int64_t T, int64_t step, \
                                   int64_t m0, int64_t m1, const REAL *theta, const REAL *v0, \
                                   int64_t period, REAL K, int rule, int64_t *events,         \
                                   int64_t *levels, const int64_t *fanout, int64_t *sops) {   \
        REAL prev[BLOCK];                                                                     \
        for (int64_t b0 = m0, len; b0 < m1; b0 += len) {                                      \
            int64_t off = b0 % period;                                                        \
            len = block_len(b0, m1, period);                                                  \
            for (int64_t i = 0; i < len; i++) prev[i] = 0;                                    \
            const REAL *restrict th = theta + off, *restrict v = v0 + off;                    \
            const int64_t *restrict f = fanout ? fanout + off : 0;                            \
            for (int64_t t = 0; t < T; t++) {                                                 \
                const REAL *restrict ct = c + (ramp ? 0 : t * step) + b0;                     \
                REAL *restrict nt = n + t * step + b0;                                        \
                const REAL steps = (REAL)(t + 1);                                             \
                int32_t ev = 0, lv = 0; /* a block's: |count| <= K < 2^16, len <= BLOCK */    \
                int64_t sp = 0;                                                               \
                for (int64_t i = 0; i < len; i++) {                                           \
                    REAL cur = ramp ? steps * ct[i] : ct[i];                                  \
                    REAL d = FLOOR((cur + v[i]) / th[i]) - prev[i];                           \
                    REAL lo = rule == UNSIGNED  ? 0                                           \
                              : rule == BIPOLAR ? -K                                          \
                                                : -(prev[i] < K ? prev[i] : K);               \
                    d = d > K ? K : d;                                                        \
                    d = d < lo ? lo : d;                                                      \
                    ev += d != 0;                                                             \
                    lv += (int32_t)(d < 0 ? -d : d);                                          \
                    if (f) sp += d != 0 ? f[i] : 0;                                           \
                    prev[i] += d;                                                             \
                    nt[i] = prev[i];                                                          \
                }                                                                             \
                events[t] += ev;                                                              \
                levels[t] += lv;                                                              \
                if (f) sops[t] += sp;                                                         \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* one specialised copy of the loop per rule: each vectorises without a branch */         \
    void NAME(const REAL *c, int ramp, REAL *n, int64_t T, int64_t step, int64_t m0,         \
              int64_t m1, const REAL *theta, const REAL *v0, int64_t period, REAL K, int rule, \
              int64_t *events, int64_t *levels, const int64_t *fanout, int64_t *sops) {       \
        if (rule == UNSIGNED)                                                                 \
            NAME##_rule(c, ramp, n, T, step, m0, m1, theta, v0, period, K, UNSIGNED, events,  \
                        levels, fanout, sops);                                                \
        else if (rule == SIGNED)                                                              \
            NAME##_rule(c, ramp, n, T, step, m0, m1, theta, v0, period, K, SIGNED, events,    \
                        levels, fanout, sops);                                                \
        else                                                                                  \
            NAME##_rule(c, ramp, n, T, step, m0, m1, theta, v0, period, K, BIPOLAR, events,   \
                        levels, fanout, sops);                                                \
    }

IF_LEVELS(if_levels_f32, float, floorf)
IF_LEVELS(if_levels_f64, double, floor)
