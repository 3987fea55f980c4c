// Split-KV scheduler, computed on the GPU from cache_seqlens (no host synchronisation, so a
// decode step can be captured in a CUDA graph and replayed with new lengths).
// The algorithm is mirrored line by line in etap_kernels/scheduler.py (tested on the CPU).
#include <cuda_runtime.h>

#include "../etap_params.h"

namespace etap {
namespace {

// Whether the walk below with payload `pay`, without its last-part rule, covers every sequence
// within num_parts parts.
__device__ bool fits(const int* tiles, int batch, int num_parts, long long pay, int fixed_cost) {
  int i = 0;
  long long t = 0;
  for (int part = 0; part < num_parts && i < batch; ++part) {
    long long rem = pay;
    while (i < batch) {
      const long long need = tiles[i] - t + fixed_cost;
      if (need <= rem) {
        rem -= need;
        ++i;
        t = 0;
      } else {
        if (rem - fixed_cost > 0) t += rem - fixed_cost;
        break;
      }
    }
  }
  return i == batch;
}

__global__ void metadata_kernel(MetadataParams p) {
  extern __shared__ int tiles[];  // tiles per sequence (at least 1, so empty ones get written)
  __shared__ long long least_pay;  // C = cdiv(total cost, num_parts)
  __shared__ int best_extra;       // the payload is C + best_extra
  for (int i = threadIdx.x; i < p.batch; i += blockDim.x) {
    const int len = p.seqlens[i];
    tiles[i] = len <= 0 ? 1 : (len + kTileKV - 1) / kTileKV;
  }
  for (int i = threadIdx.x; i <= p.batch; i += blockDim.x) p.num_splits[i] = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    long long total = 0;
    for (int i = 0; i < p.batch; ++i) total += tiles[i] + p.fixed_cost;
    least_pay = (total + p.num_parts - 1) / p.num_parts;
    best_extra = p.fixed_cost;  // C + fixed_cost always fits (tests/test_scheduler.py)
  }
  __syncthreads();
  // The smallest payload in C .. C + fixed_cost that fits, one candidate per thread: a smaller
  // payload keeps parts from all rounding up (b16/8K at cost 5: 16 tiles each, not 17 and 8 idle).
  for (int k = threadIdx.x; k < p.fixed_cost; k += blockDim.x)
    if (fits(tiles, p.batch, p.num_parts, least_pay + k, p.fixed_cost)) atomicMin(&best_extra, k);
  __syncthreads();
  if (threadIdx.x != 0) return;
  const long long payload = least_pay + best_extra;

  // Walk parts and sequences; count partial pieces per sequence in num_splits[i + 1].
  int i = 0, t = 0;
  for (int part = 0; part < p.num_parts; ++part) {
    int* meta = p.sched_meta + part * kMetaInts;
    meta[0] = i;
    meta[1] = t;
    meta[4] = t == 0 ? 0 : p.num_splits[i + 1];
    long long rem = payload;
    while (i < p.batch) {
      const int need = tiles[i] - t + p.fixed_cost;
      if (need <= rem || part == p.num_parts - 1) {
        if (t > 0) p.num_splits[i + 1] += 1;  // tail piece of a split sequence
        rem -= need;
        ++i;
        t = 0;
      } else {
        const long long take = rem - p.fixed_cost;
        if (take > 0) {
          p.num_splits[i + 1] += 1;  // head or middle piece of a split sequence
          t += int(take);
        }
        break;
      }
    }
    meta[2] = i;
    meta[3] = t;
    meta[5] = -1;
    meta[6] = meta[7] = 0;
  }
  // Work list of the combine kernel: meta[q][5] = the q-th split sequence (at most
  // num_parts - 1 of them), then prefix sums of the slot counts.
  int q = 0;
  for (int k = 0; k < p.batch; ++k) {
    if (p.num_splits[k + 1] > 0 && q < p.num_parts) p.sched_meta[(q++) * kMetaInts + 5] = k;
    p.num_splits[k + 1] += p.num_splits[k];
  }
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
