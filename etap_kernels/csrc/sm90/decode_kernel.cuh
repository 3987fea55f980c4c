// ETAP decode kernel for sm_90a: transposed MLA attention.
//
// Per 64-row KV tile, each consumer warpgroup computes
//     S^T = K . Q^T            (WGMMA M = 64 KV rows, N = its query rows, K = 576)
//     online softmax down M    (per column = per query row)
//     O^T += V^T . P^T         (M = 512 latent dims in 8 atoms, N = query rows, K = 64 KV rows)
// so the query rows (heads x new tokens) sit on WGMMA N and are padded only to a multiple of 8.
//
// CTA = 3 warpgroups: WG0 loads (TMA for whole tiles, cp.async with zero-fill otherwise, into
// 128B-swizzled tiles, completion on mbarriers), WG1 and WG2 each own half of the CTA's query
// rows and share every KV tile. The CTA walks the pieces (batch, tile range) of its part of the
// split-KV schedule; a piece that covers a whole sequence writes `out`/`lse` directly, a partial
// piece writes fp32 partials for the combine kernel.
//
// kFp8: the cache is e4m3 (fp8_tile.cuh); tiles are half as big (3-4 stages in the same space).
// S^T is an e4m3 WGMMA against Q quantised per piece into e4m3 hi/lo rows; O^T is an fp16
// WGMMA with V^T converted from e4m3 in registers. With rows split over the warpgroups
// ("kSplitDims"), each warpgroup computes S^T for its own rows but O^T for all the CTA's rows
// and half of the 512 latent dims, so each converts only its half of V^T; the two exchange P^T
// and the softmax rescale factors through shared memory once per tile.
#pragma once

// Every N in steps of 8 as a single WGMMA (64x24, 64x40, ...), not split into 64x8 atoms.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif
#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_types.h>

#include "../etap_params.h"
#include "fp8_tile.cuh"
#include "schedule.cuh"
#include "swizzle.cuh"
#include "sync.cuh"

namespace etap::sm90 {

using namespace cute;

constexpr int kThreads = 384;
// named barriers: 0 CTA, 1 producer, 2-3 consumer warpgroups, 4 both consumer warpgroups
constexpr int kBarConsumers = 4;
constexpr int kFirstCols = 256;  // heads on M: the columns of a tile's first part (full_first)
constexpr int kChunksPerRow = kDimQK / 8;  // 16-byte chunks per 576-wide row
constexpr int kNopeChunks = kDimV / 8;

template <class T, int N, bool kFp8>
struct Config {
  static_assert(N % 8 == 0 && N >= 8 && N <= 32, "rows per warpgroup must be 8..32 in steps of 8");
  using MmaT = std::conditional_t<kFp8, cutlass::half_t, T>;  // operand type of O^T's WGMMA
  using Fp8 = cutlass::float_e4m3_t;
  // e4m3 tiles are half as big: as many stages as fit beside the e4m3 hi/lo Q and P^T. In the
  // KV split each warpgroup reads every other stage, so 4 stages give it one tile of lookahead;
  // N <= 16 fits a fifth (with page ids fetched 1 tile ahead, not 4: 227 KB exactly).
  static constexpr int kStages = kFp8 ? (N <= 16 ? 5 : N <= 24 ? 4 : 3) : 2;
  static constexpr int kTileBytes = kFp8 ? kFp8TileBytes : kTileKV * kDimQK * int(sizeof(T));
  // Page ids are fetched kPageAhead tiles ahead of their copies (cp.async into a ring), so the
  // producer's loop does not wait a memory round trip per tile; 16-bit N = 32 and e4m3 N <= 16
  // (five stages) have room for 1.
  static constexpr int kPageAhead = (!kFp8 && N == 32) ? 1 : (kFp8 && N <= 16) ? 1 : 4;
  static constexpr int kPageRing = kPageAhead + 2;
  using SwAtom = GMMA::Layout_K_SW128_Atom<T>;
  using LayoutKV = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTileKV>, Int<kDimQK>>{}));
  using LayoutV = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTileKV>, Int<kDimV>>{}));
  // V^T as the MN-major A operand: the same bytes as the first 512 columns of the KV tile.
  using LayoutVt =
      decltype(composition(LayoutV{}, make_layout(Shape<Int<kDimV>, Int<kTileKV>>{}, GenRowMajor{})));
  using LayoutQ = decltype(tile_to_shape(SwAtom{}, Shape<Int<N>, Int<kDimQK>>{}));
  // Both warpgroups' rows as one operand over both Q buffers (the heads-on-M form, N = 32).
  using LayoutQBoth = decltype(tile_to_shape(SwAtom{}, Shape<Int<2 * N>, Int<kDimQK>>{}));
  using LayoutP = decltype(tile_to_shape(SwAtom{}, Shape<Int<N>, Int<kTileKV>>{}));
  // FP8 with rows split: P^T of both warpgroups' rows, [2N][64] fp16 (warpgroup w's at row w N).
  using LayoutP2 = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<MmaT>{}, Shape<Int<2 * N>, Int<kTileKV>>{}));
  using MmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<T, T, float, Shape<Int<kTileKV>, Int<N>, Int<kDimQK>>, GMMA::Major::K,
                           GMMA::Major::K>()));
  // FP8: S^T = K8 . [Qhi | Qlo]^T, one e4m3 WGMMA over 2N columns (fp8_tile.cuh explains).
  using MmaS8 = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Fp8, Fp8, float, Shape<Int<kTileKV>, Int<2 * N>, Int<kDimV>>, GMMA::Major::K,
                           GMMA::Major::K>()));
  using LayoutK8Nope = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Fp8>{}, Shape<Int<kTileKV>, Int<kDimV>>{}));
  using LayoutK8Rope = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Fp8>{}, Shape<Int<kTileKV>, Int<kDimRope>>{}));
  using LayoutQ8Nope = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Fp8>{}, Shape<Int<2 * N>, Int<kDimV>>{}));
  using LayoutQ8Rope = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Fp8>{}, Shape<Int<2 * N>, Int<kDimRope>>{}));
  using MmaO = decltype(make_tiled_mma(std::conditional_t<
      kFp8,
      decltype(GMMA::rs_op_selector<MmaT, MmaT, float, Shape<Int<kDimV>, Int<N>, Int<kTileKV>>,
                                    GMMA::Major::K, GMMA::Major::K>()),
      decltype(GMMA::ss_op_selector<T, T, float, Shape<Int<kDimV>, Int<N>, Int<kTileKV>>,
                                    GMMA::Major::MN, GMMA::Major::K>())>{}));
  // FP8 with rows split: O^T for all 2N rows over this warpgroup's half of the latent dims.
  using MmaO2 = decltype(make_tiled_mma(GMMA::rs_op_selector<MmaT, MmaT, float,
                                                             Shape<Int<kDimV / 2>, Int<2 * N>, Int<kTileKV>>,
                                                             GMMA::Major::K, GMMA::Major::K>()));
  // Register-A fragments of V^T (FP8 path), shaped by plain layouts: all dims / half of them.
  using LayoutVtRegs = Layout<Shape<Int<kDimV>, Int<kTileKV>>, Stride<Int<kTileKV>, _1>>;
  using LayoutVtRegs2 = Layout<Shape<Int<kDimV / 2>, Int<kTileKV>>, Stride<Int<kTileKV>, _1>>;
  static constexpr int kCols = N / 4;  // query rows (accumulator columns) each thread holds
  // S^T accumulates over 36 k-steps; small-N WGMMAs are latency-bound when chained on one
  // accumulator, so independent partial sums are interleaved and added at the end.
#if defined(ETAP_EXP_BULK_PAGE) && !defined(ETAP_EXP_NO_MATH)
#error "ETAP_EXP_BULK_PAGE leaves e4m3 tiles in the cache's row layout: loads-only timing (ETAP_EXP_NO_MATH)"
#endif
#ifdef ETAP_S_CHAINS  // experiments only
  static constexpr int kSChains = ETAP_S_CHAINS;
#else
  static constexpr int kSChains = N <= 16 ? 4 : (N <= 24 ? 2 : 1);
#endif
  // Q buffer of a warpgroup: N rows of Q (16-bit), or 2N e4m3 rows [Qhi; Qlo]: the same bytes.
  static constexpr int kQBytes = N * kDimQK * 2;
  // Output staging in the warpgroup's Q buffer once its piece is done: [N][512 + 8] elements,
  // or with the dims split [2N][256 + 8].
  static constexpr int kStagePitch = kDimV + 8;
  static constexpr int kStagePitch2 = kDimV / 2 + 8;
  static_assert(N * kStagePitch * 2 <= kQBytes && 2 * N * kStagePitch2 * 2 <= kQBytes,
                "staging must fit in the Q buffer");
};

