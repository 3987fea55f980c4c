// The split-KV scheduler's walk, shared by the metadata kernel (metadata.cu) and a host program
// that CPU tests compare with etap_kernels/scheduler.py (tests/test_schedule_host.py).
#pragma once
#include "../etap_params.h"

#if defined(__CUDACC__)
#define ETAP_HD __host__ __device__
#else
#define ETAP_HD
#endif

namespace etap {

// Tiles of a sequence of length `len`; at least 1, so an empty sequence still gets its output
// written. The scheduler and the decode kernel's piece walk count with it.
ETAP_HD inline int schedule_num_tiles(int len) { return len <= 0 ? 1 : (len + kTileKV - 1) / kTileKV; }

// Least payload C = cdiv(sum(tiles + fixed_cost), num_parts).
ETAP_HD inline long long schedule_least_payload(const int* tiles, int batch, int num_parts, int fixed_cost) {
  long long total = 0;
  for (int i = 0; i < batch; ++i) total += tiles[i] + fixed_cost;
  return (total + num_parts - 1) / num_parts;
}

// Whether the walk below with payload `pay`, without its last-part rule, covers every sequence
// within num_parts parts. C + fixed_cost always does (tests/test_scheduler.py).
ETAP_HD inline bool schedule_fits(const int* tiles, int batch, int num_parts, long long pay, int fixed_cost) {
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

// Writes sched_meta [num_parts, kMetaInts] and num_splits [batch + 1] for `payload`: walks parts
// and sequences; a sequence that does not fit is split, the last part takes what is left.
ETAP_HD inline void schedule_walk(const int* tiles, int batch, int num_parts, long long payload, int fixed_cost,
                                  int* sched_meta, int* num_splits) {
  for (int i = 0; i <= batch; ++i) num_splits[i] = 0;
  // Count partial pieces per sequence in num_splits[i + 1].
  int i = 0, t = 0;
  for (int part = 0; part < num_parts; ++part) {
    int* meta = sched_meta + part * kMetaInts;
    meta[0] = i;
    meta[1] = t;
    meta[4] = t == 0 ? 0 : num_splits[i + 1];
    long long rem = payload;
    while (i < batch) {
      const int need = tiles[i] - t + fixed_cost;
      if (need <= rem || part == num_parts - 1) {
        if (t > 0) num_splits[i + 1] += 1;  // tail piece of a split sequence
        rem -= need;
        ++i;
        t = 0;
      } else {
        const long long take = rem - fixed_cost;
        if (take > 0) {
          num_splits[i + 1] += 1;  // head or middle piece of a split sequence
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
  for (int k = 0; k < batch; ++k) {
    if (num_splits[k + 1] > 0 && q < num_parts) sched_meta[(q++) * kMetaInts + 5] = k;
    num_splits[k + 1] += num_splits[k];
  }
}

// meta[6] of a part's row: the length of its first sequence, negatives as 0 (0 past the batch),
// so the decode kernel's producer need not load it before its first copy.
ETAP_HD inline void schedule_first_len(const int* seqlens, int batch, int* meta_row) {
  const int len = meta_row[0] < batch ? seqlens[meta_row[0]] : 0;
  meta_row[6] = len < 0 ? 0 : len;
}

}  // namespace etap
