// ETAP decode instantiation: bf16, 8 query rows per consumer warpgroup.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH(bf16, cutlass::bfloat16_t, 8, false)