template <class T, int N, bool kFp8>
struct alignas(1024) SharedStorage {
  using C = Config<T, N, kFp8>;
  static constexpr int kStages = C::kStages, kPageAhead = C::kPageAhead, kPageRing = C::kPageRing;
  alignas(1024) uint8_t kv[kStages][C::kTileBytes];
  alignas(1024) uint8_t q[2][C::kQBytes];  // per warpgroup: Q (16-bit) or e4m3 [Qhi; Qlo]
  // P^T: per warpgroup [N][64]; FP8 per tile parity [2N][64] (rows split) or per warpgroup.
  alignas(1024) typename C::MmaT p[2][cosize_v<std::conditional_t<kFp8, typename C::LayoutP2, typename C::LayoutP>>];
  float red[2][2][4][N];     // [warpgroup][parity][warp][column]: cross-warp column reductions
  float q_amax[2][kFp8 ? N : 1];  // FP8: per-row max |q| (kept here: in the base it would cost 1 KB of alignment)
  int page_ring[C::kPageRing][kTileKV];  // producer: raw page-table entry per tile row
  uint64_t full[kStages];
  // Heads on M only: the tile's first 256 columns (its S starts on them while the rest lands);
  // `full` then covers the other 320.
  uint64_t full_first[kStages];
  uint64_t empty[kStages];
  uint64_t q_full;
  uint64_t q_empty;
  // KV-split merge: each warpgroup's (m, l) written; warpgroup 1's O half written to / read from
  // the transfer buffer.
  uint64_t merge_ml[2];
  uint64_t xfer_full;
  uint64_t xfer_empty;
  // FP8 rows split: softmax rescale factor per CTA row [tile parity], row sums [2].
  float row_x[kFp8 ? 3 : 1][kFp8 ? kRowsPerCta : 1];
};

// The heads-on-M form over an e4m3 cache (heads_on_m.cuh): two e4m3 stages, each converted into
// the one fp16 tile that S and O read (kv16), Q as fp16 over both Q buffers, P as one 64 x 64
// fp16 tile. The producer uses the same member names as SharedStorage's.
template <class T>
struct alignas(1024) HeadsOnMFp8Storage {
  static constexpr int kStages = 2, kPageAhead = 1, kPageRing = kPageAhead + 2;
  alignas(1024) uint8_t kv[kStages][kFp8TileBytes];
  alignas(1024) uint8_t kv16[kTileKV * kDimQK * 2];
  alignas(1024) uint8_t q[2][kRowsPerCta / 2 * kDimQK * 2];
  alignas(1024) cutlass::half_t p[2][kRowsPerCta / 2 * kTileKV];
  // Hand-off per row: running max, rescale factor, row sums [piece parity][warpgroup], and the
  // power of two Q's row was scaled down by to fit fp16.
  float hand[7][kRowsPerCta];
  int page_ring[kPageRing][kTileKV];
  uint64_t full[kStages];
  uint64_t full_first[kStages];  // (unused: a tile is converted whole)
  uint64_t empty[kStages];
  uint64_t q_full;
  uint64_t q_empty;
  uint64_t merge_ml[2];
  uint64_t xfer_full;
  uint64_t xfer_empty;
};

// Shared memory of each kernel form.
template <class T, int N, bool kFp8, bool kHeadsOnM>
using StorageOf = std::conditional_t<kFp8 && kHeadsOnM, HeadsOnMFp8Storage<T>, SharedStorage<T, N, kFp8>>;

struct Piece {
  int batch, tile_begin, tile_end, slot;  // slot < 0: whole sequence, write out/lse directly
  int len;                                // the sequence's length as given (see effective_len)
};

// Diagnostics only (-DETAP_TRACE, scripts/trace_case.py): thread 0 of each warpgroup of CTA
// (0, 0) records clock64() at fixed points of its loop; they are printed after the kernel.
#ifdef ETAP_TRACE
// The marks go to global memory and a separate one-thread kernel prints them after the decode
// kernel: a printf (a function call) inside the decode kernel would make ptxas serialise every
// WGMMA of it (C7510), so the trace would time a different kernel.
constexpr int kTraceMax = 1024, kTraceWho = 3, kTraceCtas = 8192;
static __device__ long long g_trace[kTraceWho][kTraceMax];
static __device__ int g_trace_n[kTraceWho];
static __device__ long long g_trace_cta[kTraceCtas][6];  // x, y, start ns, span ns, span cycles, tiles
static __device__ int g_trace_ctas;
struct Trace {
  long long v[kTraceMax];
  int n = 0;
  bool on = false;
  __device__ void mark(int event) {
    if (on && n < kTraceMax) v[n++] = clock64() * 16 + event;
  }
  __device__ void dump(int who) {
    if (!on) return;
    for (int i = 0; i < n; ++i) g_trace[who][i] = v[i];
    g_trace_n[who] = n;
  }
};
#define ETAP_TRACE_INIT(tid) Trace trace; trace.on = blockIdx.x == 0 && blockIdx.y == 0 && (tid) == 0
#define ETAP_MARK(event) trace.mark(event)
#define ETAP_TRACE_DUMP(who) trace.dump(who)
// Every CTA: thread 0 of consumer warpgroup 0 records its span in ns (globaltimer) and cycles and
// its tile count, so a trace shows how representative CTA (0, 0) is and the SM clock it ran at.
__device__ __forceinline__ long long global_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define ETAP_CTA_SPAN_BEGIN() const long long span_ns0 = global_ns(), span_clk0 = clock64()
#define ETAP_CTA_SPAN_END(tid, wg, tiles)                                                            \
  if ((tid) == 0 && (wg) == 0) {                                                                     \
    const long long span_ns = global_ns() - span_ns0, span_clk = clock64() - span_clk0;              \
    const int slot = atomicAdd(&g_trace_ctas, 1);                                                    \
    if (slot < kTraceCtas) {                                                                         \
      const long long row[6] = {blockIdx.x, blockIdx.y, span_ns0, span_ns, span_clk, (tiles)};       \
      for (int i = 0; i < 6; ++i) g_trace_cta[slot][i] = row[i];                                     \
    }                                                                                                \
  }
// The lines trace_case.py reads, then the buffers cleared for the next launch.
static __global__ void print_trace_kernel() {
  for (int who = 0; who < kTraceWho; ++who) {
    for (int i = 0; i < g_trace_n[who]; ++i)
      printf("ETAP_TRACE %d %d %lld\n", who, int(g_trace[who][i] & 15), g_trace[who][i] >> 4);
    g_trace_n[who] = 0;
  }
  for (int c = 0; c < min(g_trace_ctas, kTraceCtas); ++c)
    printf("ETAP_CTA %d %d %lld %lld %lld %d\n", int(g_trace_cta[c][0]), int(g_trace_cta[c][1]), g_trace_cta[c][2],
           g_trace_cta[c][3], g_trace_cta[c][4], int(g_trace_cta[c][5]));
  g_trace_ctas = 0;
}
#else
#define ETAP_TRACE_INIT(tid)
#define ETAP_MARK(event)
#define ETAP_TRACE_DUMP(who)
#define ETAP_CTA_SPAN_BEGIN()
#define ETAP_CTA_SPAN_END(tid, wg, tiles)
#endif
// Trace events: producer 1 = waits for a free stage, 2 = has it; consumer 3 = piece starts
// (Q ready), 4 = waits for a tile, 5 = has it, 6 = S^T done, 7 = column max reduced,
// 8 = P^T in shared memory, 9 = O^T done, 10 = piece written; 15 = the role starts (every role,
// after the register split), so a trace also times the start of a CTA's work. The producer's
// own 6 = a whole tile's copies issued, 7 = the next tile's page ids landed, 8 = its page check
// (a 128-thread barrier) passed.


// Walks the pieces of one part exactly as etap_kernels/scheduler.py documents.
template <class F>
__device__ __forceinline__ void for_each_piece(const DecodeParams& p, int part, F&& f) {
  const int* meta = p.sched_meta + part * kMetaInts;
  const int b0 = meta[0], t0 = meta[1], b1 = meta[2], t1 = meta[3], split0 = meta[4];
  for (int i = max(b0, 0); i <= b1 && i < p.batch; ++i) {
    // The first sequence's length comes in the part's row (meta[6]): one dependent load fewer
    // before the producer's first copy.
    const int len = i == b0 ? meta[6] : p.seqlens[i];
    const int n = schedule_num_tiles(len);
    const int ta = i == b0 ? t0 : 0;
    const int tb = min(i == b1 ? t1 : n, n);
    if (ta >= tb) continue;
    const int nslots = p.num_splits[i + 1] - p.num_splits[i];
    int slot = -1;
    if (nslots > 0) {
      slot = p.num_splits[i] + (i == b0 ? split0 : 0);
      if (slot < 0 || slot >= p.max_slots) slot = -2;  // inconsistent metadata: compute, write nothing
    }
    f(Piece{i, ta, tb, slot, len});
  }
}

// Tokens of sequence i (of length `given`) that the page table can address; lengths are
// clamped to it.
__device__ __forceinline__ int effective_len(const DecodeParams& p, int i, int given) {
  int64_t cap_pages = p.page_indptr ? int64_t(p.page_indptr[i + 1]) - p.page_indptr[i]
                                    : int64_t(p.max_pages_per_seq);
  int64_t cap = cap_pages * p.page_size;
  int64_t len = given < 0 ? 0 : given;
  return int(len < cap ? len : (cap < 0 ? 0 : cap));
}

