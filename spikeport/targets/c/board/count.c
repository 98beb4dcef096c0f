/* Instruction-count firmware: SPK_RUNS inferences of SPK_T steps on the first embedded input,
 * no output. Built twice (SPK_RUNS=1 and 2); the difference of the two executed-instruction
 * counts is the cost of one inference, start-up excluded. */
#include "model.h"
#include "inputs.h"

int main(void)
{
    int32_t out[SPK_OUTPUT_SIZE] = {0};
    int r;
    for (r = 0; r < SPK_RUNS; ++r) {
        spk_run(&spk_inputs[0], SPK_T, out);
    }
    return out[0] == 0x7fffffff;  /* keeps the work observable */
}
