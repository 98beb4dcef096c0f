/* The block walk the C kernels share (spikeport.sim.native): elements [m0, m1) of a step in
   blocks of at most BLOCK that stay in L1, none crossing the end of a sample (per-sample
   parameters repeat every `period` elements, so a block reads them from one offset). */

#ifndef SPIKEPORT_BLOCKS_H
#define SPIKEPORT_BLOCKS_H

#include <stdint.h>

enum { BLOCK = 1024 }; /* spikeport.sim.native.BLOCK */

/* the length of the block that starts at b0 */
static inline int64_t block_len(int64_t b0, int64_t m1, int64_t period) {
    int64_t len = m1 - b0 < BLOCK ? m1 - b0 : BLOCK;
    int64_t left = period - b0 % period;
    return left < len ? left : len;
}

#endif