// The 16-bit Q rows of row group `group` of sequence `batch` into ss.q by cp.async, by 128
// threads (tid 0..127): both warpgroups' halves, or with kQ64 one 64-row operand over both Q
// buffers; rows past the end are zero-filled. The caller arrives on q_full.
template <class T, int N, bool kFp8, bool kQ64, class S>
__device__ __forceinline__ void load_q_async(const DecodeParams& p, S& ss, int batch, int group, int tid) {
  using C = Config<T, N, kFp8>;
  const T* q_nope = static_cast<const T*>(p.q_nope);
  const T* q_rope = static_cast<const T*>(p.q_rope);
  for (int c = tid; c < 2 * N * kChunksPerRow; c += 128) {
    const int row = c / kChunksPerRow, chunk = c % kChunksPerRow;
    const int wg = row / N, r = row % N;
    const int local = p.kv_split ? r : wg * N + r;  // KV split: both warpgroups hold the same rows
    const int grow = group * p.rows_per_group + local;
    const bool valid = local < p.rows_per_group && grow < p.rows;
    const int tok = valid ? grow / p.h_q : 0, head = valid ? grow % p.h_q : 0;
    const T* src = chunk < kNopeChunks
        ? q_nope + batch * p.q_nope_stride[0] + tok * p.q_nope_stride[1] + head * p.q_nope_stride[2] + chunk * 8
        : q_rope + batch * p.q_rope_stride[0] + tok * p.q_rope_stride[1] + head * p.q_rope_stride[2] +
              (chunk - kNopeChunks) * 8;
    if constexpr (kQ64) {
      Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<T*>(ss.q[0])), typename C::LayoutQBoth{});
      cp_async_16(&sQ(row, chunk * 8), valid ? src : q_nope, valid);
    } else {
      Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<T*>(ss.q[wg])), typename C::LayoutQ{});
      cp_async_16(&sQ(r, chunk * 8), valid ? src : q_nope, valid);
    }
  }
}

// kQ64: Q as one 64-row operand over both Q buffers (the heads-on-M form), not one per warpgroup.
template <class T, int N, bool kFp8, bool kQ64, class S>
__device__ __forceinline__ void producer(const DecodeParams& p, S& ss, int part, int group) {
  using C = Config<T, N, kFp8>;
  using KvT = std::conditional_t<kFp8, uint8_t, T>;
  constexpr int kStages = S::kStages;
  constexpr bool kFirstPart = kQ64 && !kFp8;  // a 16-bit tile's first 256 columns complete full_first
  const int tid = threadIdx.x % 128;
  const KvT* k_nope = static_cast<const KvT*>(p.k_nope);
  const KvT* k_rope = static_cast<const KvT*>(p.k_rope);
  int it = 0, piece_idx = 0;
  ETAP_TRACE_INIT(tid);
  ETAP_MARK(15);
  if (p.use_tma && tid == 0) {
    prefetch_tensormap(&p.tma_nope);
    prefetch_tensormap(&p.tma_rope);
  }

  for_each_piece(p, part, [&](const Piece& pc) {
    const int len = effective_len(p, pc.batch, pc.len);
    const int* table = p.page_indptr ? p.page_table + p.page_indptr[pc.batch]
                                     : p.page_table + int64_t(pc.batch) * p.page_table_stride;
    const int64_t table_begin = p.page_indptr ? p.page_indptr[pc.batch] : 0;
    auto slot_of = [&](int pos) { return p.page_shift >= 0 ? pos & (p.page_size - 1) : pos % p.page_size; };
    auto logical_of = [&](int pos) { return p.page_shift >= 0 ? pos >> p.page_shift : pos / p.page_size; };
    auto in_table = [&](int pos) {
      const int logical = logical_of(pos);
      return pos < len && (p.page_indptr ? table_begin + logical < p.page_table_len : logical < p.max_pages_per_seq);
    };
    // Thread r < 64 fetches the table entry of row r of tile t into the ring (zero outside it).
    auto prefetch_pages = [&](int t, int tile_it) {
      if (tid < kTileKV && t < pc.tile_end) {
        const int pos = t * kTileKV + tid;
        const bool ok = in_table(pos);
        cp_async_4(&ss.page_ring[tile_it % S::kPageRing][tid], ok ? table + logical_of(pos) : p.page_table, ok);
      }
      cp_async_commit();  // one group per tile, empty or not, so the wait below counts tiles
    };
    for (int d = 0; d < S::kPageAhead; ++d) prefetch_pages(pc.tile_begin + d, it + d);

    // Q rows of this group, both warpgroups' halves; rows past the end are zero-filled. Later
    // pieces load Q after issuing their first tiles, so those overlap the previous epilogue.
    // (FP8: the consumers read Q themselves while quantising it; the heads-on-M form converts
    // the 16-bit Q loaded here to fp16 in place.)
    auto load_q = [&]() {
      mbar_wait(&ss.q_empty, (piece_idx & 1) ^ 1);
      load_q_async<T, N, kFp8, kQ64>(p, ss, pc.batch, group, tid);
      cp_async_arrive_noinc(&ss.q_full);
    };
    // (The first piece's Q is loaded by the consumers at their start; see consumer().)
    const bool producer_loads_q = (!kFp8 || kQ64) && piece_idx > 0;
    const int q_at = pc.tile_begin + min(2, pc.tile_end - pc.tile_begin);

    for (int t = pc.tile_begin; t < pc.tile_end; ++t, ++it) {
      if (producer_loads_q && t == q_at) load_q();
      const int stage = it % kStages;
      prefetch_pages(t + S::kPageAhead, it + S::kPageAhead);
      cp_async_wait<S::kPageAhead>();  // this tile's page ids have landed
      ETAP_MARK(7);
      // Page id of row r, or -1 (past the length, outside the table, or an invalid id).
      const int* ring = ss.page_ring[it % S::kPageRing];
      auto page_at = [&](int r) {
        const int id = ring[r];
        return in_table(t * kTileKV + r) && id >= 0 && id < p.num_pages ? id : -1;
      };
      // Thread r checks its own row's entry; the barrier ANDs them: every row valid?
      const bool all_rows_valid = named_barrier_and(1, 128, tid >= kTileKV || page_at(tid) >= 0);
      ETAP_MARK(8);
      ETAP_MARK(1);
      mbar_wait(&ss.empty[stage], ((it / kStages) & 1) ^ 1);
      ETAP_MARK(2);
      uint8_t* tile = ss.kv[stage];
      Tensor sKV = make_tensor(make_smem_ptr(reinterpret_cast<T*>(tile)), typename C::LayoutKV{});
      // A tile inside the sequence whose pages are all valid: bulk tensor copies, one thread.
      const bool whole = p.use_tma && (t + 1) * kTileKV <= len && all_rows_valid;
      if (whole) {
        // Warp 0 issues the copies, one page segment per lane (64 of them for page size 1);
        // the barrier expects the whole tile's bytes before it can complete.
        // (kQ64: columns [0, 256) complete full_first, the rest full.)
        constexpr int kFirstBytes = kFirstPart ? kTileKV * kFirstCols * int(sizeof(T)) : 0;
        if (tid == 0) {
          mbar_arrive_expect_tx(&ss.full[stage], C::kTileBytes - kFirstBytes);
          if constexpr (kFirstPart) mbar_arrive_expect_tx(&ss.full_first[stage], kFirstBytes);
        }
#ifdef ETAP_EXP_BULK_PAGE
        // Experiment (timing only, with ETAP_EXP_NO_MATH: the tile keeps the cache's row layout):
        // a page's 64 contiguous e4m3 rows of 576 bytes as one 1-D bulk copy, line-aligned.
        const bool bulk_page = kFp8 && p.tma_rows >= kTileKV && p.k_nope_row_stride == kDimV + kDimRope &&
                               p.k_rope == static_cast<const void*>(k_nope + kDimV);
        if (bulk_page && tid == 0) {
          const KvT* src = k_nope + page_at(0) * p.k_nope_page_stride + slot_of(t * kTileKV) * p.k_nope_row_stride;
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                       ::"r"(smem_addr(tile)), "l"(src), "r"(uint32_t(kTileKV * (kDimV + kDimRope))),
                       "r"(smem_addr(&ss.full[stage]))
                       : "memory");
        }
#else
        constexpr bool bulk_page = false;
#endif
        if (tid < 32 && !bulk_page) {
          for (int seg = tid * p.tma_rows; seg < kTileKV; seg += 32 * p.tma_rows) {
            const int page = page_at(seg), slot = slot_of(t * kTileKV + seg);
            if constexpr (kFp8) {
#pragma unroll
              for (int kc = 0; kc < kDimV / 128; ++kc)
                tma_load_3d(tile + kc * kFp8ChunkBytes + seg * 128, &p.tma_nope, kc * 128, slot, page,
                            &ss.full[stage]);
              tma_load_3d(tile + kFp8RopeOffset + seg * kDimRope, &p.tma_rope, 0, slot, page, &ss.full[stage]);
            } else {
#pragma unroll
              for (int kc = 0; kc < kDimV / 64; ++kc)
                tma_load_3d(&sKV(seg, kc * 64), &p.tma_nope, kc * 64, slot, page,
                            kFirstPart && kc * 64 < kFirstCols ? &ss.full_first[stage] : &ss.full[stage]);
              tma_load_3d(&sKV(seg, static_cast<int>(kDimV)), &p.tma_rope, 0, slot, page, &ss.full[stage]);
            }
          }
        }
        if (tid != 0) {
          mbar_arrive(&ss.full[stage]);
          if constexpr (kFirstPart) mbar_arrive(&ss.full_first[stage]);
        }
        ETAP_MARK(6);
        continue;
      }
      // Partial tiles and pages too small for bulk copies: cp.async with zero-fill.
      if constexpr (!kFp8) {
        // Thread (warp w, lane l) copies rows r = 16 i + 4 w + l / 8 (i = 0..3) and, of each, the
        // 16-byte unit u = l % 8 of every 64-column block: one page lookup and one base address
        // per row, then copies at constant offsets.
        const int u = tid % 8;
        // 64-column blocks of the swizzled tile lie block_bytes apart, at the same offset
        const int block_bytes =
            int(reinterpret_cast<uint8_t*>(&sKV(0, 64)) - reinterpret_cast<uint8_t*>(&sKV(0, 0)));
#pragma unroll
        for (int i = 0; i < kTileKV / 16; ++i) {
          const int r = 16 * i + 4 * (tid / 32) + (tid % 32) / 8;
          const int page = page_at(r);
          const bool ok = page >= 0;
          const int slot = slot_of(t * kTileKV + r);
          const KvT* nope = ok ? k_nope + page * p.k_nope_page_stride + slot * p.k_nope_row_stride : k_nope;
          const KvT* rope = ok ? k_rope + page * p.k_rope_page_stride + slot * p.k_rope_row_stride : k_nope;
          uint8_t* dst = reinterpret_cast<uint8_t*>(&sKV(r, u * 8));
#ifndef ETAP_EXP_NO_LOAD
#pragma unroll
          for (int d = 0; d < kDimV / 64; ++d) cp_async_16(dst + d * block_bytes, nope + d * 64 + u * 8, ok);
          cp_async_16(dst + (kDimV / 64) * block_bytes, rope + u * 8, ok);
#endif
        }
      } else {
        // As above for e4m3 rows (512 + 64 bytes): thread (warp w, lane l) copies rows
        // r = 16 i + 4 w + l / 8 (i = 0..3) and, of each, unit u = l % 8 of each of the four
        // 128-byte latent chunks, plus rope unit u for u < 4: one page lookup per row.
        const int u = tid % 8;
#pragma unroll
        for (int i = 0; i < kTileKV / 16; ++i) {
          const int r = 16 * i + 4 * (tid / 32) + (tid % 32) / 8;
          const int page = page_at(r);
          const bool ok = page >= 0;
          const int slot = slot_of(t * kTileKV + r);
          const KvT* nope = ok ? k_nope + page * p.k_nope_page_stride + slot * p.k_nope_row_stride : k_nope;
          const KvT* rope = ok ? k_rope + page * p.k_rope_page_stride + slot * p.k_rope_row_stride : k_nope;
          uint8_t* dst = tile + fp8_nope_offset(r, u);  // chunk kc's unit u lies kc chunks further
#ifndef ETAP_EXP_NO_LOAD  // experiment: measure the math alone
#pragma unroll
          for (int kc = 0; kc < kDimV / 128; ++kc) cp_async_16(dst + kc * kFp8ChunkBytes, nope + kc * 128 + u * 16, ok);
          if (u < kDimRope / 16) cp_async_16(tile + fp8_rope_offset(r, u), rope + u * 16, ok);
#endif
        }
      }
      cp_async_arrive_noinc(&ss.full[stage]);
      if constexpr (kFirstPart) cp_async_arrive_noinc(&ss.full_first[stage]);
    }
    if (producer_loads_q && q_at == pc.tile_end) load_q();
    ++piece_idx;
  });
  ETAP_TRACE_DUMP(0);
}

