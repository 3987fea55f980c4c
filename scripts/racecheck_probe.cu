// racecheck probe: the decode kernel's KV-split merge exchange alone. Warpgroups 1 and 2 (the
// consumers) swap (m, l) and then O in two halves through shared memory; warpgroup 0 (the
// producer) takes no part. Each mode orders every write before the other warpgroup's read (and
// every read before the next overwrite) in a different way, all correct by construction:
//   0  bar.sync 4, 256 by the two consumer warpgroups (what decode_kernel.cuh does)
//   1  bar.sync 4, 384 with the producer warpgroup joining every barrier
//   2  bar.sync 0 (__syncthreads) with the producer joining
//   3  mbarriers: a "full" one the writer arrives on (128 arrivals) and the reader waits for,
//      an "empty" one the reader arrives on and the writer waits for before writing again
// Run each under racecheck to see which orderings the tool honours:
//   nvcc -O3 -arch=sm_90a scripts/racecheck_probe.cu -o /tmp/probe
//   for m in 0 1 2 3; do compute-sanitizer --tool racecheck /tmp/probe $m; done
// 2026-11-29, H200, compute-sanitizer of CUDA 13.0, mode 0 (then the only one): 2325 RAW/WAR
// hazards between the two warpgroups' accesses, the same kind it reports in the kernel.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

__device__ __forceinline__ void bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ uint32_t saddr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* b, int n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(saddr(b)), "r"(n));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(saddr(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  asm volatile("{\n .reg .pred done;\nW_%=:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               " @!done bra W_%=;\n}\n" ::"r"(saddr(b)), "r"(parity) : "memory");
}

__global__ void probe(float* out, int pieces, int mode) {
  __shared__ float q[2][4096 + 64];
  __shared__ uint64_t full, empty;
  const int wg = threadIdx.x / 128 - 1, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
  if (threadIdx.x == 0) {
    mbar_init(&full, 128);
    mbar_init(&empty, 128);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  // one "merge barrier" of the chosen kind; the producer joins modes 1 and 2
  auto merge_sync = [&]() {
    if (mode == 0) bar_sync(4, 256);
    else if (mode == 1) bar_sync(4, 384);
    else bar_sync(0, 384);
  };
  const bool producer_joins = mode == 1 || mode == 2;
  if (wg < 0) {
    if (producer_joins)  // as many barriers per piece as the consumers: 1 + 2 halves x 2
      for (int p = 0; p < pieces; ++p)
        for (int k = 0; k < 5; ++k) merge_sync();
    return;
  }
  float acc = 0.f;
  uint32_t full_phase = 0, empty_phase = 0;
  for (int p = 0; p < pieces; ++p) {
    float* xfer = q[1];
    if (mode == 3) {
      // (m, l) and O of warpgroup 1 travel to warpgroup 0 through xfer, three hand-offs a piece
      for (int h = 0; h < 3; ++h) {
        if (wg == 1) {
          if (p + h > 0) mbar_wait(&empty, empty_phase++ & 1);
          for (int i = 0; i < 16; ++i) xfer[i * 128 + tid] = acc + i + h;
          mbar_arrive(&full);
        } else {
          mbar_wait(&full, full_phase++ & 1);
          for (int i = 0; i < 16; ++i) acc += xfer[i * 128 + tid];
          mbar_arrive(&empty);
        }
      }
    } else {
      float* ml = q[wg] + 4096;
      if (warp == 0 && lane < 4) { ml[2 * lane] = p + wg; ml[2 * lane + 1] = 1.f; }
      merge_sync();
      acc += q[0][4096 + 2 * (lane % 4)] + q[1][4096 + 2 * (lane % 4)];
      for (int h = 0; h < 2; ++h) {
        if (wg == 1) for (int i = 0; i < 16; ++i) xfer[i * 128 + tid] = acc + i + h;
        merge_sync();
        if (wg == 0) for (int i = 0; i < 16; ++i) acc += xfer[i * 128 + tid];
        merge_sync();
      }
    }
    if (wg == 1) continue;
    // warpgroup 0's epilogue: stage in its own buffer, ordered by a barrier of its own
    q[0][tid * 8 % 4096] = acc;
    bar_sync(2, 128);
    acc += q[0][(tid * 8 + 8) % 4096];
    bar_sync(2, 128);
  }
  out[blockIdx.x * 384 + threadIdx.x] = acc;
}

int main(int argc, char** argv) {
  const int mode = argc > 1 ? atoi(argv[1]) : 0;
  float* d;
  cudaMalloc(&d, 4 * 384 * sizeof(float));
  probe<<<4, 384>>>(d, 3, mode);
  printf("probe mode %d: %s\n", mode, cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
