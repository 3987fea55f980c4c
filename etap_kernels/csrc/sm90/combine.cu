// Merges the fp32 partials of sequences whose KV range was split across CTAs (lse in log2 units
// until the final write). Only split sequences get blocks, so a single long sequence is merged
// by many SMs at once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "../etap_params.h"

namespace etap {
namespace {

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

constexpr int kWeightChunk = 256;
constexpr int kBatch = 8;  // partial rows in flight per thread

// Two shapes: "narrow" (one 128-thread block per row) when many sequences are split a few ways
// each, "wide" (4 column chunks x 16 slot slices of 32 threads) when a few sequences are split
// up to ~132 ways, so each thread still waits for one or two rounds of loads.
template <int kColChunks, int kSlices>
struct CombineShape {
  static constexpr int kChunks = kColChunks;
  static constexpr int kSliceCount = kSlices;
  static constexpr int kColThreads = kDimV / kColChunks / 4;  // 4 output columns per thread
  static constexpr int kThreads = kColThreads * kSlices;
};
using NarrowCombine = CombineShape<1, 1>;
using WideCombine = CombineShape<4, 16>;

// Block (q, group, row * kChunks + chunk): the q-th split sequence from the schedule's work list
// (meta[q][5]), one query row, 512 / kChunks of its columns. Slice s of the block sums slots s,
// s + kSlices, ... for 4 columns per thread, kBatch loads at a time, then the slices add up
// through shared memory.
template <class T, class Shape>
__global__ void __launch_bounds__(Shape::kThreads) combine_kernel(const __grid_constant__ DecodeParams p) {
  constexpr int kColChunks = Shape::kChunks, kSlices = Shape::kSliceCount;
  constexpr int kColThreads = Shape::kColThreads, kCombineThreads = Shape::kThreads;
  const int i = p.sched_meta[blockIdx.x * kMetaInts + 5];
  if (i < 0 || i >= p.batch) return;
  const int g = blockIdx.y, local = blockIdx.z / kColChunks, chunk = blockIdx.z % kColChunks;
  const int row = g * p.rows_per_group + local;
  if (local >= p.rows_per_group || row >= p.rows) return;
  const int first = p.num_splits[i], count = p.num_splits[i + 1] - first;
  if (count <= 0 || first < 0 || first + count > p.max_slots) return;

  __shared__ float weight[kWeightChunk];
  __shared__ float4 slice_sum[kSlices > 1 ? kSlices - 1 : 1][kColThreads];
  const int tid = threadIdx.x, lane = tid % 32;
  const int slice = tid / kColThreads, col = chunk * kColThreads + tid % kColThreads;
  // Slot k of this row: lse at lse_first[k * lse_stride], partial output at base[k * slot_stride].
  const int lse_stride = p.num_groups * kRowsPerCta;
  const int64_t slot_stride = int64_t(lse_stride) * kDimV;
  const int64_t slot0 = (int64_t(first) * p.num_groups + g) * kRowsPerCta + local;
  const float* lse_first = p.lse_accum + slot0;
  auto lse_of = [&](int k) { return lse_first[k * lse_stride]; };
  // Max and sum of 2^lse over the slots, across the whole block (one load per thread for <= 512 slots).
  __shared__ float warp_red[kCombineThreads / 32];
  static_assert(kCombineThreads % 32 == 0, "whole warps");
  auto block_reduce = [&](float x, bool is_max) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const float o = __shfl_xor_sync(0xffffffff, x, off);
      x = is_max ? fmaxf(x, o) : x + o;
    }
    if (lane == 0) warp_red[tid / 32] = x;
    __syncthreads();
    float r = warp_red[0];
    for (int w = 1; w < kCombineThreads / 32; ++w) r = is_max ? fmaxf(r, warp_red[w]) : r + warp_red[w];
    __syncthreads();
    return r;
  };
  const int tok = row / p.h_q, head = row % p.h_q;
  T* out = static_cast<T*>(p.out) + i * p.out_stride[0] + tok * p.out_stride[1] + head * p.out_stride[2];
  const float* base = p.o_accum + slot0 * kDimV + col * 4;
  auto write = [&](float4 acc, float m, float sum) {
    alignas(8) T v[4] = {from_float<T>(acc.x), from_float<T>(acc.y), from_float<T>(acc.z), from_float<T>(acc.w)};
    *reinterpret_cast<uint2*>(out + col * 4) = *reinterpret_cast<const uint2*>(v);
    if (col == 0) {  // chunk 0, thread 0
      p.lse[i * p.lse_stride[0] + head * p.lse_stride[1] + tok * p.lse_stride[2]] =
          m == -INFINITY ? -INFINITY : (m + log2f(sum)) * 0.6931471805599453f;
    }
  };
  if constexpr (kSlices == 1) {
    // Narrow: every thread reads all the slots' lse itself (the same addresses across the block)
    // in the same round as its partial rows, and merges them online: no block-wide reductions,
    // and one round of loads instead of lse first, then the partials.
    const float* lse_k = lse_first;
    const float* o_k = base;
    float m = -INFINITY, sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    // kB slots per round of loads: 4 when the sequence is split at most 4 ways (as at b = 64,
    // 4K: 2), so the unrolled round is not mostly predicated-off work; else 16.
    auto merge = [&](auto batch) {
      constexpr int kB = decltype(batch)::value;
      for (int k0 = 0; k0 < count; k0 += kB, lse_k += kB * lse_stride, o_k += kB * slot_stride) {
        float l[kB];
        float4 v[kB];
#pragma unroll
        for (int j = 0; j < kB; ++j) {
          // Predicated: past the end nothing is loaded (weight 0 below); a batch is mostly past
          // the end when sequences are split only 2-3 ways.
          const bool ok = k0 + j < count;
          l[j] = ok ? lse_k[j * lse_stride] : -INFINITY;
          v[j] = ok ? *reinterpret_cast<const float4*>(o_k + j * slot_stride) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        float mb = m;
#pragma unroll
        for (int j = 0; j < kB; ++j) mb = fmaxf(mb, l[j]);
        if (mb == -INFINITY) continue;  // no keys in any slot so far
        const float x = exp2f(m - mb);  // 0 while m is still -inf
        sum *= x;
        acc.x *= x;
        acc.y *= x;
        acc.z *= x;
        acc.w *= x;
#pragma unroll
        for (int j = 0; j < kB; ++j) {
          const float w = exp2f(l[j] - mb);  // 0 for slots past the end
          sum += w;
          acc.x += w * v[j].x;
          acc.y += w * v[j].y;
          acc.z += w * v[j].z;
          acc.w += w * v[j].w;
        }
        m = mb;
      }
    };
    if (count <= 4) merge(std::integral_constant<int, 4>{});
    else merge(std::integral_constant<int, 2 * kBatch>{});
    const float inv = m == -INFINITY ? 0.f : 1.f / sum;
    write(make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv), m, sum);
    return;
  }
  float mine = -INFINITY;
  for (int k = tid; k < count; k += kCombineThreads) mine = fmaxf(mine, lse_of(k));
  const float m = block_reduce(mine, true);
  float part = 0.f;
  if (m != -INFINITY)
    for (int k = tid; k < count; k += kCombineThreads) part += exp2f(lse_of(k) - m);
  const float sum = block_reduce(part, false);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (m != -INFINITY) {
    const float inv = 1.f / sum;
    for (int k0 = 0; k0 < count; k0 += kWeightChunk) {
      __syncthreads();  // the previous chunk's weights are no longer read
      for (int k = tid; k < kWeightChunk; k += kCombineThreads)
        weight[k] = k0 + k < count ? exp2f(lse_of(k0 + k) - m) * inv : 0.f;
      __syncthreads();
      const int n = min(kWeightChunk, count - k0);
      for (int kb = slice; kb < n; kb += kSlices * kBatch) {
        float4 v[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int k = kb + j * kSlices;
          // Past the end: reload slot n - 1 (weight 0 below), so the loads need no branch.
          v[j] = *reinterpret_cast<const float4*>(base + (k0 + min(k, n - 1)) * slot_stride);
        }
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int k = kb + j * kSlices;
          const float w = k < n ? weight[k] : 0.f;
          acc.x += w * v[j].x;
          acc.y += w * v[j].y;
          acc.z += w * v[j].z;
          acc.w += w * v[j].w;
        }
      }
    }
  }
  if (slice > 0) slice_sum[slice - 1][tid % kColThreads] = acc;
  __syncthreads();
  if (slice > 0) return;
