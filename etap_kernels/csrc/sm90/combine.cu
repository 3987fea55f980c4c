// Merges the fp32 partials of sequences whose KV range was split across CTAs (lse in log2 units
// until the final write). Only split sequences get blocks, so a single long sequence is merged
// by many SMs at once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../etap_params.h"

namespace etap {
namespace {

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

constexpr int kCombineThreads = kDimV / 4;  // 4 output columns per thread

// Block (q, group, row): the q-th split sequence from the schedule's work list (meta[q][5]),
// one query row; each thread merges 4 of the 512 columns over the sequence's slots.
template <class T>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ DecodeParams p) {
  const int i = p.sched_meta[blockIdx.x * kMetaInts + 5];
  if (i < 0 || i >= p.batch) return;
  const int g = blockIdx.y, local = blockIdx.z;
  const int row = g * p.rows_per_group + local;
  if (local >= p.rows_per_group || row >= p.rows) return;
  const int first = p.num_splits[i], count = p.num_splits[i + 1] - first;
  if (count <= 0 || first < 0 || first + count > p.max_slots) return;

  __shared__ float weight[32];
  __shared__ float stats[2];
  const int tid = threadIdx.x, lane = tid % 32;
  auto lse_of = [&](int k) { return p.lse_accum[(int64_t(first + k) * p.num_groups + g) * kRowsPerCta + local]; };
  if (tid < 32) {
    float m = -INFINITY;
    for (int k = lane; k < count; k += 32) m = fmaxf(m, lse_of(k));
#pragma unroll
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, off));
    float sum = 0.f;
    if (m != -INFINITY)
      for (int k = lane; k < count; k += 32) sum += exp2f(lse_of(k) - m);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);
    if (lane == 0) {
      stats[0] = m;
      stats[1] = sum;
    }
  }
  __syncthreads();
  const float m = stats[0], sum = stats[1];
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (m != -INFINITY) {
    const float inv = 1.f / sum;
    for (int k0 = 0; k0 < count; k0 += 32) {
      // Weights of the next 32 slots, shared by all threads.
      __syncthreads();
      if (tid < 32) weight[tid] = k0 + tid < count ? exp2f(lse_of(k0 + tid) - m) * inv : 0.f;
      __syncthreads();
      const int n = min(32, count - k0);
      for (int k = 0; k < n; ++k) {
        const float w = weight[k];
        const float4 v = *reinterpret_cast<const float4*>(
            p.o_accum + ((int64_t(first + k0 + k) * p.num_groups + g) * kRowsPerCta + local) * kDimV + tid * 4);
        acc[0] += w * v.x;
        acc[1] += w * v.y;
        acc[2] += w * v.z;
        acc[3] += w * v.w;
      }
    }
  }
  const int tok = row / p.h_q, head = row % p.h_q;
  T* out = static_cast<T*>(p.out) + i * p.out_stride[0] + tok * p.out_stride[1] + head * p.out_stride[2];
  alignas(8) T v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = from_float<T>(acc[e]);
  *reinterpret_cast<uint2*>(out + tid * 4) = *reinterpret_cast<const uint2*>(v);
  if (tid == 0) {
    p.lse[i * p.lse_stride[0] + head * p.lse_stride[1] + tok * p.lse_stride[2]] =
        m == -INFINITY ? -INFINITY : (m + log2f(sum)) * 0.6931471805599453f;
  }
}

}  // namespace

int launch_combine(const DecodeParams& p, bool is_fp16, void* stream) {
  // At most num_parts - 1 sequences are split; the schedule lists them (meta[q][5]).
  dim3 grid(p.num_parts, p.num_groups, p.rows_per_group);
  auto s = static_cast<cudaStream_t>(stream);
  if (is_fp16)
    combine_kernel<__half><<<grid, kCombineThreads, 0, s>>>(p);
  else
    combine_kernel<__nv_bfloat16><<<grid, kCombineThreads, 0, s>>>(p);
  return int(cudaGetLastError());
}

}  // namespace etap