// Online softmax, one query row: folds a tile's max into the running max, rescales the running
// sum, and returns the factor for the old state. `base` is the exp2 offset of the tile's scores
// (0 while the row is fully masked, which keeps exp2 finite).
__device__ __forceinline__ float online_softmax_step(float tile_max, float& m_run, float& l_run, float& base) {
  const float m_new = fmaxf(m_run, tile_max);
  base = m_new == -INFINITY ? 0.f : m_new;
  const float alpha = exp2f(m_run - base);
  m_run = m_new;
  l_run *= alpha;
  return alpha;
}

// FP8 S^T of one tile: e4m3 WGMMAs of K8 (the tile) against q8 = [Qhi; Qlo] (2N rows),
// interleaved over the kChains accumulators; issued and committed as one group, not waited for.
template <class C, int N, class Acc, int kChains>
__device__ __forceinline__ void issue_scores_fp8(Acc (&acc)[kChains], uint8_t* tile, uint8_t* q8) {
  using Fp8 = typename C::Fp8;
  typename C::MmaS8 mma;
  auto thr = mma.get_thread_slice(threadIdx.x % 128);
  Tensor sKn = make_tensor(make_smem_ptr(reinterpret_cast<Fp8*>(tile)), typename C::LayoutK8Nope{});
  Tensor sKr = make_tensor(make_smem_ptr(reinterpret_cast<Fp8*>(tile + kFp8RopeOffset)), typename C::LayoutK8Rope{});
  Tensor sQ8n = make_tensor(make_smem_ptr(reinterpret_cast<Fp8*>(q8)), typename C::LayoutQ8Nope{});
  Tensor sQ8r = make_tensor(make_smem_ptr(reinterpret_cast<Fp8*>(q8 + 2 * N * kDimV)), typename C::LayoutQ8Rope{});
  Tensor tAn = thr.partition_fragment_A(sKn);
  Tensor tAr = thr.partition_fragment_A(sKr);
  Tensor tBn = thr.partition_fragment_B(sQ8n);
  Tensor tBr = thr.partition_fragment_B(sQ8r);
#pragma unroll
  for (int ch = 0; ch < kChains; ++ch) warpgroup_fence_operand(acc[ch]);
  warpgroup_arrive();
#pragma unroll
  for (int k = 0; k < size<2>(tAn) + size<2>(tAr); ++k) {
    mma.accumulate_ = k < kChains ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
    if (k < size<2>(tAn))
      cute::gemm(mma, tAn(_, _, k), tBn(_, _, k), acc[k % kChains]);
    else
      cute::gemm(mma, tAr(_, _, k - size<2>(tAn)), tBr(_, _, k - size<2>(tAn)), acc[k % kChains]);
  }
  warpgroup_commit_batch();
}

