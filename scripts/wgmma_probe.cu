// WGMMA probe: how many cycles the decode kernel's two GEMMs cost per tile, by N and by how many
// warpgroups issue them at once, with nothing else running. The tile traces
// (scripts/trace_case.py) measured ~60 cycles per 64 x N x 16 WGMMA at N = 8 inside the kernel,
// ~15x its tensor math; this says whether that is the instruction itself (operand fetch from
// shared memory) or the kernel around it.
//   S: S^T = K . Q^T   A = K tile 64 x 576 (K-major, 128B swizzle), B = Q N x 576; 36 WGMMAs
//   O: O^T = V^T . P^T A = V^T 512 x 64 (MN-major view of the same tile), B = P N x 64; 32 WGMMAs
// Each warpgroup runs `reps` tiles' worth of one GEMM back to back into its own accumulators
// (S: `chains` interleaved partial sums, as the kernel does) and thread 0 records clock64().
//   nvcc -O3 -std=c++17 -arch=sm_90a --expt-relaxed-constexpr -I$CUTLASS/include \
//       scripts/wgmma_probe.cu -o /tmp/wgmma_probe && /tmp/wgmma_probe
// ($CUTLASS/include: cutlass_library/source/include of the nvidia-cutlass wheel.)
// Prints, per (GEMM, N, warpgroups): cycles per tile per warpgroup and per WGMMA.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif
#include <cstdio>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

using namespace cute;
using T = cutlass::bfloat16_t;

constexpr int kTile = 64, kQK = 576, kV = 512;

template <int N>
struct Shapes {
  using SwAtom = GMMA::Layout_K_SW128_Atom<T>;
  using LayoutK = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTile>, Int<kQK>>{}));
  using LayoutV = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTile>, Int<kV>>{}));
  using LayoutVt = decltype(composition(LayoutV{}, make_layout(Shape<Int<kV>, Int<kTile>>{}, GenRowMajor{})));
  using LayoutQ = decltype(tile_to_shape(SwAtom{}, Shape<Int<N>, Int<kQK>>{}));
  using LayoutP = decltype(tile_to_shape(SwAtom{}, Shape<Int<N>, Int<kTile>>{}));
  using MmaS = decltype(make_tiled_mma(GMMA::ss_op_selector<T, T, float, Shape<Int<kTile>, Int<N>, Int<kQK>>,
                                                            GMMA::Major::K, GMMA::Major::K>()));
  using MmaO = decltype(make_tiled_mma(GMMA::ss_op_selector<T, T, float, Shape<Int<kV>, Int<N>, Int<kTile>>,
                                                            GMMA::Major::MN, GMMA::Major::K>()));
  // register-A: a 64 x 192 slice of K held in registers (48 per thread), used three times per tile
  // so a tile is still 36 WGMMAs (all of K at once would spill)
  using LayoutK192 = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTile>, Int<kQK / 3>>{}));
  using LayoutQ192 = decltype(tile_to_shape(SwAtom{}, Shape<Int<N>, Int<kQK / 3>>{}));
  using MmaSrs = decltype(make_tiled_mma(GMMA::rs_op_selector<T, T, float, Shape<Int<kTile>, Int<N>, Int<kQK / 3>>,
                                                              GMMA::Major::K, GMMA::Major::K>()));
  // O^T with V^T fed by ldmatrix.trans into registers (register-A), one 64 x 16 block at a time
  using MmaOrs = decltype(make_tiled_mma(GMMA::rs_op_selector<T, T, float, Shape<Int<kV>, Int<N>, Int<kTile>>,
                                                              GMMA::Major::K, GMMA::Major::K>()));
  // register-A fed by ldmatrix from the swizzled K tile, one 64 x 16 k-block just before its WGMMA
  using MmaSrsFull = decltype(make_tiled_mma(GMMA::rs_op_selector<T, T, float, Shape<Int<kTile>, Int<N>, Int<kQK>>,
                                                                  GMMA::Major::K, GMMA::Major::K>()));
};

