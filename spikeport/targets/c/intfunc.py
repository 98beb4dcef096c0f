"""The integer functions of spikeport/sim/intfunc.py in C99: same polynomials, same shifts, same
floor division, on int64_t. No float anywhere.

C's `/` truncates toward zero and `>>` of a negative value is implementation-defined, and `<<`
of a negative value is undefined: every division here goes through spk_floor_div (the
specification's only division, toward -inf), every right shift of a signed value through
spk_asr, and every left shift of a signed value through spk_shl (a multiplication).

Each function is emitted only where a layer uses it (unused static functions would break
-Wall -Werror), together with the functions it calls (`NEEDS`).
"""

from __future__ import annotations

from spikeport.sim import intfunc as F

FUNCTIONS: dict[str, str] = {
    "floor_div": """\
/* floor(a / b) for b > 0 (C's / truncates toward zero). Where both fit 32 bits the division
 * is a 32-bit one: a single instruction on a Cortex-M3, where 64-bit division is a libgcc call. */
static int64_t spk_floor_div(int64_t a, int64_t b)
{
    if (a >= INT32_MIN && a <= INT32_MAX && b <= INT32_MAX) {
        const int32_t a32 = (int32_t)a, b32 = (int32_t)b, q32 = a32 / b32;
        return (a32 % b32 != 0 && a32 < 0) ? (int64_t)q32 - 1 : q32;
    } else {
        const int64_t q = a / b;
        return (a % b != 0 && a < 0) ? q - 1 : q;
    }
}""",
    "asr": """\
/* floor(a / 2^s): an arithmetic right shift written for negative a too. */
static int64_t spk_asr(int64_t a, int s)
{
    return a >= 0 ? a >> s : ~(~a >> s);
}""",
    "shl": """\
/* a * 2^s (<< of a negative value is undefined in C). */
static int64_t spk_shl(int64_t a, int s)
{
    return a * ((int64_t)1 << s);
}""",
    "abs": """\
static int64_t spk_abs(int64_t a)
{
    return a < 0 ? -a : a;
}""",
    "sign": """\
static int64_t spk_sign(int64_t a)
{
    return (a > 0) - (a < 0);
}""",
    "exp": f"""\
/* exp(q * s) for q <= 0 at scale 0.3585 * s^2 (I-BERT i-exp; intfunc.int_exp). */
static int64_t spk_exp(int64_t q, int64_t ln2, int64_t b, int64_t c)
{{
    int64_t z, p;
    if (q < -{F.EXP_ZMAX} * ln2) q = -{F.EXP_ZMAX} * ln2;
    z = spk_floor_div(-q, ln2);
    if (z > {F.EXP_ZMAX}) z = {F.EXP_ZMAX};
    p = q + z * ln2;
    return ((p + b) * (p + b) + c) >> z; /* >= 0: c > 0 */
}}""",
    "softmax": f"""\
/* Softmax of a row of n (scale 2^-10) -> scale 2^-{F.SOFTMAX_OUT_BITS}, in place; keep[j] == 0
 * excludes entry j (it comes out 0), keep == 0 keeps every entry (intfunc.int_softmax). */
static void spk_softmax(int64_t *q, int n, const int32_t *keep, int64_t ln2, int64_t b, int64_t c)
{{
    int64_t top = 0, sum = 0;
    int j, any = 0;
    for (j = 0; j < n; ++j) {{
        if (keep && keep[j] <= 0) continue;
        if (!any || q[j] > top) top = q[j];
        any = 1;
    }}
    for (j = 0; j < n; ++j) {{
        if (keep && keep[j] <= 0) {{
            q[j] = 0;
        }} else {{
            q[j] = spk_exp(q[j] - top, ln2, b, c); /* q[j] - top <= 0 */
            sum += q[j];
        }}
    }}
    if (sum < 1) sum = 1;
    for (j = 0; j < n; ++j) q[j] = spk_floor_div(q[j] << {F.SOFTMAX_OUT_BITS}, sum);
}}""",
    "tanh": f"""\
/* tanh(q * 2^-10) at scale 2^-{F.TANH_OUT_BITS} (intfunc.int_tanh). */
static int64_t spk_tanh(int64_t q, int64_t ln2, int64_t b, int64_t c)
{{
    const int64_t one = spk_exp(0, ln2, b, c);
    const int64_t e = spk_exp(-2 * spk_abs(q), ln2, b, c);
    return spk_sign(q) * spk_floor_div(spk_shl(one - e, {F.TANH_OUT_BITS}), one + e);
}}""",
    "sigmoid": f"""\
/* sigmoid(q * 2^-10) at scale 2^-{F.GATE_BITS}, mirrored below 0 (intfunc.int_sigmoid). */
static int64_t spk_sigmoid(int64_t q, int64_t ln2, int64_t b, int64_t c)
{{
    const int64_t one = spk_exp(0, ln2, b, c);
    const int64_t up = spk_floor_div(one << {F.GATE_BITS}, one + spk_exp(-spk_abs(q), ln2, b, c));
    return q >= 0 ? up : ((int64_t)1 << {F.GATE_BITS}) - up;
}}""",
    "hardsigmoid": f"""\
/* clip(alpha * x + beta, 0, 1) at scale 2^-{F.GATE_BITS} (intfunc.int_hardsigmoid). */
static int64_t spk_hardsigmoid(int64_t q, int64_t mul, int shift, int64_t beta)
{{
    const int64_t g = spk_floor_div(q * mul, (int64_t)1 << shift) + beta;
    return g < 0 ? 0 : (g > ((int64_t)1 << {F.GATE_BITS}) ? ((int64_t)1 << {F.GATE_BITS}) : g);
}}""",
    "gated": f"""\
/* q * gate for a gate of scale 2^-{F.GATE_BITS}, dropping `drop` more bits (intfunc.gated). */
static int64_t spk_gated(int64_t q, int64_t gate, int drop)
{{
    return spk_floor_div(q * gate, (int64_t)1 << ({F.GATE_BITS} + drop));
}}""",
    "gelu": f"""\
/* GELU(q * s) = x * sigmoid(a x + cubic x^3), |x| clipped in the gate (intfunc.int_gelu). */
static int64_t spk_gelu(int64_t q, int64_t a, int64_t cubic, int64_t clip, int64_t ln2,
                        int64_t b, int64_t c, int shift)
{{
    const int64_t x = q < -clip ? -clip : (q > clip ? clip : q);
    const int64_t z = spk_asr(a * x + cubic * x * x * x, {F.GELU_CUBIC_SHIFT});
    return spk_asr(q * spk_sigmoid(z, ln2, b, c), shift);
}}""",
    "gelu_ibert": """\
/* GELU (I-BERT i-GELU, graphs quantized before the sigmoid form; intfunc.int_gelu_ibert). */
static int64_t spk_gelu_ibert(int64_t q, int64_t clip, int64_t c, int64_t one, int shift)
{
    const int64_t u = (spk_abs(q) < clip ? spk_abs(q) : clip) - clip;
    const int64_t erf_neg = spk_sign(q) * (u * u + c);
    return spk_asr(q * (one - erf_neg), shift);
}""",
    "isqrt": """\
/* floor(sqrt(n)) for n >= 0: Newton on integers from 2^ceil(bits / 2) (intfunc.isqrt). */
static int64_t spk_isqrt(int64_t n)
{
    int64_t x, y;
    int bits = 0, k;
    if (n <= 0) return 0;
    while (bits < 63 && (n >> bits) != 0) ++bits;
    x = (int64_t)1 << ((bits + 1) / 2);
    for (k = 0; k < 40; ++k) {
        y = (x + n / x) / 2; /* both >= 0: / is floor */
        if (y >= x) break;
        x = y;
    }
    return x;
}""",
    "layernorm": f"""\
/* LayerNorm of a row of d, in place (intfunc.int_layernorm). */
static void spk_layernorm(int64_t *q, int d, int64_t eps, const int32_t *gamma,
                          const int64_t *beta, int out_shift)
{{
    int64_t sum = 0, mean, var = 0, std;
    int j;
    for (j = 0; j < d; ++j) sum += q[j];
    mean = spk_floor_div(sum, d);
    for (j = 0; j < d; ++j) {{
        q[j] -= mean;
        var += q[j] * q[j];
    }}
    std = spk_isqrt(spk_floor_div(var, d) + eps);
    if (std < 1) std = 1;
    for (j = 0; j < d; ++j) {{
        const int64_t normed = spk_floor_div(spk_shl(q[j], {F.LN_NORM_BITS}), std);
        q[j] = spk_asr(normed * gamma[j] + beta[j], out_shift);
    }}
}}""",
    "l2norm": f"""\
/* q / max(||q||, eps) over a row of d at scale 2^-{F.L2_OUT_BITS}, in place (int_l2norm). */
static void spk_l2norm(int64_t *q, int d, int64_t eps)
{{
    int64_t sum = 0, norm;
    int j;
    for (j = 0; j < d; ++j) sum += q[j] * q[j];
    norm = spk_isqrt(sum);
    if (norm < eps) norm = eps;
    if (norm < 1) norm = 1;
    for (j = 0; j < d; ++j) q[j] = spk_floor_div(spk_shl(q[j], {F.L2_OUT_BITS}), norm);
}}""",
}

NEEDS: dict[str, tuple[str, ...]] = {
    "exp": ("floor_div",),
    "softmax": ("exp",),
    "tanh": ("exp", "abs", "sign", "shl"),
    "sigmoid": ("exp", "abs"),
    "hardsigmoid": ("floor_div",),
    "gated": ("floor_div",),
    "gelu": ("sigmoid", "asr"),
    "gelu_ibert": ("abs", "sign", "asr"),
    "layernorm": ("floor_div", "isqrt", "shl", "asr"),
    "l2norm": ("floor_div", "isqrt", "shl"),
}


def c_functions(used: set[str]) -> str:
    """The C source of the functions in `used` and of those they call, callees first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in NEEDS.get(name, ()):
            visit(dep)
        order.append(name)

    for name in sorted(used):
        visit(name)
    return "\n\n".join(FUNCTIONS[n] for n in order)
