// racecheck probe: the decode kernel's KV-split merge exchange alone. Warpgroup 0 (the producer)
// exits; warpgroups 1 and 2 swap (m, l) and then O in two halves through shared memory, every
// write and read separated by `bar.sync 4, 256` (both warpgroups, 8 warps), as in
// decode_kernel.cuh. The ordering is by construction; run it under racecheck to see whether the
// tool honours such a named barrier:
//   nvcc -O3 -arch=sm_90a scripts/racecheck_probe.cu -o /tmp/probe
//   compute-sanitizer --tool racecheck --racecheck-report all /tmp/probe
// On the H200 with compute-sanitizer of CUDA 13.0 (2026-11-29) it reports RAW/WAR hazards
// between the two warpgroups' accesses (2325 errors), the same kind it reports in the kernel.
#include <cstdio>
__device__ __forceinline__ void nbar(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__global__ void probe(float* out, int pieces) {
  __shared__ float q[2][4096 + 64];
  int wg = threadIdx.x / 128, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
  if (wg == 0) return;  // producer: nothing here
  wg -= 1;
  float acc = 0.f;
  for (int p = 0; p < pieces; ++p) {
    float* ml = q[wg] + 4096;
    if (warp == 0 && lane < 4) { ml[2 * lane] = p + wg; ml[2 * lane + 1] = 1.f; }
    nbar(4, 256);
    float m0 = q[0][4096 + 2 * (lane % 4)], m1 = q[1][4096 + 2 * (lane % 4)];
    acc += m0 + m1;
    float* xfer = q[1];
    for (int h = 0; h < 2; ++h) {
      if (wg == 1) for (int i = 0; i < 16; ++i) xfer[i * 128 + tid] = acc + i + h;
      nbar(4, 256);
      if (wg == 0) for (int i = 0; i < 16; ++i) acc += xfer[i * 128 + tid];
      nbar(4, 256);
    }
    if (wg == 1) continue;
    // warpgroup 0's epilogue: stage in its own buffer, barrier of its own
    q[0][tid * 8 % 4096] = acc;
    nbar(2, 128);
    acc += q[0][(tid * 8 + 8) % 4096];
    nbar(2, 128);
  }
  out[blockIdx.x * 384 + threadIdx.x] = acc;
}
int main() {
  float* d; cudaMalloc(&d, 4 * 384 * 4);
  probe<<<4, 384>>>(d, 3);
  printf("probe: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
}