// kSplitDims (FP8, rows split over the warpgroups only): O^T covers all 2N rows of the CTA and
// this warpgroup's 256 latent dims; otherwise its own N rows (or all of them, KV split) and all
// 512 dims.
template <class T, int N, bool kFp8, bool kSplitDims>
__device__ __forceinline__ void consumer(const DecodeParams& p, SharedStorage<T, N, kFp8>& ss,
                                         int part, int group, int wg) {
  using C = Config<T, N, kFp8>;
  using MmaT = typename C::MmaT;
  static_assert(!kSplitDims || kFp8, "the dims split is the FP8 rows-split path");
  static_assert(!kFp8 || kSplitDims || N <= 16, "FP8 KV split: V^T fragments leave room for N <= 16 only");
  constexpr int kStages = C::kStages;
  constexpr int kCols = C::kCols;
  constexpr int kON = kSplitDims ? 2 * N : N;             // O^T columns (query rows)
  constexpr int kOM = kSplitDims ? kDimV / 2 : kDimV;     // O^T rows (latent dims)
  constexpr int kOCols = kON / 4;
  const int tid = threadIdx.x % 128;
  const int lane = tid % 32, warp = tid / 32;
  const int bar_id = 2 + wg;
  const int wg_row0 = p.kv_split ? 0 : wg * N;  // this warpgroup's first row within the group
  const int o_row0 = kSplitDims ? 0 : wg_row0;  // the row of O^T column 0 within the group

  typename C::MmaS mma_s;
  std::conditional_t<kSplitDims, typename C::MmaO2, typename C::MmaO> mma_o;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_o = mma_o.get_thread_slice(tid);

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<T*>(ss.q[wg])), typename C::LayoutQ{});
  Tensor sP = make_tensor(make_smem_ptr(ss.p[wg]), typename C::LayoutP{});
  Tensor tSrQ = thr_s.partition_fragment_B(sQ);
  Tensor tOrP = thr_o.partition_fragment_B(sP);
  Tensor accS = partition_fragment_C(mma_s, Shape<Int<kTileKV>, Int<N>>{});  // ((2,2,N/8),1,1)
  Tensor accO = partition_fragment_C(mma_o, Shape<Int<kOM>, Int<kON>>{});    // ((2,2,kON/8),kOM/64,1)

  // One WGMMA atom spans all N columns, so fragments are ((2,2,N/8), M atoms, 1).
  static_assert(decltype(size<0>(accS))::value == N / 2 && decltype(size<2>(accS))::value == 1);
  static_assert(decltype(size<0>(accO))::value == kON / 2 && decltype(size<1>(accO))::value == kOM / 64 &&
                decltype(size<2>(accO))::value == 1);
  // Accumulator element (v0, v1, j) of a 64xN atom sits at row 16*warp + lane/4 + 8*v1 and
  // column 2*(lane%4) + v0 + 8*j; column slot c = v0 + 2*j indexes this thread's columns.
  auto col_of = [&](int c) { return 2 * (lane % 4) + (c % 2) + 8 * (c / 2); };
  // Column slot of fragment value i = (v0, v1, j), and value (v0, v1 = h, j) of slot c.
  auto slot_of_value = [](int i) { return (i % 2) + 2 * (i / 4); };
  auto value_of_slot = [](int c, int h) { return (c % 2) + 2 * h + 4 * (c / 2); };
  // Latent dim of accumulator value v of O^T atom mi (the FP8 paths permute the rows).
  auto dv_of = [&](int mi, int v) {
    const int h = (v / 2) % 2;
    return kSplitDims ? dv_of_fp8_half(wg, warp, lane / 4, mi, h)
                      : kFp8 ? dv_of_fp8(warp, lane / 4, mi, h) : 64 * mi + 16 * warp + lane / 4 + 8 * h;
  };
  // FP8: the softmax scale (log2 units) and the cache scale are folded into Q; the output is
  // scaled by the cache scale (V = the latent part of K).
  const float kv_scale = kFp8 && p.kv_scale ? *p.kv_scale : 1.f;
  const float s_mul = kFp8 ? 1.f : p.scale_log2;

  // FP8: S^T = K8 . [Qhi | Qlo]^T as e4m3 WGMMAs into kChains8 interleaved accumulators. The
  // dims split keeps at most 2 chains (18 e4m3 k-steps, 9 deep: bf16's 36 in 4 chains), which
  // saves the adds of the other two; the KV split keeps the count it was measured with.
  constexpr int kChains8 = kSplitDims && C::kSChains > 2 ? 2 : C::kSChains;

  int it = 0, piece_idx = 0, red_parity = 0;
  ETAP_TRACE_INIT(tid);
  ETAP_MARK(15);
  ETAP_CTA_SPAN_BEGIN();
  for_each_piece(p, part, [&](const Piece& pc) {
    const int len = effective_len(p, pc.batch, pc.len);
    // KV positions < limit_of(c) are visible to column c (recomputed where a tile needs masks:
    // an array of them would hold kCols registers through the whole loop).
    auto limit_of = [&](int c) {
      const int tok = (group * p.rows_per_group + wg_row0 + col_of(c)) / p.h_q;
      return p.causal ? len - (p.s_q - 1 - tok) : len;
    };
    int min_limit = len;
#pragma unroll
    for (int c = 0; c < kCols; ++c) min_limit = min(min_limit, limit_of(c));

    float m_run[kCols], l_run[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      m_run[c] = -INFINITY;
      l_run[c] = 0.f;
    }
    clear(accO);

    if constexpr (!kFp8) {
      // The first piece's Q: warpgroup 0 loads it at the start, in place of the producer, which
      // would load it before its first copies (session-12 traces: its first stage granted
      // ~3,000 cycles later in bf16 than in e4m3, where the consumers read Q).
      if (piece_idx == 0 && wg == 0) {
        load_q_async<T, N, kFp8, false>(p, ss, pc.batch, group, tid);
        cp_async_arrive_noinc(&ss.q_full);
      }
      mbar_wait(&ss.q_full, piece_idx & 1);
    }
    ETAP_MARK(3);
    float mul_hi[kCols];  // FP8: per-column factor of the scores (hi + lo / 16)
    if constexpr (kFp8) {
      // Q -> e4m3 hi/lo rows, each row scaled so its max |q| maps to 240:
      //   q * sigma = hi + lo / 16, scores = (K8.hi + K8.lo / 16) * q_mul / sigma.
      Tensor sQ8n = make_tensor(make_smem_ptr(reinterpret_cast<typename C::Fp8*>(ss.q[wg])),
                                typename C::LayoutQ8Nope{});
      Tensor sQ8r = make_tensor(make_smem_ptr(reinterpret_cast<typename C::Fp8*>(ss.q[wg] + 2 * N * kDimV)),
                                typename C::LayoutQ8Rope{});
      unsigned* amax = reinterpret_cast<unsigned*>(ss.q_amax[wg]);
      // Each thread loads its Q chunks (16 elements) kQBatch at a time before using any: one
      // memory round trip per kQBatch chunks and pass, not one per chunk (N = 16: 3, not 5).
      // Under a saturated memory system a round trip costs thousands of cycles (session-12
      // traces: 8,000-13,000 cycles per piece here). The second pass loads the chunks again
      // (cache hits): batches of 3 spill in the trace build, all of them in the shipped one.
      constexpr int kQ16PerRow = kDimQK / 16;  // 16-element chunks per Q row
      constexpr int kQChunks = N * kQ16PerRow, kQIters = (kQChunks + 127) / 128, kQBatch = 2;
      uint4 raw[kQBatch][2];
      auto load_batch = [&](int j0) {
#pragma unroll
        for (int jj = 0; jj < kQBatch; ++jj) {
          const int c = tid + 128 * (j0 + jj);
          const int n = c / kQ16PerRow, kb = c % kQ16PerRow;
          const int local = wg_row0 + n;
          const int grow = group * p.rows_per_group + local;
          raw[jj][0] = raw[jj][1] = make_uint4(0, 0, 0, 0);  // zeros past the rows
          if (c < kQChunks && local < p.rows_per_group && grow < p.rows) {
            const int tok = grow / p.h_q, head = grow % p.h_q;
            const T* src = kb < kDimV / 16
                ? static_cast<const T*>(p.q_nope) + pc.batch * p.q_nope_stride[0] + tok * p.q_nope_stride[1] +
                      head * p.q_nope_stride[2] + kb * 16
                : static_cast<const T*>(p.q_rope) + pc.batch * p.q_rope_stride[0] + tok * p.q_rope_stride[1] +
                      head * p.q_rope_stride[2] + (kb * 16 - kDimV);
            raw[jj][0] = __ldg(reinterpret_cast<const uint4*>(src));
            raw[jj][1] = __ldg(reinterpret_cast<const uint4*>(src) + 1);
          }
        }
      };
      auto to_float = [&](int jj, float (&v)[16]) {
        const T* in = reinterpret_cast<const T*>(raw[jj]);
#pragma unroll
        for (int i = 0; i < 16; ++i) v[i] = static_cast<float>(in[i]);
      };
      // Calls f(chunk, its 16 values as float) for each of this thread's chunks, a batch at a time.
      auto for_each_chunk = [&](auto&& f) {
#pragma unroll 1
        for (int j0 = 0; j0 < kQIters; j0 += kQBatch) {
          load_batch(j0);
#pragma unroll
          for (int jj = 0; jj < kQBatch; ++jj) {
            const int c = tid + 128 * (j0 + jj);
            if (c >= kQChunks) continue;
            float v[16];
            to_float(jj, v);
            f(c, v);
          }
        }
      };
      const float q_scale = p.q_scale ? *p.q_scale : 1.f;
      if (tid < N) amax[tid] = 0u;
      named_barrier_sync(bar_id, 128);
      for_each_chunk([&](int c, const float (&v)[16]) {
        float m = 0.f;
#pragma unroll
        for (int i = 0; i < 16; ++i) m = fmaxf(m, fabsf(v[i]));
        atomicMax(&amax[c / kQ16PerRow], __float_as_uint(m));  // non-negative floats order as unsigned ints
      });
      named_barrier_sync(bar_id, 128);
      auto sigma_of = [&](int n) {
        const float am = __uint_as_float(amax[n]);
        return am > 0.f && am < INFINITY ? 240.f / am : 1.f;
      };
      for_each_chunk([&](int c, const float (&v)[16]) {
        const int n = c / kQ16PerRow, kb = c % kQ16PerRow;
        const float sigma = sigma_of(n);
        uint4 hi, lo;
        uint32_t* h = &hi.x;
        uint32_t* l = &lo.x;
#pragma unroll
        for (int i = 0; i < 16; i += 4) {
          float a[4], r[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) a[k] = v[i + k] * sigma;
          h[i / 4] = f32x4_to_e4m3x4(a[0], a[1], a[2], a[3]);
          float back[4];
          e4m3x4_to_f32x4(h[i / 4], back);
#pragma unroll
          for (int k = 0; k < 4; ++k) r[k] = (a[k] - back[k]) * 16.f;
          l[i / 4] = f32x4_to_e4m3x4(r[0], r[1], r[2], r[3]);
        }
        if (kb < kDimV / 16) {
          *reinterpret_cast<uint4*>(&sQ8n(n, kb * 16)) = hi;
          *reinterpret_cast<uint4*>(&sQ8n(n + N, kb * 16)) = lo;
        } else {
          *reinterpret_cast<uint4*>(&sQ8r(n, kb * 16 - kDimV)) = hi;
          *reinterpret_cast<uint4*>(&sQ8r(n + N, kb * 16 - kDimV)) = lo;
        }
      });
      const float q_mul = p.scale_log2 * kv_scale * q_scale;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        mul_hi[c] = q_mul / sigma_of(col_of(c));
      }
      fence_proxy_async();
      named_barrier_sync(bar_id, 128);
    }
    fence_proxy_async();

    for (int t = pc.tile_begin; t < pc.tile_end; ++t, ++it) {
      if (p.kv_split && (it & 1) != wg) continue;  // the other warpgroup's tile
      const int stage = it % kStages;
      ETAP_MARK(4);
      mbar_wait(&ss.full[stage], (it / kStages) & 1);
      ETAP_MARK(5);
      fence_proxy_async();  // cp.async (generic proxy) writes -> WGMMA (async proxy) reads
#ifdef ETAP_EXP_NO_MATH  // experiment: measure the load pipeline alone
      mbar_arrive(&ss.empty[stage]);
      continue;
#endif

      uint8_t* tile = ss.kv[stage];

      // S^T = K . Q^T
      if constexpr (kFp8) {
        // A fresh array per tile: declared outside the loop, the WGMMAs' accumulator operands
        // would keep the previous tile's values live through the whole loop (spills).
        using Acc8 = decltype(partition_fragment_C(typename C::MmaS8{}, Shape<Int<kTileKV>, Int<2 * N>>{}));
        Acc8 acc[kChains8];
        issue_scores_fp8<C, N>(acc, tile, ss.q[wg]);
        warpgroup_wait<0>();
        ETAP_MARK(6);
#pragma unroll
        for (int ch = 0; ch < kChains8; ++ch) warpgroup_fence_operand(acc[ch]);
        // Column n of the hi half and column n + N of the lo half sit in the same thread, N / 2
        // fragment values apart.
#pragma unroll
        for (int i = 0; i < size(accS); ++i) {
          const int c = slot_of_value(i);
          float hi = 0.f, lo = 0.f;
#pragma unroll
          for (int ch = 0; ch < kChains8; ++ch) {
            hi += acc[ch](i);
            lo += acc[ch](i + N / 2);
          }
          accS(i) = fmaf(lo, 1.f / 16.f, hi) * mul_hi[c];
        }
      } else {
        Tensor sK = make_tensor(make_smem_ptr(reinterpret_cast<T*>(tile)), typename C::LayoutKV{});
        Tensor tSrK = thr_s.partition_fragment_A(sK);
        decltype(accS) accS_part[C::kSChains];
#pragma unroll
        for (int ch = 0; ch < C::kSChains; ++ch) warpgroup_fence_operand(accS_part[ch]);
        warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < size<2>(tSrK); ++k) {
          mma_s.accumulate_ = k < C::kSChains ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
          cute::gemm(mma_s, tSrK(_, _, k), tSrQ(_, _, k), accS_part[k % C::kSChains]);
        }
        warpgroup_commit_batch();
        warpgroup_wait<0>();
        ETAP_MARK(6);
#pragma unroll
        for (int ch = 0; ch < C::kSChains; ++ch) warpgroup_fence_operand(accS_part[ch]);
#pragma unroll
        for (int i = 0; i < size(accS); ++i) {
          float sum = accS_part[0](i);
#pragma unroll
          for (int ch = 1; ch < C::kSChains; ++ch) sum += accS_part[ch](i);
          accS(i) = sum;
        }
      }

      // Scale into log2 units and mask positions past each column's limit.
      const bool need_mask = (t + 1) * kTileKV > min_limit;
      float col_max[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) col_max[c] = -INFINITY;
#pragma unroll
      for (int i = 0; i < size(accS); ++i) {
        const int v0 = i % 2, v1 = (i / 2) % 2, j = i / 4;
        const int c = v0 + 2 * j;
        float s = accS(i) * s_mul;
        if (need_mask) {
          const int pos = t * kTileKV + 16 * warp + lane / 4 + 8 * v1;
          if (pos >= limit_of(c)) s = -INFINITY;
        }
        accS(i) = s;
        col_max[c] = fmaxf(col_max[c], s);
      }
      // Column max down M: lanes sharing lane%4, then the 4 warps through shared memory.
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        col_max[c] = fmaxf(col_max[c], __shfl_xor_sync(0xffffffff, col_max[c], 4));
        col_max[c] = fmaxf(col_max[c], __shfl_xor_sync(0xffffffff, col_max[c], 8));
        col_max[c] = fmaxf(col_max[c], __shfl_xor_sync(0xffffffff, col_max[c], 16));
      }
      float(*red)[N] = ss.red[wg][red_parity];
      if (lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) red[warp][col_of(c)] = col_max[c];
      }
      named_barrier_sync(bar_id, 128);
      ETAP_MARK(7);
      red_parity ^= 1;

      float alpha[kCols], base[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int n = col_of(c);
        const float mx = fmaxf(fmaxf(red[0][n], red[1][n]), fmaxf(red[2][n], red[3][n]));
        alpha[c] = online_softmax_step(mx, m_run[c], l_run[c], base[c]);
      }