struct alignas(1024) Smem {
  alignas(1024) T kv[kTile * kQK];
  alignas(1024) T q[2][256 * kQK / 4];  // B operands: Q (N x 576) or P (N x 64); N <= 64 for Q
};

// S^T for `reps` tiles, 36 WGMMAs each (sweeping A's k-blocks again where A holds fewer), into
// `kChains` interleaved accumulators as the kernel does; returns the sum of every result so no
// WGMMA is dropped as dead code.
template <int N, int kChains, bool kRegA, class Mma, class TA, class TB>
__device__ float s_gemm_tiles(Mma& mma, TA& tA, TB& tB, int reps) {
  using Acc = decltype(partition_fragment_C(mma, Shape<Int<kTile>, Int<N>>{}));
  Acc acc[kChains];
  constexpr int kBlocks = decltype(size<2>(tA))::value;
  for (int r = 0; r < reps; ++r) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) warpgroup_fence_operand(acc[c]);
    if constexpr (kRegA) warpgroup_fence_operand(tA);
    warpgroup_arrive();
#pragma unroll
    for (int k = 0; k < kQK / 16; ++k) {
      mma.accumulate_ = k < kChains ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
      cute::gemm(mma, tA(_, _, k % kBlocks), tB(_, _, k % kBlocks), acc[k % kChains]);
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
#pragma unroll
    for (int c = 0; c < kChains; ++c) warpgroup_fence_operand(acc[c]);
  }
  float total = 0.f;
#pragma unroll
  for (int c = 0; c < kChains; ++c)
    for (int i = 0; i < size(acc[c]); ++i) total += acc[c](i);
  return total;
}

// One tile of register-A WGMMAs fed by ldmatrix: each k-block of A is copied from shared memory
// just before its WGMMA, gemm_block(k) issues that k-block, and at most kInFlight + 1 blocks stay
// in flight (register A is read until its WGMMA completes).
template <int kInFlight, class Copy, class TS, class TR, class TA, class F>
__device__ void ldsm_rs_tile(Copy& s2r, TS& tXs, TR& tXr, TA& tAr, F&& gemm_block) {
#pragma unroll
  for (int k = 0; k < decltype(size<2>(tAr))::value; ++k) {
    copy(s2r, tXs(_, _, k), tXr(_, _, k));
    auto block = tAr(_, _, k);
    warpgroup_fence_operand(block);
    warpgroup_arrive();
    gemm_block(k);
    warpgroup_commit_batch();
    warpgroup_wait<kInFlight>();
  }
  warpgroup_wait<0>();
}

