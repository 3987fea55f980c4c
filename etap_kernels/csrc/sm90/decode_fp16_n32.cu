// ETAP decode instantiation: fp16, 32 query rows per consumer warpgroup.
#include "decode_kernel.cuh"
ETAP_DEFINE_LAUNCH(fp16, cutlass::half_t, 32, false)
