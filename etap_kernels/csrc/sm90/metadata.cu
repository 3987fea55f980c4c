// Split-KV scheduler, computed on the GPU from cache_seqlens (no host synchronisation, so a
// decode step can be captured in a CUDA graph and replayed with new lengths).
// The walk (schedule.cuh) is mirrored line by line in etap_kernels/scheduler.py; a CPU test
// runs it on the host against that mirror.
#include <cuda_runtime.h>

#include "../etap_params.h"
#include "schedule.cuh"

namespace etap {
namespace {

__global__ void metadata_kernel(MetadataParams p) {
  extern __shared__ int tiles[];  // tiles per sequence (at least 1, so empty ones get written)
  __shared__ long long least_pay;  // C = cdiv(total cost, num_parts)
  __shared__ int best_extra;       // the payload is C + best_extra
  for (int i = threadIdx.x; i < p.batch; i += blockDim.x) tiles[i] = schedule_num_tiles(p.seqlens[i]);
  __syncthreads();
  if (threadIdx.x == 0) {
    least_pay = schedule_least_payload(tiles, p.batch, p.num_parts, p.fixed_cost);
    best_extra = p.fixed_cost;  // C + fixed_cost always fits
  }
  __syncthreads();
  // The smallest payload in C .. C + fixed_cost that fits, one candidate per thread: a smaller
  // payload keeps parts from all rounding up (b16/8K at cost 5: 16 tiles each, not 17 and 8 idle).
  for (int k = threadIdx.x; k < p.fixed_cost; k += blockDim.x)
    if (schedule_fits(tiles, p.batch, p.num_parts, least_pay + k, p.fixed_cost)) atomicMin(&best_extra, k);
  __syncthreads();
  if (threadIdx.x == 0)
    schedule_walk(tiles, p.batch, p.num_parts, least_pay + best_extra, p.fixed_cost, p.sched_meta, p.num_splits);
  __syncthreads();  // the walk's rows, in global memory, are visible to the block after it
  for (int part = threadIdx.x; part < p.num_parts; part += blockDim.x)
    schedule_first_len(p.seqlens, p.batch, p.sched_meta + part * kMetaInts);
}

}  // namespace

int launch_metadata(const MetadataParams& p, void* stream) {
  const size_t smem = sizeof(int) * (p.batch > 0 ? p.batch : 1);
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(metadata_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(smem));
    if (err != cudaSuccess) return int(err);
  }
  metadata_kernel<<<1, 1024, smem, static_cast<cudaStream_t>(stream)>>>(p);
  return int(cudaGetLastError());
}

}  // namespace etap
