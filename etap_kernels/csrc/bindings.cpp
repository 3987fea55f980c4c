// Torch bindings: turn validated tensors (etap_kernels/interface.py checks every argument and
// raises clear Python errors) into DecodeParams and launch. The checks here are a last guard.
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it pulls in cuBLAS/cuSPARSE headers
#include <cuda.h>  // CUtensorMap (the driver entry point is fetched at run time: no -lcuda)
#include <cudaTypedefs.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cstdlib>

#include "etap_params.h"

static_assert(sizeof(CUtensorMap) == sizeof(etap::TmaDescriptor) &&
              alignof(CUtensorMap) == alignof(etap::TmaDescriptor));

namespace {

void check_cuda(int err, const char* what) {
  TORCH_CHECK(err == 0, "ETAP ", what, " launch failed: ", cudaGetErrorString(cudaError_t(err)));
}

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess)
      ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// 3-D map (column, slot, page) over one paged cache; false when the driver refuses it.
// 16-bit caches: 64-column boxes, 128B swizzle. e4m3: 128-byte boxes with 128B swizzle for the
// latent part and 64-byte boxes with 64B swizzle for the rope part (sm90/fp8_tile.cuh).
bool encode_cache_map(etap::TmaDescriptor* desc, const at::Tensor& cache, int box_rows) {
  auto encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const int64_t esize = cache.element_size();
  cuuint64_t dims[3] = {cuuint64_t(cache.size(2)), cuuint64_t(cache.size(1)), cuuint64_t(cache.size(0))};
  const int64_t row_stride = cache.size(1) > 1 ? cache.stride(1) : cache.size(2);
  const int64_t page_stride = cache.size(0) > 1 ? cache.stride(0) : row_stride * cache.size(1);
  cuuint64_t strides[2] = {cuuint64_t(row_stride * esize), cuuint64_t(page_stride * esize)};
  const bool fp8 = esize == 1;
  const bool rope = cache.size(2) == etap::kDimRope;
  cuuint32_t box[3] = {fp8 && !rope ? 128u : 64u, cuuint32_t(box_rows), 1};
  cuuint32_t elem_strides[3] = {1, 1, 1};
  const auto dtype = fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8
                         : cache.scalar_type() == at::kHalf ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                            : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const auto swizzle = fp8 && rope ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_128B;
  CUresult r = encode(reinterpret_cast<CUtensorMap*>(desc), dtype, 3, cache.data_ptr(), dims, strides, box,
                      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

std::vector<at::Tensor> get_metadata(const at::Tensor& seqlens, int64_t num_parts, int64_t fixed_cost) {
  TORCH_CHECK(seqlens.is_cuda() && seqlens.scalar_type() == at::kInt && seqlens.dim() == 1 &&
                  seqlens.is_contiguous(),
              "cache_seqlens must be a contiguous int32 CUDA vector");
  TORCH_CHECK(num_parts >= 1, "num_parts must be >= 1");
  TORCH_CHECK(fixed_cost >= 0 && fixed_cost <= 1024, "fixed_cost must be in [0, 1024]");
  const c10::cuda::CUDAGuard guard(seqlens.device());
  const int batch = int(seqlens.size(0));
  auto opts = seqlens.options();
  at::Tensor meta = at::empty({num_parts, etap::kMetaInts}, opts);
  at::Tensor num_splits = at::empty({batch + 1}, opts);
  etap::MetadataParams p{seqlens.data_ptr<int>(), batch, int(num_parts), meta.data_ptr<int>(),
                         num_splits.data_ptr<int>(), int(fixed_cost)};
  check_cuda(etap::launch_metadata(p, c10::cuda::getCurrentCUDAStream().stream()), "metadata");
  return {meta, num_splits};
}

void decode(const at::Tensor& q_nope, const at::Tensor& q_rope, const at::Tensor& k_nope,
            const at::Tensor& k_rope, const at::Tensor& seqlens, const at::Tensor& page_table,
            const c10::optional<at::Tensor>& page_indptr, const at::Tensor& sched_meta,
            const at::Tensor& num_splits, at::Tensor& out, at::Tensor& lse, at::Tensor& o_accum,
            at::Tensor& lse_accum, int64_t rows_per_group, int64_t num_groups, int64_t rows_per_wg,
            double softmax_scale, bool causal, const c10::optional<at::Tensor>& q_scale,
            const c10::optional<at::Tensor>& kv_scale) {
  const auto dtype = q_nope.scalar_type();
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "q must be bf16 or fp16");
  const bool fp8 = k_nope.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(!fp8 || dtype == at::kBFloat16, "an e4m3 cache needs bf16 queries");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&q_rope, &out})
    TORCH_CHECK(t->scalar_type() == dtype, "q and out must share one dtype");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&k_nope, &k_rope})
    TORCH_CHECK(t->scalar_type() == (fp8 ? at::kFloat8_e4m3fn : dtype),
                "the cache must be e4m3 or the dtype of q");
  for (const c10::optional<at::Tensor>* t : {&q_scale, &kv_scale})
    TORCH_CHECK(!t->has_value() || ((*t)->scalar_type() == at::kFloat && (*t)->numel() == 1 &&
                                    (*t)->device() == q_nope.device()),
                "scales must be one float32 on the device of q");
  TORCH_CHECK(q_nope.dim() == 4 && q_rope.dim() == 4 && out.dim() == 4 && lse.dim() == 3 &&
                  k_nope.dim() == 3 && k_rope.dim() == 3,
              "bad ranks");
  TORCH_CHECK(q_nope.stride(3) == 1 && q_rope.stride(3) == 1 && k_nope.stride(2) == 1 &&
                  k_rope.stride(2) == 1 && out.stride(3) == 1,
              "last dims must be contiguous");
  TORCH_CHECK(rows_per_wg == 8 || rows_per_wg == 16 || rows_per_wg == 24 || rows_per_wg == 32,
              "rows_per_wg must be 8, 16, 24 or 32");
  const c10::cuda::CUDAGuard guard(q_nope.device());

  etap::DecodeParams p{};
  p.q_nope = q_nope.data_ptr();
  p.q_rope = q_rope.data_ptr();
  for (int d = 0; d < 3; ++d) {
    p.q_nope_stride[d] = q_nope.stride(d);
    p.q_rope_stride[d] = q_rope.stride(d);
    p.out_stride[d] = out.stride(d);
    p.lse_stride[d] = lse.stride(d);
  }
  p.k_nope = k_nope.data_ptr();
  p.k_rope = k_rope.data_ptr();
  p.k_nope_page_stride = k_nope.stride(0);
  p.k_nope_row_stride = k_nope.stride(1);
  p.k_rope_page_stride = k_rope.stride(0);
  p.k_rope_row_stride = k_rope.stride(1);
  p.num_pages = int(k_nope.size(0));
  p.page_size = int(k_nope.size(1));
  p.page_shift = -1;
  for (int s = 0; s < 31; ++s)
    if ((1 << s) == p.page_size) p.page_shift = s;

  // Whole tiles by bulk tensor copies when every tile covers whole pages or lies in one page.
  const int ps = p.page_size;
  p.tma_rows = ps < etap::kTileKV ? ps : etap::kTileKV;
  // A 128B-swizzled box must land on a 1 KB swizzle atom, so boxes need >= 8 rows: page sizes
  // 1, 2 and 4 use cp.async (measured: 1-row boxes fault with a misaligned address).
  p.use_tma = ps >= 8 && (ps % etap::kTileKV == 0 || etap::kTileKV % ps == 0) &&
              !std::getenv("ETAP_DISABLE_TMA") && encode_cache_map(&p.tma_nope, k_nope, p.tma_rows) &&
              encode_cache_map(&p.tma_rope, k_rope, p.tma_rows);

  p.page_table = page_table.data_ptr<int>();
  p.page_indptr = page_indptr.has_value() ? page_indptr->data_ptr<int>() : nullptr;
  p.page_table_stride = page_table.dim() == 2 ? page_table.stride(0) : 0;
  p.page_table_len = page_table.numel();
  p.max_pages_per_seq = page_table.dim() == 2 ? int(page_table.size(1)) : 0;
  p.seqlens = seqlens.data_ptr<int>();

  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.o_accum = o_accum.data_ptr<float>();
  p.lse_accum = lse_accum.data_ptr<float>();
  p.max_slots = int(o_accum.size(0));

  p.sched_meta = sched_meta.data_ptr<int>();
  p.num_splits = num_splits.data_ptr<int>();
  p.num_parts = int(sched_meta.size(0));

  p.batch = int(q_nope.size(0));
  p.s_q = int(q_nope.size(1));
  p.h_q = int(q_nope.size(2));
  p.rows = p.s_q * p.h_q;
  p.rows_per_group = int(rows_per_group);
  p.num_groups = int(num_groups);
  p.rows_per_wg = int(rows_per_wg);
  p.kv_split = rows_per_wg >= rows_per_group ? 1 : 0;
  // The heads-on-M form for groups of 2 x 32 rows (16-bit: measured faster at h_q 64 and 128);
  // ETAP_HEADS_ON_M=0 (read per call) keeps them transposed, for A/B runs.
  const char* heads_on_m = std::getenv("ETAP_HEADS_ON_M");
  p.heads_on_m = rows_per_wg == 32 && !p.kv_split && !(heads_on_m && std::string(heads_on_m) == "0");
  // An e4m3 KV split keeps all 512 dims of V^T in each warpgroup's registers: N <= 16 only.
  TORCH_CHECK(!fp8 || !p.kv_split || rows_per_wg <= 16,
              "an e4m3 cache runs KV split only for rows_per_wg <= 16, got ", rows_per_wg);
  p.scale_log2 = float(softmax_scale * 1.4426950408889634);
  p.causal = causal;
  p.q_scale = q_scale.has_value() ? q_scale->data_ptr<float>() : nullptr;
  p.kv_scale = kv_scale.has_value() ? kv_scale->data_ptr<float>() : nullptr;
  if (p.batch == 0) return;

  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const bool fp16 = dtype == at::kHalf;
  int err = -1;
  const std::string instance = fp8 ? "e4m3" : fp16 ? "fp16" : "bf16";
#define ETAP_DISPATCH(dt, n) \
  if (instance == #dt && rows_per_wg == n) err = etap::launch_decode_##dt##_n##n(p, stream);
  ETAP_FOR_EACH_INSTANCE(ETAP_DISPATCH)
#undef ETAP_DISPATCH
  TORCH_CHECK(err != -1, "no ", instance, " kernel for ", rows_per_wg, " rows per warpgroup");
  check_cuda(err, "decode");
  check_cuda(etap::launch_combine(p, fp16, stream), "combine");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ETAP transposed MLA decode kernels (sm_90a)";
  m.def("get_metadata", &get_metadata, "split-KV schedule from cache_seqlens (GPU, no sync)");
  m.def("decode", &decode, "ETAP MLA decode into out/lse");
}
