// Merges the fp32 partials of sequences whose KV range was split across CTAs.
// Block (sequence i, row group g); a warp per query row; lse in log2 units until the final write.
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

constexpr int kCombineWarps = 8;

template <class T>
__global__ void __launch_bounds__(kCombineWarps * 32) combine_kernel(const __grid_constant__ DecodeParams p) {
  const int i = blockIdx.x, g = blockIdx.y;
  const int first = p.num_splits[i], count = p.num_splits[i + 1] - first;
  if (count <= 0) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool slots_ok = first >= 0 && first + count <= p.max_slots;

  for (int local = warp; local < p.rows_per_group; local += kCombineWarps) {
    const int row = g * p.rows_per_group + local;
    if (row >= p.rows) break;
    const int tok = row / p.h_q, head = row % p.h_q;
    auto lse_of = [&](int k) {
      return p.lse_accum[(int64_t(first + k) * p.num_groups + g) * kRowsPerCta + local];
    };
    float m = -INFINITY;
    if (slots_ok)
      for (int k = lane; k < count; k += 32) m = fmaxf(m, lse_of(k));
#pragma unroll
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, off));
    float sum = 0.f;
    if (m != -INFINITY)
      for (int k = lane; k < count; k += 32) sum += exp2f(lse_of(k) - m);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);

    // Each lane owns 16 of the 512 output columns: two runs of 8 (16-byte stores).
    float acc[16];
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] = 0.f;
    if (m != -INFINITY) {
      const float inv = 1.f / sum;
      for (int k = 0; k < count; ++k) {
        const float w = exp2f(lse_of(k) - m) * inv;
        const float* src = p.o_accum + ((int64_t(first + k) * p.num_groups + g) * kRowsPerCta + local) * kDimV;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float4 a = *reinterpret_cast<const float4*>(src + h * 256 + lane * 8);
          const float4 b = *reinterpret_cast<const float4*>(src + h * 256 + lane * 8 + 4);
          acc[h * 8 + 0] += w * a.x; acc[h * 8 + 1] += w * a.y; acc[h * 8 + 2] += w * a.z; acc[h * 8 + 3] += w * a.w;
          acc[h * 8 + 4] += w * b.x; acc[h * 8 + 5] += w * b.y; acc[h * 8 + 6] += w * b.z; acc[h * 8 + 7] += w * b.w;
        }
      }
    }
    T* out = static_cast<T*>(p.out) + i * p.out_stride[0] + tok * p.out_stride[1] + head * p.out_stride[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      alignas(16) T v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = from_float<T>(acc[h * 8 + e]);
      *reinterpret_cast<uint4*>(out + h * 256 + lane * 8) = *reinterpret_cast<const uint4*>(v);
    }
    if (lane == 0) {
      p.lse[i * p.lse_stride[0] + head * p.lse_stride[1] + tok * p.lse_stride[2]] =
          m == -INFINITY ? -INFINITY : (m + log2f(sum)) * 0.6931471805599453f;
    }
  }
}

}  // namespace

int launch_combine(const DecodeParams& p, bool is_fp16, void* stream) {
  dim3 grid(p.batch, p.num_groups);
  auto s = static_cast<cudaStream_t>(stream);
  if (is_fp16)
    combine_kernel<__half><<<grid, kCombineWarps * 32, 0, s>>>(p);
  else
    combine_kernel<__nv_bfloat16><<<grid, kCombineWarps * 32, 0, s>>>(p);
  return int(cudaGetLastError());
}

}  // namespace etap
