// ETAP decode instantiation: bf16, dim split, 16 query rows held by both consumer warpgroups.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH_DIM_SPLIT(bf16, cutlass::bfloat16_t, 16)