// kRS: 0 = A from shared memory; 1 = S^T with A (the K tile) already in registers (no ldmatrix
// counted: the bound for feeding K from registers); 2 = A by ldmatrix (S^T) or ldmatrix.trans
// (O^T) into registers just before each WGMMA (ldsm_rs_tile).
template <int N, int kChains, bool kO, int kRS = 0>
__global__ void __launch_bounds__(256, 1) probe(int reps, long long* cycles, float* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using S = Shapes<N>;
  extern __shared__ __align__(1024) char raw[];
  auto& sm = *reinterpret_cast<Smem*>(raw);
  const int tid = threadIdx.x % 128, wg = threadIdx.x / 128;
  for (int i = threadIdx.x; i < kTile * kQK; i += blockDim.x) sm.kv[i] = T(float((i * 7) % 13) / 13.f);
  for (int i = threadIdx.x; i < 2 * 256 * kQK / 4; i += blockDim.x) (&sm.q[0][0])[i] = T(float((i * 5) % 11) / 11.f);
  __syncthreads();
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  float total = 0.f;
  long long t0 = clock64();
  if constexpr (kRS == 2 && !kO) {
    typename S::MmaSrsFull mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor sK = make_tensor(make_smem_ptr(sm.kv), typename S::LayoutK{});
    Tensor sQ = make_tensor(make_smem_ptr(sm.q[wg]), typename S::LayoutQ{});
    Tensor tArK = thr.partition_fragment_A(sK);  // registers, (MMA, 1, 36)
    Tensor tB = thr.partition_fragment_B(sQ);
    auto s2r = make_tiled_copy_A(Copy_Atom<SM75_U32x4_LDSM_N, T>{}, mma);
    auto thr_copy = s2r.get_thread_slice(tid);
    Tensor tXsK = thr_copy.partition_S(sK);
    Tensor tXrK = thr_copy.retile_D(tArK);
    using Acc = decltype(partition_fragment_C(mma, Shape<Int<kTile>, Int<N>>{}));
    Acc acc[kChains];
    for (int r = 0; r < reps; ++r) {
#pragma unroll
      for (int c = 0; c < kChains; ++c) warpgroup_fence_operand(acc[c]);
      ldsm_rs_tile<4>(s2r, tXsK, tXrK, tArK, [&](int k) {
        mma.accumulate_ = k < kChains ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
        cute::gemm(mma, tArK(_, _, k), tB(_, _, k), acc[k % kChains]);
      });
#pragma unroll
      for (int c = 0; c < kChains; ++c) warpgroup_fence_operand(acc[c]);
    }
#pragma unroll
    for (int c = 0; c < kChains; ++c)
      for (int i = 0; i < size(acc[c]); ++i) total += acc[c](i);
  } else if constexpr (kRS == 1) {
    typename S::MmaSrs mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor sK = make_tensor(make_smem_ptr(sm.kv), typename S::LayoutK192{});
    Tensor sQ = make_tensor(make_smem_ptr(sm.q[wg]), typename S::LayoutQ192{});
    Tensor tA = thr.partition_fragment_A(sK);  // registers
    Tensor tB = thr.partition_fragment_B(sQ);
#pragma unroll
    for (int i = 0; i < size(tA); ++i) tA(i) = T(float((tid + i) % 7) / 7.f);
    total = s_gemm_tiles<N, kChains, true>(mma, tA, tB, reps);
  } else if constexpr (!kO) {
    typename S::MmaS mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor sK = make_tensor(make_smem_ptr(sm.kv), typename S::LayoutK{});
    Tensor sQ = make_tensor(make_smem_ptr(sm.q[wg]), typename S::LayoutQ{});
    Tensor tA = thr.partition_fragment_A(sK);
    Tensor tB = thr.partition_fragment_B(sQ);
    total = s_gemm_tiles<N, kChains, false>(mma, tA, tB, reps);
  } else if constexpr (kRS == 2) {  // kO: V^T via ldmatrix.trans, register-A
    typename S::MmaOrs mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor sVt = make_tensor(make_smem_ptr(sm.kv), typename S::LayoutVt{});
    Tensor sP = make_tensor(make_smem_ptr(sm.q[wg]), typename S::LayoutP{});
    Tensor tArV = thr.partition_fragment_A(sVt);  // (MMA, 8, 4) registers
    Tensor tB = thr.partition_fragment_B(sP);
    auto s2r = make_tiled_copy_A(Copy_Atom<SM75_U16x8_LDSM_T, T>{}, mma);
    auto thr_copy = s2r.get_thread_slice(tid);
    Tensor tXsV = thr_copy.partition_S(sVt);
    Tensor tXrV = thr_copy.retile_D(tArV);
    Tensor acc = partition_fragment_C(mma, Shape<Int<kV>, Int<N>>{});
    clear(acc);
    for (int r = 0; r < reps; ++r) {
      warpgroup_fence_operand(acc);
      ldsm_rs_tile<1>(s2r, tXsV, tXrV, tArV, [&](int k) { cute::gemm(mma, tArV(_, _, k), tB(_, _, k), acc); });
      warpgroup_fence_operand(acc);
    }
    for (int i = 0; i < size(acc); ++i) total += acc(i);
  } else {
    typename S::MmaO mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor sVt = make_tensor(make_smem_ptr(sm.kv), typename S::LayoutVt{});
    Tensor sP = make_tensor(make_smem_ptr(sm.q[wg]), typename S::LayoutP{});
    Tensor tA = thr.partition_fragment_A(sVt);
    Tensor tB = thr.partition_fragment_B(sP);
    Tensor acc = partition_fragment_C(mma, Shape<Int<kV>, Int<N>>{});
    clear(acc);
    for (int r = 0; r < reps; ++r) {
      warpgroup_fence_operand(acc);
      warpgroup_arrive();
#pragma unroll
      for (int k = 0; k < size<2>(tA); ++k) cute::gemm(mma, tA(_, _, k), tB(_, _, k), acc);
      warpgroup_commit_batch();
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc);
    }
    for (int i = 0; i < size(acc); ++i) total += acc(i);  // every WGMMA's result is used
  }
  long long t1 = clock64();
  if (tid == 0) cycles[blockIdx.x * 2 + wg] = t1 - t0;
  if (total == 12345.f) sink[threadIdx.x] = total;  // keeps the GEMMs alive
