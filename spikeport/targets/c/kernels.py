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

# -- fast kernels (issue #21), each tested bit-equal to the reference loops above -------------
# Integer sums do not depend on their order and the range proof bounds every partial sum, so
# these give the reference's integers exactly.

# Event-driven dense: walk the step's nonzero spikes; each adds its column of the transposed
# weights ($wt[i * n_out + o]), times its count k for graded or signed spikes.
DENSE_EVENTS = Template("""\
    for (int r = 0; r < $rows; ++r) {
        ${yt} *acc = &${y}[r * $n_out];
        const int8_t *xs = &${x}[r * $n_in];
        for (int o = 0; o < $n_out; ++o) acc[o] = ${b}[o];
        for (int i = 0; i < $n_in; ++i) {
            const int32_t k = xs[i];
            const int8_t *w = &${wt}[i * $n_out];
            if (k == 0) continue;
            if (k == 1) {
                for (int o = 0; o < $n_out; ++o) acc[o] += w[o];
            } else {
                for (int o = 0; o < $n_out; ++o) acc[o] += k * w[o];
            }
        }
    }
""")

# Event-driven conv: each nonzero input spike (ci, ih, iw) adds, at every output position its
# taps reach, the weights of its channel group ($wt[((ci * kh + i) * kw + j) * og + o]).
CONV2D_EVENTS = Template("""\
    for (int o = 0; o < $c_out; ++o) {
        for (int p = 0; p < $h_out * $w_out; ++p) ${y}[o * $h_out * $w_out + p] = ${b}[o];
    }
    for (int ci = 0; ci < $c_in; ++ci) {
        ${yt} *group = &${y}[(ci / $cg) * $og * $h_out * $w_out];
        for (int ih = 0; ih < $h_in; ++ih) {
            for (int iw = 0; iw < $w_in; ++iw) {
                const int32_t k = ${x}[(ci * $h_in + ih) * $w_in + iw];
                if (k == 0) continue;
                for (int i = 0; i < $kh; ++i) {
                    const int nh = ih + $pt - i * $dh;
                    if (nh < 0 || nh % $sh != 0 || nh / $sh >= $h_out) continue;
                    for (int j = 0; j < $kw; ++j) {
                        const int nw = iw + $pl - j * $dw;
                        const int8_t *w = &${wt}[((ci * $kh + i) * $kw + j) * $og];
                        ${yt} *acc;
                        if (nw < 0 || nw % $sw != 0 || nw / $sw >= $w_out) continue;
                        acc = &group[(nh / $sh) * $w_out + nw / $sw];
                        if (k == 1) {
                            for (int o = 0; o < $og; ++o) acc[o * $h_out * $w_out] += w[o];
                        } else {
                            for (int o = 0; o < $og; ++o) acc[o * $h_out * $w_out] += k * w[o];
                        }
                    }
                }
            }
        }
    }
""")

# Dense-form conv without per-MAC bounds checks: each output's valid tap range is computed
# once, then row pointers walk the window.
CONV2D_ROWS = Template("""\
    for (int o = 0; o < $c_out; ++o) {
        const int g = o / $og;
        for (int oh = 0; oh < $h_out; ++oh) {
            const int ih0 = oh * $sh - $pt;
            const int i_lo = ih0 < 0 ? (-ih0 + $dh - 1) / $dh : 0;
            const int i_hi = $h_in - ih0 <= 0 ? 0 : ($h_in - ih0 + $dh - 1) / $dh;
            for (int ow = 0; ow < $w_out; ++ow) {
                const int iw0 = ow * $sw - $pl;
                const int j_lo = iw0 < 0 ? (-iw0 + $dw - 1) / $dw : 0;
                const int j_hi = $w_in - iw0 <= 0 ? 0 : ($w_in - iw0 + $dw - 1) / $dw;
                const int i_end = i_hi < $kh ? i_hi : $kh;
                const int j_end = j_hi < $kw ? j_hi : $kw;
                int32_t acc = ${b}[o];
                for (int c = 0; c < $cg; ++c) {
                    const int8_t *wc = &${w}[(o * $cg + c) * $kh * $kw];
                    const ${xt} *xc = &${x}[(g * $cg + c) * $h_in * $w_in];
                    for (int i = i_lo; i < i_end; ++i) {
                        const int8_t *wr = &wc[i * $kw];
                        const int row = (ih0 + i * $dh) * $w_in + iw0;
                        for (int j = j_lo; j < j_end; ++j) {
                            acc += (int32_t)wr[j] * (int32_t)xc[row + j * $dw];
                        }
                    }
                }
                ${y}[(o * $h_out + oh) * $w_out + ow] = acc;
            }
        }
    }
""")

# Transposed conv as a scatter (its definition, sim/kernels.conv_transpose2d): each nonzero
# input (c, h, w) adds x * w[c][o][i][j] at output (h * sh + i * dh - pt, w * sw + j * dw - pl)
# when that lies inside the cropped output; every output starts at its bias.
CONV_TRANSPOSE2D = Template("""\
    for (int o = 0; o < $c_out; ++o) {
        for (int p = 0; p < $h_out * $w_out; ++p) ${y}[o * $h_out * $w_out + p] = ${b}[o];
    }
    for (int c = 0; c < $c_in; ++c) {
        const int g = c / $cg;
        for (int h = 0; h < $h_in; ++h) {
            for (int w = 0; w < $w_in; ++w) {
                const int32_t x = ${x}[(c * $h_in + h) * $w_in + w];
                if (x == 0) continue;
                for (int i = 0; i < $kh; ++i) {
                    const int oh = h * $sh + i * $dh - $pt;
                    if (oh < 0 || oh >= $h_out) continue;
                    for (int j = 0; j < $kw; ++j) {
                        const int ow = w * $sw + j * $dw - $pl;
                        if (ow < 0 || ow >= $w_out) continue;
                        for (int o = 0; o < $og; ++o) {
                            ${y}[((g * $og + o) * $h_out + oh) * $w_out + ow] +=
                                x * ${w}[((c * $og + o) * $kh + i) * $kw + j];
                        }
                    }
                }
            }
        }
    }
""")
