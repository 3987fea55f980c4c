// ETAP decode instantiation: fp16, dim split, 24 query rows held by both consumer warpgroups.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH_DIM_SPLIT(fp16, cutlass::half_t, 24)
