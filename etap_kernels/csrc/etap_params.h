// Plain-C++ description of one ETAP decode launch. Shared by the torch bindings and the
// kernels so the kernels compile without torch headers (CI compiles them with nvcc alone).
#pragma once
#include <cstdint>

namespace etap {

constexpr int kTileKV = 64;          // KV rows per tile: WGMMA M of S^T = K Q^T
constexpr int kDimQK = 576;          // 512 latent + 64 rope
constexpr int kDimV = 512;           // V = first 512 columns of each cache row
constexpr int kDimRope = kDimQK - kDimV;
constexpr int kRowsPerCta = 64;      // query rows (heads x tokens) one CTA serves
constexpr int kMetaInts = 8;         // ints per part in tile_scheduler_metadata

// Opaque CUtensorMap (128 bytes, 128-byte aligned as cuda.h declares it), encoded on the host by the bindings.
struct alignas(128) TmaDescriptor {
  unsigned char opaque[128];
};

struct DecodeParams {
  // Queries: q_nope [b, s_q, h_q, 512], q_rope [b, s_q, h_q, 64]; strides in elements.
  const void* q_nope;
  const void* q_rope;
  int64_t q_nope_stride[3];  // batch, token, head
  int64_t q_rope_stride[3];

  // Paged cache: rows of k_nope (512 wide, also V) and k_rope (64 wide).
  const void* k_nope;
  const void* k_rope;
  int64_t k_nope_page_stride, k_nope_row_stride;
  int64_t k_rope_page_stride, k_rope_row_stride;
  int num_pages;
  int page_size;
  int page_shift;            // log2(page_size) when a power of two, else -1

  // Bulk tensor copies (TMA) for whole tiles: 3-D maps (column, slot in page, page) over the
  // nope and rope caches with 64 x tma_rows boxes and 128-byte swizzle. Used when use_tma != 0;
  // partial tiles and tiles with invalid page ids still go through cp.async with zero-fill.
  TmaDescriptor tma_nope;
  TmaDescriptor tma_rope;
  int use_tma;
  int tma_rows;              // min(page_size, 64); page_size >= 8 divides 64 or is a multiple of 64

  // Page table: either a block table [b, table_stride] (page_indptr == nullptr)
  // or FlashInfer's kv_indices addressed through page_indptr [b + 1].
  const int* page_table;
  const int* page_indptr;
  int64_t page_table_stride;
  int64_t page_table_len;    // entries in page_table (kv_indices) for bounds checks
  int max_pages_per_seq;     // block-table width

  const int* seqlens;        // [b]

  // Outputs: out [b, s_q, h_q, 512] (q dtype), lse [b, h_q, s_q] fp32 natural log.
  void* out;
  int64_t out_stride[3];     // batch, token, head
  float* lse;
  int64_t lse_stride[3];     // batch, head, token

  // Split-KV partials: o_accum [max_slots, groups, 64, 512], lse_accum [max_slots, groups, 64] (log2).
  float* o_accum;
  float* lse_accum;
  int max_slots;

  // Schedule from get_mla_metadata.
  const int* sched_meta;     // [num_parts, 8]
  const int* num_splits;     // [b + 1] prefix sums of split slots per batch
  int num_parts;

  int batch, s_q, h_q;
  int rows;                  // s_q * h_q; row r = token (r / h_q), head (r % h_q)
  int rows_per_group;        // query rows per CTA (<= 64)
  int num_groups;
  int rows_per_wg;           // N of the WGMMAs (multiple of 8)
  // 1 when one warpgroup holds all of a CTA's rows: the two consumer warpgroups then take
  // alternate KV tiles (twice the tiles in flight) and merge their softmax states per piece.
  int kv_split;
  // Groups of 49-64 rows (two warpgroups of 32), any cache type: the heads-on-M form
  // (heads_on_m.cuh).
  int heads_on_m;
  float scale_log2;          // softmax_scale * log2(e)
  // e4m3 cache only (nullptr = 1): scores use q_scale * kv_scale, the output kv_scale.
  const float* q_scale;
  const float* kv_scale;
  bool causal;
};

struct MetadataParams {
  const int* seqlens;
  int batch;
  int num_parts;
  int* sched_meta;           // [num_parts, 8]
  int* num_splits;           // [b + 1]
  int fixed_cost;            // overhead per piece, in tiles (scheduler.fixed_cost_tiles)
};

// Launchers, one per (dtype, rows per warpgroup) instantiation, defined in sm90/*.cu; e4m3 =
// e4m3 cache with bf16 queries and output.
// They return a cudaError_t as int so this header stays free of CUDA and torch.
#define ETAP_FOR_EACH_INSTANCE(X) \
  X(bf16, 8) X(bf16, 16) X(bf16, 24) X(bf16, 32) X(fp16, 8) X(fp16, 16) X(fp16, 24) X(fp16, 32) \
  X(e4m3, 8) X(e4m3, 16) X(e4m3, 24) X(e4m3, 32)  /* e4m3 N > 16: rows split only */
#define ETAP_DECLARE_LAUNCH(dt, n) int launch_decode_##dt##_n##n(const DecodeParams& p, void* stream);
ETAP_FOR_EACH_INSTANCE(ETAP_DECLARE_LAUNCH)
#undef ETAP_DECLARE_LAUNCH

int launch_combine(const DecodeParams& p, bool is_fp16, void* stream);
int launch_metadata(const MetadataParams& p, void* stream);

}  // namespace etap