#pragma unroll
      for (int i = 0; i < size(accS); ++i) {
        const int c = slot_of_value(i);
        const float pr = exp2f(accS(i) - base[c]);
        accS(i) = pr;
        l_run[c] += pr;
      }
      // P^T (this thread's S^T values) into the [rows][64] K-major tile at shared address
      // `tile`, by shared-window address (swizzle.cuh; the swizzled tensor's element access
      // compiles to generic stores).
      auto store_pt = [&](uint32_t tile) {
        const uint32_t base = tile + pt_thread_base(warp, lane);
#pragma unroll
        for (int i = 0; i < size(accS); ++i)
          st_shared_u16(base + pt_value_offset(i % 2, (i / 2) % 2, i / 4), static_cast<MmaT>(accS(i)).raw());
      };
      if constexpr (!kSplitDims) {
#pragma unroll
        for (int mi = 0; mi < size<1>(accO); ++mi) {
#pragma unroll
          for (int v = 0; v < size<0>(accO); ++v) {
            const int c = slot_of_value(v);
            accO(v, mi, 0) *= alpha[c];
          }
        }

        store_pt(smem_addr(ss.p[wg]));  // P^T as the B operand (N x 64, K-major)
        fence_proxy_async();
        named_barrier_sync(bar_id, 128);
      } else {
        // P^T rows wg N.. of this tile parity's [2N][64] buffer, and this warpgroup's rescale
        // factors; then both warpgroups' are there (a 256-thread barrier). A parity's buffers
        // are rewritten two tiles later, after the other warpgroup has passed the next barrier,
        // which it does only once its O^T of this tile has completed.
        // This warpgroup's rows start at row wg N (N / 8 atoms of 1024 bytes).
        store_pt(smem_addr(ss.p[it & 1]) + (wg * N / 8) * 1024);
        if (warp == 0 && lane < 4) {
#pragma unroll
          for (int c = 0; c < kCols; ++c) ss.row_x[it & 1][wg * N + col_of(c)] = alpha[c];
        }
        fence_proxy_async();
        named_barrier_sync(kBarConsumers, 256);
        // Once the running maxima settle, every factor is 1: skip the rescale then (warp-uniform).
        float a[kOCols];
        bool rescale = false;
#pragma unroll
        for (int c = 0; c < kOCols; ++c) {
          a[c] = ss.row_x[it & 1][col_of(c)];
          rescale |= a[c] != 1.f;
        }
        if (__any_sync(0xffffffff, rescale)) {
#pragma unroll
          for (int c = 0; c < kOCols; ++c) {
#pragma unroll
            for (int mi = 0; mi < size<1>(accO); ++mi) {
              accO(value_of_slot(c, 0), mi, 0) *= a[c];
              accO(value_of_slot(c, 1), mi, 0) *= a[c];
            }
          }
        }
      }
      ETAP_MARK(8);

      // O^T += V^T . P^T
      warpgroup_fence_operand(accO);
      if constexpr (kSplitDims) {
        // As below, for this warpgroup's 256 dims: 8 contiguous latent bytes per thread and row.
        Tensor sP2 = make_tensor(make_smem_ptr(ss.p[it & 1]), typename C::LayoutP2{});
        Tensor tOrP2 = thr_o.partition_fragment_B(sP2);
        Tensor tOrV = thr_o.partition_fragment_A(
            make_tensor(make_smem_ptr(static_cast<MmaT*>(nullptr)), typename C::LayoutVtRegs2{}));
        const int g = lane / 4, q4 = lane % 4;
        auto vregs = [&](int mi, int kb) { return reinterpret_cast<uint32_t*>(&tOrV(0, mi, kb)); };
        const int unit = 16 * wg + 4 * warp + g / 2, half = 8 * (g % 2);
        // The shared loads of every k-block first where registers allow (N <= 16): a k-block's
        // loads cannot move above the previous k-block's WGMMA issue by themselves.
        constexpr bool kLoadsFirst = N <= 16;
        uint2 xs[kTileKV / 16][4];
        auto load_kb = [&](int kb) {
#pragma unroll
          for (int s = 0; s < 4; ++s)
            xs[kb][s] = lds64(tile + fp8_nope_offset(16 * kb + 2 * q4 + (s & 1) + 8 * (s >> 1), unit) + half);
        };
        if constexpr (kLoadsFirst) {
#pragma unroll
          for (int kb = 0; kb < kTileKV / 16; ++kb) load_kb(kb);
        }
#pragma unroll
        for (int kb = 0; kb < kTileKV / 16; ++kb) {
          if constexpr (!kLoadsFirst) load_kb(kb);
          const uint2* x = xs[kb];
#pragma unroll
          for (int j = 0; j < 2; ++j)  // atoms 2j, 2j+1: dims 4j..4j+3
            vt_word_to_f16(&x[0].x, &x[1].x, &x[2].x, &x[3].x, j, vregs(2 * j, kb), vregs(2 * j + 1, kb));
          warpgroup_fence_operand(tOrV);
          warpgroup_arrive();
          cute::gemm(mma_o, tOrV(_, _, kb), tOrP2(_, _, kb), accO);
          warpgroup_commit_batch();
        }
        warpgroup_wait<0>();
      } else if constexpr (kFp8) {
        // Per 16-row k-block: rows {2q, 2q+1, 2q+8, 2q+9}, this thread's 16 latent bytes of each,
        // transposed 4x4 in registers into (dim, 2 KV rows) pairs and converted to fp16.
        Tensor tOrV = thr_o.partition_fragment_A(
            make_tensor(make_smem_ptr(static_cast<MmaT*>(nullptr)), typename C::LayoutVtRegs{}));
        const int g = lane / 4, q4 = lane % 4;
        // The four registers of atom mi, k-block kb (the fragment's first mode is compact).
        auto vregs = [&](int mi, int kb) { return reinterpret_cast<uint32_t*>(&tOrV(0, mi, kb)); };
#pragma unroll
        for (int kb = 0; kb < kTileKV / 16; ++kb) {
          uint4 x[4];
#pragma unroll
          for (int s = 0; s < 4; ++s)
            x[s] = lds128(tile + fp8_nope_offset(16 * kb + 2 * q4 + (s & 1) + 8 * (s >> 1), 8 * warp + g));
#pragma unroll
          for (int j = 0; j < 4; ++j)  // atoms 2j, 2j+1: dims 4j..4j+3
            vt_word_to_f16(&x[0].x, &x[1].x, &x[2].x, &x[3].x, j, vregs(2 * j, kb), vregs(2 * j + 1, kb));
          warpgroup_fence_operand(tOrV);
          warpgroup_arrive();
          cute::gemm(mma_o, tOrV(_, _, kb), tOrP(_, _, kb), accO);
          warpgroup_commit_batch();
        }
        warpgroup_wait<0>();
      } else {
        Tensor sVt = make_tensor(make_smem_ptr(reinterpret_cast<T*>(tile)), typename C::LayoutVt{});
        Tensor tOrVt = thr_o.partition_fragment_A(sVt);
        warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < size<2>(tOrVt); ++k) {
          cute::gemm(mma_o, tOrVt(_, _, k), tOrP(_, _, k), accO);
        }
        warpgroup_commit_batch();
        warpgroup_wait<0>();
      }
      warpgroup_fence_operand(accO);
      ETAP_MARK(9);
      mbar_arrive(&ss.empty[stage]);
    }

    // Row sums: lanes sharing lane%4, then the 4 warps.
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      l_run[c] += __shfl_xor_sync(0xffffffff, l_run[c], 4);
      l_run[c] += __shfl_xor_sync(0xffffffff, l_run[c], 8);
      l_run[c] += __shfl_xor_sync(0xffffffff, l_run[c], 16);
    }
    {
      float(*red)[N] = ss.red[wg][red_parity];
      if (lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) red[warp][col_of(c)] = l_run[c];
      }
      named_barrier_sync(bar_id, 128);  // also: every warp's WGMMAs on sQ have completed
      red_parity ^= 1;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int n = col_of(c);
        l_run[c] = red[0][n] + red[1][n] + red[2][n] + red[3][n];
      }
    }

    if (!kSplitDims && p.kv_split) {
      // Merge the two warpgroups' (m, l, O) for the same rows. Each Q buffer is free now (its
      // warpgroup's WGMMAs are done): its tail holds that warpgroup's (m, l), and warpgroup 1's
      // rescaled O passes to warpgroup 0 through its Q buffer in two halves, fragment by fragment.
      constexpr int kV = decltype(size<0>(accO))::value;
      constexpr int kHalf = decltype(size<1>(accO))::value / 2;
      static_assert(kHalf * kV * 128 * 4 + 2 * N * 4 <= int(sizeof(ss.q[0])), "merge staging fits in Q");
      auto ml_of = [&](int w) { return reinterpret_cast<float*>(ss.q[w]) + kHalf * kV * 128; };
      if (warp == 0 && lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          ml_of(wg)[2 * col_of(c)] = m_run[c];
          ml_of(wg)[2 * col_of(c) + 1] = l_run[c];
        }
      }
      // Ordered by mbarriers, not a 256-thread named barrier: the same order, and one that
      // compute-sanitizer's racecheck can follow. Every piece merges once: phase = piece_idx.
      mbar_arrive(&ss.merge_ml[wg]);
      mbar_wait(&ss.merge_ml[0], piece_idx & 1);
      mbar_wait(&ss.merge_ml[1], piece_idx & 1);
      float scale_own[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int n = col_of(c);
        const float m0 = ml_of(0)[2 * n], l0 = ml_of(0)[2 * n + 1];
        const float m1 = ml_of(1)[2 * n], l1 = ml_of(1)[2 * n + 1];
        const float m = fmaxf(m0, m1);
        const float b = m == -INFINITY ? 0.f : m;
        const float a0 = exp2f(m0 - b), a1 = exp2f(m1 - b);  // 0 for a warpgroup without keys
        scale_own[c] = wg == 0 ? a0 : a1;
        m_run[c] = m;
        l_run[c] = l0 * a0 + l1 * a1;
      }
      float* xfer = reinterpret_cast<float*>(ss.q[1]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (wg == 1) {
#pragma unroll
          for (int mi = 0; mi < kHalf; ++mi)
#pragma unroll
            for (int v = 0; v < kV; ++v)
              xfer[(mi * kV + v) * 128 + tid] = accO(v, h * kHalf + mi, 0) * scale_own[slot_of_value(v)];
        }
        // two hand-offs per piece: phase parity = h
        if (wg == 1) mbar_arrive(&ss.xfer_full);
        else mbar_wait(&ss.xfer_full, h);
        if (wg == 0) {
#pragma unroll
          for (int mi = 0; mi < kHalf; ++mi)
#pragma unroll
            for (int v = 0; v < kV; ++v)
              accO(v, h * kHalf + mi, 0) =
                  accO(v, h * kHalf + mi, 0) * scale_own[slot_of_value(v)] + xfer[(mi * kV + v) * 128 + tid];
        }
        if (wg == 0) mbar_arrive(&ss.xfer_empty);
        else mbar_wait(&ss.xfer_empty, h);
      }
      if (wg == 1) {  // warpgroup 0 writes the merged rows
        ETAP_MARK(10);
        if constexpr (!kFp8) mbar_arrive(&ss.q_empty);
        ++piece_idx;
        return;
      }
    }

    float inv_l[kCols], lse2[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const bool any = l_run[c] > 0.f;
      inv_l[c] = any ? kv_scale / l_run[c] : 0.f;
      lse2[c] = any ? m_run[c] + log2f(l_run[c]) : -INFINITY;
    }

    const int row0 = group * p.rows_per_group + wg_row0;  // global query row of column 0
    auto row_valid = [&](int n) {
      return wg_row0 + n < p.rows_per_group && row0 + n < p.rows;
    };
    // The same for the O^T columns, and their normalisation: with the dims split the columns
    // are all the CTA's rows, whose sums the two warpgroups exchange.
    const int o_grow0 = group * p.rows_per_group + o_row0;
    auto o_row_valid = [&](int n) {
      return o_row0 + n < p.rows_per_group && o_grow0 + n < p.rows;
    };
    float inv_o[kOCols];
    if constexpr (kSplitDims) {
      if (warp == 0 && lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) ss.row_x[2][wg * N + col_of(c)] = l_run[c];
      }
      named_barrier_sync(kBarConsumers, 256);
