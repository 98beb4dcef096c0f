"""What Lava's fixed-point CPU model (lava-nc 0.10.0, `Loihi2SimCfg(select_tag="fixed_pt")`) runs,
as named constants read by the profile, the network plan, the emitter and the docs.

Sources (read in the installed lava-nc 0.10.0): lava/proc/lif/models.py (PyLifModelBitAcc and
AbstractPyLifModelFixed), lava/proc/dense/models.py (PyDenseModelBitAcc), lava/utils/
weightutils.py (clip_weights, truncate_weights); lava-dl netx/hdf5.py for the HDF5 fields.
"""

from __future__ import annotations

from spikeport.sim.arith import int_limit
from spikeport.sim.kinds import LAVA_V_LIMIT, SDN_MAX_STATE_EXP, SDN_STATE_BITS

# LIF, per step: u = trunc(u * (4096 - (du + 1)) / 4096) + (a_in << 6), wrapped to 24 bits;
# v = trunc(v * (4096 - dv) / 4096) + u + (bias_mant << bias_exp), saturated to +-(2^23 - 1);
# spike when v > vth << 6, then v = 0. With DU = 4095, u is the step's input alone; with
# DV = 0, v never leaks: a non-leaky integrate-and-fire that resets to zero.
DU = 4095
DV = 0
ACT_SHIFT = 6  # a_in and vth are shifted left by 6 bits before they meet u and v
BIAS_EXP = 6  # bias_mant << 6: the bias in the same units as a_in (netx uses 6 too)
BIAS_BITS = 13  # bias_mant: signed 13-bit
VTH_MAX = (1 << 17) - 1  # vth: unsigned 17-bit
UV_BITS = 24
# In the specification's units (a_in's), v holds +-LAVA_V_LIMIT = 2^17 - 1: an 18-bit state.
STATE_BITS = 18
assert int_limit(STATE_BITS) == LAVA_V_LIMIT == VTH_MAX
# a_in is declared 16-bit (LavaPyType np.int16, precision 16). The Python model adds it in a
# wider type, but Loihi's input is 16 bits: every per-step synaptic input is kept within it.
A_IN_BITS = 16
# Dense: 8-bit weights. Mixed-sign weights are clipped to [-256, 255] and lose their least
# significant bit (truncate_weights), so an int8 weight w is sent as 2 * w with weight_exp -1:
# a_out = (sum of 2 * w * s) >> 1 = sum of w * s, exactly. Every Dense sends at step t what it
# accumulated at step t - 1 (a_buff): one step of delay per Dense.
WEIGHT_BITS = 8
WEIGHT_SCALE = 2
WEIGHT_EXP = -1
DENSE_DELAY = 1
# The output layer: an LIF that never fires (vth at its maximum; quantize proves the
# accumulator stays below it) and whose v, divided by 2^ACT_SHIFT, is the output accumulator.
OUTPUT_VTH = VTH_MAX

# SigmaDelta (lava/proc/sdn/models.py, PySigmaDeltaModelFixed): a_in, sigma, act, residue and
# the graded s_out are declared int32 with precision 24, bias precision 16; vth has shape (1,)
# (one per population). spike_exp 0; state_exp (messages are s_out >> it; vth and bias are
# mantissas shifted left by it) is declared precision 3: at most 7.
# The graded Dense in front (num_message_bits > 0) computes weights.dot(s_in) on the values.
assert SDN_STATE_BITS == 24
assert SDN_MAX_STATE_EXP == (1 << 3) - 1
SDN_A_IN_LIMIT = int_limit(SDN_STATE_BITS)
SDN_BIAS_BITS = 16
SDN_MESSAGE_BITS = 24  # the payload of one graded message (s_out precision 24)
