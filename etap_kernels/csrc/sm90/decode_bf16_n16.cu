// ETAP decode instantiation: bf16, 16 query rows per consumer warpgroup.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH(bf16, cutlass::bfloat16_t, 16, false)
