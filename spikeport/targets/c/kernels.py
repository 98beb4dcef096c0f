"""C99 kernel templates, one per op (string.Template; `$name` is filled by the emitter).

Each reproduces the reference simulator's integer rule for its op (spikeport/sim/ops.py and
spikeport/sim/arith.py) with int32 accumulation; quantize's range proof guarantees that no
sum or product here overflows int32, so C's undefined signed overflow never happens.
"""

from __future__ import annotations

from string import Template

# `$store` uses acc: the step-major build stores it in y (DENSE_STORE).
DENSE = Template("""\
    for (int r = 0; r < $rows; ++r) {
        for (int o = 0; o < $n_out; ++o) {
            const int8_t *w = &${w}[o * $n_in];
            int32_t acc = ${b}[o];
            for (int i = 0; i < $n_in; ++i) {
                acc += (int32_t)w[i] * (int32_t)${x}[r * $n_in + i];
            }
            $store
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
DENSE_STORE = "${y}[r * $n_out + o] = acc;"

# Window loops shared by both poolings: `$init`, `$fold` and `$store` differ.
POOL = Template("""\
    for (int c = 0; c < $c; ++c) {
        for (int oh = 0; oh < $h_out; ++oh) {
            for (int ow = 0; ow < $w_out; ++ow) {
                $init
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

# One step of one neuron, on the locals v (potential), s (spike) and th (threshold), with the
# current $x: the rule of DESIGN.md section 6, shared by the step-major loop (IF_STEP) and the
# layer-major one (IF_OVER_T). Signed neurons keep their net count in $count.
IF_CORE = Template("""\
v += $x;
        s = 0;
        if (v >= th) {
            s = 1;
            v -= th;
        }$signed_branch""")

IF_SIGNED = Template(""" else if (v < 0 && $count > 0) {
            s = -1;
            v += th;
        }
        $count += s;""")

# Bipolar neurons (signed values, no floor on the count): no count to keep.
IF_BIPOLAR = """ else if (v < 0) {
            s = -1;
            v += th;
        }"""

# Graded neurons (spike_bits b, K = 2^b - 1): s = clamp(floor(v / th), $low, K), v -= s * th.
# C's / truncates toward zero: floor for v >= 0, and -ceil(-v / th) = -((th - 1 - v) / th)
# below 0 (in 64 bits: th - 1 - v may pass int32 where v is near its proven bound).
# $low: 0 (unsigned), -K (bipolar), or -min(K, count) (signed: the count never drops below 0).
IF_GRADED_CORE = Template("""\
v += $x;
        s = v >= 0 ? v / th : (int32_t)(-(((int64_t)th - 1 - v) / th));
        if (s > $levels) s = $levels;
        if (s < $low) s = $low;
        v = (int32_t)((int64_t)v - (int64_t)s * th);$count_update""")

# Step-major: every neuron of the layer, one step; potentials kept in the state struct.
IF_STEP = Template("""\
    for (int i = 0; i < $n; ++i) {
        const int32_t th = ${th}[$ti];
        int32_t v = ${v}[i], s;
        $core
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

# The valid taps of an output's window, computed once per output row / column: taps i in
# [i_lo, i_end) and j in [j_lo, j_end) fall inside the input (padding and dilation).
WINDOW_ROWS = """\
            const int ih0 = oh * $sh - $pt;
            const int i_lo = ih0 < 0 ? (-ih0 + $dh - 1) / $dh : 0;
            const int i_hi = $h_in - ih0 <= 0 ? 0 : ($h_in - ih0 + $dh - 1) / $dh;
            const int i_end = i_hi < $kh ? i_hi : $kh;
"""
WINDOW_COLS = """\
                const int iw0 = ow * $sw - $pl;
                const int j_lo = iw0 < 0 ? (-iw0 + $dw - 1) / $dw : 0;
                const int j_hi = $w_in - iw0 <= 0 ? 0 : ($w_in - iw0 + $dw - 1) / $dw;
                const int j_end = j_hi < $kw ? j_hi : $kw;
"""

# Dense-form conv without per-MAC bounds checks: each output's valid tap range is computed
# once, then row pointers walk the window. `$store` uses acc (the step-major build stores it).
CONV2D_ROWS = Template(f"""\
    for (int o = 0; o < $c_out; ++o) {{
        const int g = o / $og;
        for (int oh = 0; oh < $h_out; ++oh) {{
{WINDOW_ROWS}            for (int ow = 0; ow < $w_out; ++ow) {{
{WINDOW_COLS}                int32_t acc = ${{b}}[o];
                for (int c = 0; c < $cg; ++c) {{
                    const int8_t *wc = &${{w}}[(o * $cg + c) * $kh * $kw];
                    const ${{xt}} *xc = &${{x}}[(g * $cg + c) * $h_in * $w_in];
                    for (int i = i_lo; i < i_end; ++i) {{
                        const int8_t *wr = &wc[i * $kw];
                        const int row = (ih0 + i * $dh) * $w_in + iw0;
                        for (int j = j_lo; j < j_end; ++j) {{
                            acc += (int32_t)wr[j] * (int32_t)xc[row + j * $dw];
                        }}
                    }}
                }}
                $store
            }}
        }}
    }}
""")
CONV2D_STORE = "${y}[(o * $h_out + oh) * $w_out + ow] = acc;"

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

# -- schedules: the model's API around its layers --------------------------------------------

# Step-major (the reference schedule, and the one for every graph): spk_step runs every layer
# for one timestep, so all state lives in one struct for the whole inference.
STEP_MAJOR_STATE = Template("""\
static struct {
    int32_t steps;
$fields
} spk_state;""")

STEP_MAJOR_API = Template("""\
void spk_reset(void)
{
    memset(&spk_state, 0, sizeof spk_state);
$resets}

void spk_step(const spk_input_t *in, int32_t *out)
{
    if (spk_state.steps == 0) {
        /* The inputs are held for the whole inference; layers fed only by them run once. */
$copy_inputs
$static_calls
    }
$step_calls
$accumulate    spk_state.steps++;
}

int spk_run_steps(const spk_input_t *in, int T, int32_t *out)
{
    int t;
    if (T < 1 || T > SPK_MAX_TIMESTEPS) return -1;
    spk_reset();
    for (t = 0; t < T; ++t) {
        spk_step(in, out + t * SPK_OUTPUT_SIZE);
    }
    return 0;
}

int spk_run(const spk_input_t *in, int T, int32_t *out)
{
    int t;
    if (T < 1 || T > SPK_MAX_TIMESTEPS) return -1;
    spk_reset();
    for (t = 0; t < T; ++t) {
        spk_step(in, out);
    }
    return 0;
}
""")

STEP_MAJOR_DECLARATIONS = """\
/* Clear all state (potentials start at floor(threshold / 2)). */
void spk_reset(void);

/* One timestep; writes the output accumulators after this step to `out`. At most
 * SPK_MAX_TIMESTEPS steps after spk_reset(): the state is sized and proven for no more. */
void spk_step(const spk_input_t *in, int32_t *out);
"""

# Layer-major (feed-forward graphs): each layer runs all T steps before the next; spikes are
# kept bit-packed between layers, a neuron's potential is a local while its T steps run. The
# arguments of the call are what every layer reads.
LAYER_MAJOR_STATE = """\
static struct {
    const spk_input_t *in;
    int32_t *out;
    int stride; /* out[t * stride + i]: SPK_OUTPUT_SIZE (every step) or 0 (the last only) */
    int T;
} spk_args;"""

LAYER_MAJOR_API = Template("""\
static int spk_layers(const spk_input_t *in, int T, int32_t *out, int stride)
{
    if (T < 1 || T > SPK_MAX_TIMESTEPS) return -1; /* the packed buffers hold SPK_MAX_TIMESTEPS */
    spk_args.in = in;
    spk_args.out = out;
    spk_args.stride = stride;
    spk_args.T = T;
$calls
    return 0;
}

int spk_run_steps(const spk_input_t *in, int T, int32_t *out)
{
    return spk_layers(in, T, out, SPK_OUTPUT_SIZE);
}

int spk_run(const spk_input_t *in, int T, int32_t *out)
{
    return spk_layers(in, T, out, 0);
}
""")

LAYER_MAJOR_DECLARATIONS = """\
/* Layer-major schedule: spk_run computes all T steps in one call, one layer after the other,
 * with spikes bit-packed between layers; there is no per-step spk_reset()/spk_step(). */
#define SPK_LAYER_MAJOR 1
"""

# -- layer-major kernels (layer_major.py) ------------------------------------------------------
# A packed tensor keeps, per element, its values of every step in one word: field t (bits
# [t * b, t * b + b)) holds value - lo. The layers below compute, per output element j, its
# value of every step, then hand them to a sink: a neuron run over the T steps (IF_OVER_T), a
# packed word (PACK_OVER_T), or the output accumulators (OUT_OVER_T); `$cur` is the value of
# step t, `j` the element.

IF_OVER_T = Template("""\
            {
                const int32_t th = ${th}[$ti];
                int32_t v = th / 2, s;$count_decl
                $word y = 0;
                for (int t = 0; t < T; ++t) {
                    $core
                    y |= ($word)(($word)(s - $lo) << (t * $bits));
                }
                ${y}[j] = y;
            }
""")

PACK_OVER_T = Template("""\
            {
                $word y = 0;
                for (int t = 0; t < T; ++t) y |= ($word)(($word)($cur - $lo) << (t * $bits));
                ${y}[j] = y;
            }
""")

# The accumulators of every step (stride SPK_OUTPUT_SIZE), or of the last only (stride 0).
OUT_OVER_T = Template("""\
            {
                int32_t a = 0;
                for (int t = 0; t < T; ++t) {
                    a += $cur;
                    spk_args.out[t * spk_args.stride + $offset + j] = a;
                }
            }
""")

# The events of one packed input word into the currents of a block of $B outputs, every step:
# cur[t * B + o] += k_t * w[o] (the event-driven kernel's rule, for all steps of one input);
# $add_w / $add_kw: that loop over the block (block_add).
SCATTER_PACKED = Template("""\
                {
                    $word x = $src;
                    const int8_t *w = $wp;
                    for (int t = 0; $more; ++t, x >>= $bits) {
                        const int32_t k = (int32_t)(x & ${mask}u) + $lo;
                        $ct *cu = &${cur}[t * $B];
                        if (k == 0) continue;
                        if (k == 1) {
                            $add_w
                        } else {
                            $add_kw
                        }
                    }
                }
""")


def block_add(B: int, term: str) -> str:
    """for o < B: cu[o] += term(o), unrolled by 4 (or 2) where B allows: the loop's count,
    compare and branch then come once per 4 outputs (Cortex-M3 at -O2 and -Os unrolls none)."""
    step = next(u for u in (4, 2, 1) if B % u == 0)
    adds = " ".join(f"cu[o + {u}] += {term.format(o=f'o + {u}')};" for u in range(step))
    adds = adds.replace("o + 0", "o")
    return f"for (int o = 0; o < {B}; o += {step}) {{ {adds} }}"


BLOCK_BIAS = Template("""\
            for (int t = 0; t < T; ++t) {
                for (int o = 0; o < $B; ++o) ${cur}[t * $B + o] = ${b}[$o_first + o];
            }
""")

# Dense on packed spikes, $B outputs a block; weights transposed ($wt[i * n_out + o]).
DENSE_PACKED = Template("""\
    for (int r = 0; r < $rows; ++r) {
        for (int o0 = 0; o0 < $n_out; o0 += $B) {
$bias            for (int i = 0; i < $n_in; ++i) {
$scatter            }
            for (int o = 0; o < $B; ++o) {
                const int32_t j = r * $n_out + o0 + o;
$sink            }
        }
    }
""")

# Conv on packed spikes: per output position, a block of $B channels of one group; weights as
# the event-driven conv has them ($wt[((ci * kh + i) * kw + j) * og + o]).
CONV2D_PACKED = Template(f"""\
    for (int g = 0; g < $groups; ++g) {{
        for (int o0 = 0; o0 < $og; o0 += $B) {{
            for (int oh = 0; oh < $h_out; ++oh) {{
{WINDOW_ROWS}            for (int ow = 0; ow < $w_out; ++ow) {{
{WINDOW_COLS}$bias                for (int c = 0; c < $cg; ++c) {{
                    const int ci = g * $cg + c;
                    for (int i = i_lo; i < i_end; ++i) {{
                        const int row = (ci * $h_in + ih0 + i * $dh) * $w_in + iw0;
                        for (int jj = j_lo; jj < j_end; ++jj) {{
$scatter                        }}
                    }}
                }}
                for (int o = 0; o < $B; ++o) {{
                    const int32_t j = ((g * $og + o0 + o) * $h_out + oh) * $w_out + ow;
$sink                }}
            }}
            }}
        }}
    }}
""")

# Pools on packed values, one output at a time, its values of every step in ${cur}[t]: the
# average pool sums them; the max pool keeps the running sums' maximum M_t and emits
# M_t - M_(t-1) (M_0 = 0), as the step-major one does with its state.
AVGPOOL_PACKED_INIT = "for (int t = 0; t < T; ++t) ${cur}[t] = 0;"
AVGPOOL_PACKED_FOLD = (
    "{ $word x = ${src}[(c * $h_in + ih) * $w_in + iw]; "
    "for (int t = 0; $more; ++t, x >>= $bits) ${cur}[t] += (int32_t)(x & ${mask}u) + $lo; }"
)
MAXPOOL_PACKED_INIT = "for (int t = 0; t < T; ++t) ${cur}[t] = INT32_MIN;"
MAXPOOL_PACKED_FOLD = (
    "{ $word x = ${src}[(c * $h_in + ih) * $w_in + iw]; int32_t run = 0; "
    "for (int t = 0; t < T; ++t, x >>= $bits) { run += (int32_t)(x & ${mask}u) + $lo; "
    "if (run > ${cur}[t]) ${cur}[t] = run; } }"
)
MAXPOOL_PACKED_DIFF = "for (int t = T - 1; t > 0; --t) ${cur}[t] -= ${cur}[t - 1];\n"

# Verification builds: a neuron layer's spikes of every step, unpacked for the probe hook.
PROBE_PACKED = Template("""\
#ifdef SPK_PROBE_HOOK
    for (int t = 0; t < T; ++t) {
        for (int j = 0; j < $n; ++j) {
            spk_probe_buf[j] = (int8_t)((int32_t)((${y}[j] >> (t * $bits)) & ${mask}u) + $lo);
        }
        spk_probe($p, t + 1, spk_probe_buf, $n);
    }
#endif
""")
