"""C99 kernel templates, one per op (string.Template; `$name` is filled by the emitter).

Each reproduces the reference simulator's integer rule for its op (spikeport/sim/ops.py and
spikeport/sim/arith.py) with int32 accumulation; quantize's range proof guarantees that no
sum or product here overflows int32, so C's undefined signed overflow never happens.
"""

from __future__ import annotations

from string import Template

DENSE = Template("""\
    for (int r = 0; r < $rows; ++r) {
        for (int o = 0; o < $n_out; ++o) {
            const int8_t *w = &${w}[o * $n_in];
            int32_t acc = ${b}[o];
            for (int i = 0; i < $n_in; ++i) {
                acc += (int32_t)w[i] * (int32_t)${x}[r * $n_in + i];
            }
            ${y}[r * $n_out + o] = acc;
        }
    }
""")

CONV2D = Template("""\
    for (int o = 0; o < $c_out; ++o) {
        const int g = o / $og;
        for (int oh = 0; oh < $h_out; ++oh) {
            for (int ow = 0; ow < $w_out; ++ow) {
                int32_t acc = ${b}[o];
                for (int c = 0; c < $cg; ++c) {
                    const int ci = g * $cg + c;
                    for (int kh = 0; kh < $kh; ++kh) {
                        const int ih = oh * $sh - $pt + kh * $dh;
                        if (ih < 0 || ih >= $h_in) continue;
                        for (int kw = 0; kw < $kw; ++kw) {
                            const int iw = ow * $sw - $pl + kw * $dw;
                            if (iw < 0 || iw >= $w_in) continue;
                            acc += (int32_t)${w}[((o * $cg + c) * $kh + kh) * $kw + kw]
                                 * (int32_t)${x}[(ci * $h_in + ih) * $w_in + iw];
                        }
                    }
                }
                ${y}[(o * $h_out + oh) * $w_out + ow] = acc;
            }
        }
    }
""")

# Window loops shared by both poolings: `$init`, `$fold` and `$store` differ.
POOL = Template("""\
    for (int c = 0; c < $c; ++c) {
        for (int oh = 0; oh < $h_out; ++oh) {
            for (int ow = 0; ow < $w_out; ++ow) {
                int32_t m = $init;
                for (int kh = 0; kh < $kh; ++kh) {
                    const int ih = oh * $sh - $pt + kh;
                    if (ih < 0 || ih >= $h_in) continue;
                    for (int kw = 0; kw < $kw; ++kw) {
                        const int iw = ow * $sw - $pl + kw;
                        if (iw < 0 || iw >= $w_in) continue;
                        $fold
                    }
                }
                {
                    const int j = (c * $h_out + oh) * $w_out + ow;
                    $store
                }
            }
        }
    }
""")

AVGPOOL_FOLD = "m += ${src}[(c * $h_in + ih) * $w_in + iw];"
AVGPOOL_STORE = "${y}[j] = m;"

# Expectation-compensated max: S += x; out = max(window of S) - previous max.
MAXPOOL_PRE = Template("""\
    for (int i = 0; i < $n_in; ++i) ${sum}[i] += ${x}[i];
""")
MAXPOOL_FOLD = (
    "if (${src}[(c * $h_in + ih) * $w_in + iw] > m) m = ${src}[(c * $h_in + ih) * $w_in + iw];"
)
MAXPOOL_STORE = "${y}[j] = m - ${prev}[j]; ${prev}[j] = m;"

ADD_TERM = Template("(int64_t)${m}[$mi] * (int64_t)${x}[i]")
# floor(sum / 2^shift) written without >> on a negative value (implementation-defined in C).
ADD = Template("""\
    for (int i = 0; i < $n; ++i) {
        const int64_t acc = $terms;
        ${y}[i] = (int32_t)(acc >= 0 ? acc / $div : -((-acc + $div - 1) / $div));
    }
""")

CONCAT_PART = Template("""\
        for (int i = 0; i < $inner; ++i) ${y}[o * $inner_out + $offset + i] = ${x}[o * $inner + i];
""")
CONCAT = Template("""\
    for (int o = 0; o < $outer; ++o) {
$parts    }
""")

IF_NEURON = Template("""\
    for (int i = 0; i < $n; ++i) {
        const int32_t th = ${th}[$ti];
        int32_t v = ${v}[i] + ${x}[i];
        int8_t s = 0;
        if (v >= th) {
            s = 1;
            v -= th;
        }$signed_branch
        ${v}[i] = v;
        ${y}[i] = s;
    }
""")

IF_SIGNED = Template(""" else if (v < 0 && ${count}[i] > 0) {
            s = -1;
            v += th;
        }
        ${count}[i] += s;""")

# Bipolar neurons (signed values, no floor on the count): no count to keep.
IF_BIPOLAR = """ else if (v < 0) {
            s = -1;
            v += th;
        }"""

# Graded neurons (spike_bits b, K = 2^b - 1): s = clamp(floor(v / th), $low, K), v -= s * th.
# C's / truncates toward zero: floor for v >= 0, and -ceil(-v / th) = -((th - 1 - v) / th)
# below 0 (in 64 bits: th - 1 - v may pass int32 where v is near its proven bound).
# $low: 0 (unsigned), -K (bipolar), or -min(K, count) (signed: the count never drops below 0).
IF_GRADED = Template("""\
    for (int i = 0; i < $n; ++i) {
        const int32_t th = ${th}[$ti];
        int32_t v = ${v}[i] + ${x}[i];
        int32_t s = v >= 0 ? v / th : (int32_t)(-(((int64_t)th - 1 - v) / th));
        int32_t low = $low;
        if (s > $levels) s = $levels;
        if (s < low) s = low;
        v = (int32_t)((int64_t)v - (int64_t)s * th);$count_update
        ${v}[i] = v;
        ${y}[i] = (int8_t)s;
    }
""")

IF_RESET = Template("""\
    for (int i = 0; i < $n; ++i) ${v}[i] = ${th}[$ti] / 2; /* th > 0: floor(th / 2) */
""")

ACCUMULATE = Template("""\
    for (int i = 0; i < $n; ++i) {
        spk_state.${acc}[i] += ${y}[i];
        out[$offset + i] = spk_state.${acc}[i];
    }
""")