#pragma unroll
      for (int c = 0; c < kOCols; ++c) {
        const float l = ss.row_x[2][col_of(c)];
        inv_o[c] = l > 0.f ? kv_scale / l : 0.f;
      }
    } else {
#pragma unroll
      for (int c = 0; c < kCols; ++c) inv_o[c] = inv_l[c];
    }

    if (pc.slot == -1) {
      // Whole sequence in this piece: normalise, stage [N][512] in this warpgroup's Q buffer,
      // then write 16-byte vectors of out.
      // (Dims split: [2N][256 + 8] of this warpgroup's dims.)
      T* stage_buf = reinterpret_cast<T*>(ss.q[wg]);
      constexpr int kPitch = kSplitDims ? C::kStagePitch2 : C::kStagePitch;
      const int d0 = kSplitDims ? wg * kOM : 0;  // first latent dim of this warpgroup's O^T
#pragma unroll
      for (int mi = 0; mi < size<1>(accO); ++mi) {
#pragma unroll
        for (int v = 0; v < size<0>(accO); ++v) {
          const int c = slot_of_value(v);
          const int n = col_of(c);
          const int d = dv_of(mi, v) - d0;
          stage_buf[n * kPitch + d] = static_cast<T>(accO(v, mi, 0) * inv_o[c]);
        }
      }
      named_barrier_sync(bar_id, 128);
      T* out = static_cast<T*>(p.out);
      for (int idx = tid; idx < kON * (kOM / 8); idx += 128) {
        const int n = idx / (kOM / 8), chunk = idx % (kOM / 8);
        if (!o_row_valid(n)) continue;
        const int grow = o_grow0 + n;
        const int tok = grow / p.h_q, head = grow % p.h_q;
        T* dst = out + pc.batch * p.out_stride[0] + tok * p.out_stride[1] + head * p.out_stride[2] +
                 d0 + chunk * 8;
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(stage_buf + n * kPitch + chunk * 8);
      }
      if (warp == 0 && lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const int n = col_of(c);
          if (!row_valid(n)) continue;
          const int grow = row0 + n;
          const int tok = grow / p.h_q, head = grow % p.h_q;
          p.lse[pc.batch * p.lse_stride[0] + head * p.lse_stride[1] + tok * p.lse_stride[2]] =
              lse2[c] * 0.6931471805599453f;
        }
      }
      named_barrier_sync(bar_id, 128);  // staging reads done before the Q buffer is refilled
    } else if (pc.slot >= 0) {
      // Partial piece: fp32 partial output and log2-domain lse for the combine kernel.
      const int64_t block = (int64_t(pc.slot) * p.num_groups + group) * kRowsPerCta;
      if constexpr (kSplitDims) {
        // 8 contiguous dims per thread and column (dv_of_fp8_half): two 16-byte stores.
#pragma unroll
        for (int c = 0; c < kOCols; ++c) {
          const int n = col_of(c);
          if (!o_row_valid(n)) continue;
          float* dst = p.o_accum + (block + n) * kDimV + dv_of_fp8_half(wg, warp, lane / 4, 0, 0);
          auto val = [&](int mi, int h) { return accO(value_of_slot(c, h), mi, 0) * inv_o[c]; };
#pragma unroll
          for (int q = 0; q < 2; ++q)
            *reinterpret_cast<float4*>(dst + 4 * q) =
                make_float4(val(2 * q, 0), val(2 * q, 1), val(2 * q + 1, 0), val(2 * q + 1, 1));
        }
      } else if constexpr (kFp8) {
        // Each thread holds 16 contiguous dims (16 * (lane / 4) + 128 * warp) of its columns:
        // four 16-byte stores per column instead of sixteen scalar ones.
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const int n = col_of(c);
          if (!row_valid(n)) continue;
          float* dst = p.o_accum + (block + wg_row0 + n) * kDimV + dv_of_fp8(warp, lane / 4, 0, 0);
          auto val = [&](int mi, int h) { return accO(value_of_slot(c, h), mi, 0) * inv_l[c]; };
#pragma unroll
          for (int q = 0; q < 4; ++q)
            *reinterpret_cast<float4*>(dst + 4 * q) =
                make_float4(val(2 * q, 0), val(2 * q, 1), val(2 * q + 1, 0), val(2 * q + 1, 1));
        }
      } else {
#pragma unroll
        for (int mi = 0; mi < size<1>(accO); ++mi) {
#pragma unroll
          for (int v = 0; v < size<0>(accO); ++v) {
            const int c = slot_of_value(v);
            const int n = col_of(c);
            if (!row_valid(n)) continue;
            const int d = dv_of(mi, v);
            p.o_accum[(block + wg_row0 + n) * kDimV + d] = accO(v, mi, 0) * inv_l[c];
          }
        }
      }
      if (warp == 0 && lane < 4) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const int n = col_of(c);
          if (row_valid(n)) p.lse_accum[block + wg_row0 + n] = lse2[c];
        }
      }
    }
    ETAP_MARK(10);
    if constexpr (!kFp8) mbar_arrive(&ss.q_empty);
    ++piece_idx;
  });
  ETAP_CTA_SPAN_END(tid, wg, it);
  ETAP_TRACE_DUMP(1 + wg);
}

}  // namespace etap::sm90
#include "heads_on_m.cuh"
namespace etap::sm90 {

// One kernel per consumer form (FP8: KV split or dims split; 16-bit: heads on N or on M), so
// each gets its own registers.
template <class T, int N, bool kFp8, bool kSplitDims, bool kHeadsOnM = false>
__global__ void __launch_bounds__(kThreads, 1) decode_kernel(const __grid_constant__ DecodeParams p) {
  static_assert(!kHeadsOnM || (N == 32 && !kSplitDims), "heads on M: 2 x 32 rows");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Storage = StorageOf<T, N, kFp8, kHeadsOnM>;
  constexpr int kStages = Storage::kStages;
  extern __shared__ __align__(1024) char smem_raw[];
  auto& ss = *reinterpret_cast<Storage*>(smem_raw);
  const int part = blockIdx.x, group = blockIdx.y;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&ss.full[s], 128);   // one cp.async arrival per producer thread
      mbar_init(&ss.full_first[s], 128);
      mbar_init(&ss.empty[s], p.kv_split ? 128 : 256);  // every thread that read the stage releases it
    }
    mbar_init(&ss.q_full, 128);
    mbar_init(&ss.q_empty, 256);
    mbar_init(&ss.merge_ml[0], 128);
    mbar_init(&ss.merge_ml[1], 128);
    mbar_init(&ss.xfer_full, 128);
    mbar_init(&ss.xfer_empty, 128);
    fence_mbarrier_init();
  }
  __syncthreads();

  // Through a shuffle the compiler knows the warpgroup index is warp-uniform, so the WGMMA
  // descriptors built from it live in uniform registers (R2UR moves per tile: 140 -> 37 at e4m3
  // N = 32). Measured faster in every FP8 row and bf16 N >= 16, but 3.7% slower at bf16 N = 8
  // (b16/64K h_q 16: 314 vs 303 us, same run), which keeps the plain index.
  constexpr bool kUniformWg = kFp8 || N > 8;
  const int wg = kUniformWg ? __shfl_sync(0xffffffff, threadIdx.x / 128, 0) : threadIdx.x / 128;
  if (wg == 0) {
    cutlass::arch::warpgroup_reg_dealloc<40>();
    producer<T, N, kFp8, kHeadsOnM>(p, ss, part, group);
  } else {
    cutlass::arch::warpgroup_reg_alloc<232>();
    if constexpr (kHeadsOnM) consumer_heads_on_m<T, kFp8>(p, ss, part, group, wg - 1);
    else consumer<T, N, kFp8, kSplitDims>(p, ss, part, group, wg - 1);
  }