#pragma unroll
  for (int s2 = 0; s2 < kSlices - 1; ++s2) {
    const float4 o = slice_sum[s2][tid % kColThreads];
    acc.x += o.x;
    acc.y += o.y;
    acc.z += o.z;
    acc.w += o.w;
  }
  write(acc, m, sum);
}

}  // namespace

int launch_combine(const DecodeParams& p, bool is_fp16, void* stream) {
  // The schedule lists the split sequences first in meta[q][5]: at most min(batch, num_parts)
  // of them, so no block is launched only to find an empty entry.
  const int listed = p.batch < p.num_parts ? p.batch : p.num_parts;
  // Split sequences hold about 2 * num_parts / listed slots each.
  const bool wide = 32 * listed <= 2 * p.num_parts;  // 16+ slots each
  auto s = static_cast<cudaStream_t>(stream);
  auto launch = [&](auto kernel, auto shape) {
    using Shape = decltype(shape);
    dim3 grid(listed, p.num_groups, p.rows_per_group * Shape::kChunks);
    kernel<<<grid, Shape::kThreads, 0, s>>>(p);
  };
  if (is_fp16) {
    if (wide) launch(combine_kernel<__half, WideCombine>, WideCombine{});
    else launch(combine_kernel<__half, NarrowCombine>, NarrowCombine{});
  } else {
    if (wide) launch(combine_kernel<__nv_bfloat16, WideCombine>, WideCombine{});
    else launch(combine_kernel<__nv_bfloat16, NarrowCombine>, NarrowCombine{});
  }
  return int(cudaGetLastError());
}

}  // namespace etap
