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
  for (int i = threadIdx.x; i < p.batch; i += blockDim.x) tiles[i] = schedule_num_tiles(p.seqlens[i]);
  __syncthreads();
  if (threadIdx.x == 0)
    schedule_walk(tiles, p.batch, p.num_parts, schedule_payload(tiles, p.batch, p.num_parts, p.fixed_cost),
                  p.fixed_cost, p.sched_meta, p.num_splits);
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