#endif
}

template <class T, int N, bool kFp8, bool kSplitDims, bool kHeadsOnM = false>
int launch_decode_form(const DecodeParams& p, void* stream) {
  constexpr int smem = sizeof(StorageOf<T, N, kFp8, kHeadsOnM>);
  static_assert(smem <= 232448, "exceeds the 227 KB of shared memory a Hopper CTA can opt into");
  auto kernel = decode_kernel<T, N, kFp8, kSplitDims, kHeadsOnM>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return int(err);
  dim3 grid(p.num_parts, p.num_groups);
  kernel<<<grid, kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p);
#ifdef ETAP_TRACE
  print_trace_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>();
#endif
  return int(cudaGetLastError());
}

// Groups of 2 x 32 rows take the heads-on-M form unless turned off (bindings.cpp). Otherwise
// FP8 with rows split over the warpgroups runs the dims split; KV split (all rows in each
// warpgroup) only up to N = 16 (bindings.cpp refuses more).
template <class T, int N, bool kFp8>
int launch_decode_impl(const DecodeParams& p, void* stream) {
  if constexpr (N == 32) {
    if (p.heads_on_m) return launch_decode_form<T, N, kFp8, false, true>(p, stream);
  }
  if constexpr (!kFp8) {
    return launch_decode_form<T, N, false, false>(p, stream);
  } else {
    if (!p.kv_split) return launch_decode_form<T, N, true, true>(p, stream);
    if constexpr (N <= 16) return launch_decode_form<T, N, true, false>(p, stream);
    return int(cudaErrorInvalidValue);
  }
}

}  // namespace etap::sm90

// dt names the instance (bf16, fp16, e4m3); T is the query/output type; fp8: e4m3 cache.
#define ETAP_DEFINE_LAUNCH(dt, T, n, fp8)                                     \
  namespace etap {                                                            \
  int launch_decode_##dt##_n##n(const DecodeParams& p, void* stream) {        \
    return sm90::launch_decode_impl<T, n, fp8>(p, stream);                    \
  }                                                                           \
  }
