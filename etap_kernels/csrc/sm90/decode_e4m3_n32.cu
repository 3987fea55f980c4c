// ETAP decode instantiation: e4m3 cache, bf16 queries and output, 32 query rows per consumer warpgroup.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH(e4m3, cutlass::bfloat16_t, 32, true)