#endif
}

template <int N, int kChains, bool kO, int kRS = 0>
void run(int warpgroups, long long* d_cycles, float* d_sink) {
  auto kernel = probe<N, kChains, kO, kRS>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(Smem)));
  const int reps = 200, ctas = 1;
  kernel<<<ctas, 128 * warpgroups, sizeof(Smem)>>>(2, d_cycles, d_sink);  // warm-up
  kernel<<<ctas, 128 * warpgroups, sizeof(Smem)>>>(reps, d_cycles, d_sink);
  cudaError_t err = cudaDeviceSynchronize();
  long long c[2] = {0, 0};
  cudaMemcpy(c, d_cycles, sizeof(c), cudaMemcpyDeviceToHost);
  const int wgmmas = kO ? (kV / 64) * (kTile / 16) : kQK / 16;
  const double per_tile = double(c[0]) / reps;
  printf("%s N=%3d chains=%d warpgroups=%d: %8.0f cycles per tile per warpgroup, %6.1f per WGMMA%s%s\n",
         kO ? (kRS == 2 ? "O^T (LDSM.T+RS)   " : "O^T=V^T.P^T       ") : kRS == 2 ? "S^T=K.Q^T (LDSM+RS)" : kRS ? "S^T=K.Q^T (RS)    " : "S^T=K.Q^T         ", N, kChains, warpgroups, per_tile, per_tile / wgmmas,
         err == cudaSuccess ? "" : "  ERROR: ", err == cudaSuccess ? "" : cudaGetErrorString(err));
}

int main() {
  long long* d_cycles;
  float* d_sink;
  cudaMalloc(&d_cycles, 4 * sizeof(long long));
  cudaMalloc(&d_sink, 256 * sizeof(float));
  for (int wgs = 1; wgs <= 2; ++wgs) {
    run<8, 4, false>(wgs, d_cycles, d_sink);
    run<8, 1, false>(wgs, d_cycles, d_sink);
    run<16, 4, false>(wgs, d_cycles, d_sink);
    run<32, 1, false>(wgs, d_cycles, d_sink);
    run<32, 2, false>(wgs, d_cycles, d_sink);
    run<64, 1, false>(wgs, d_cycles, d_sink);
    run<8, 1, true>(wgs, d_cycles, d_sink);
    run<16, 1, true>(wgs, d_cycles, d_sink);
    run<32, 1, true>(wgs, d_cycles, d_sink);
    run<8, 4, false, 1>(wgs, d_cycles, d_sink);
    run<16, 4, false, 1>(wgs, d_cycles, d_sink);
    run<32, 1, false, 1>(wgs, d_cycles, d_sink);
    run<8, 1, true, 2>(wgs, d_cycles, d_sink);
    run<16, 1, true, 2>(wgs, d_cycles, d_sink);
    run<32, 1, true, 2>(wgs, d_cycles, d_sink);
    run<8, 4, false, 2>(wgs, d_cycles, d_sink);
    run<16, 4, false, 2>(wgs, d_cycles, d_sink);
    run<32, 2, false, 2>(wgs, d_cycles, d_sink);
  }
  return 0;
}
