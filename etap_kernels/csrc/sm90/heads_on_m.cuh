// The heads-on-M consumer: the untransposed form for CTAs of 49-64 query rows (2 x 32).
//
// Once a CTA holds 64 rows, the transposed tile has no padding to save, and each warpgroup
// reading the whole KV tile as its A operand costs twice the shared-memory operand bytes
// (NOTES.md, "h_q >= 64"). Here the 64 rows sit on WGMMA M instead:
//     S = Q . K^T       (M = 64 rows, N = 64 KV rows, K = 576), by one warpgroup per tile
//     O += P . V        (M = 64 rows, N = 256 latent dims, K = 64), by both warpgroups, each
//                       holding one half of the 512 dims of O
// The warpgroups take the tiles in turn. The tile's owner computes S, the softmax and P, keeps
// P in registers for its own half of O, and hands P (shared memory), the new running max and
// the rescale factor to the other warpgroup, which applies the tile to the other half. So the
// KV tile is read once as S's B operand and once as O's B operand, with no duplicate reads.
// S starts on a tile's first 256 columns while the rest lands (`full_first`), and the next
// tile's owner issues its S before it waits for this tile's P when that tile is already there.
//
// The producer, the tile layout, the schedule and the split-KV partials are the transposed
// kernel's (SharedStorage<T, 32, false>: Q holds the CTA's 64 rows across both Q buffers, P's
// two 32-row buffers are one 64 x 64 tile, `red` holds the hand-off values).
//
// Over an e4m3 cache (HeadsOnMFp8Storage) the same steps run on fp16 operands: both warpgroups
// convert each e4m3 tile into one fp16 tile (exact) and release the e4m3 stage, so the loads
// run ahead while S and O read the fp16 copy; Q is converted to fp16 in place once per piece,
// each row scaled by a power of two if its max |q| would not fit. With one fp16 tile there is
// no early S; the conversion waits for both halves of the previous tile's O.
#pragma once

namespace etap::sm90 {

// M: the WGMMA operand type (T, or fp16 over an e4m3 cache).
template <class M>
struct HeadsOnMConfig {
  using Base = Config<M, 32, false>;
  using SwAtom = typename Base::SwAtom;
  using LayoutQ = typename Base::LayoutQBoth;  // the CTA's 64 rows, as the producer loads them
  using LayoutP = decltype(tile_to_shape(SwAtom{}, Shape<Int<kRowsPerCta>, Int<kTileKV>>{}));
  // One warpgroup's half of V as the MN-major B operand (256 dims x 64 KV rows): the first 256
  // columns of the tile from a pointer offset by 256 w columns (4 whole swizzle atoms).
  using LayoutVHalf = decltype(tile_to_shape(SwAtom{}, Shape<Int<kTileKV>, Int<kDimV / 2>>{}));
  using LayoutVtHalf = decltype(composition(LayoutVHalf{},
                                            make_layout(Shape<Int<kDimV / 2>, Int<kTileKV>>{}, GenRowMajor{})));
  static constexpr int kVHalfOffset = kTileKV * kDimV / 2;  // elements from dim 0 to dim 256
  using MmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<M, M, float, Shape<Int<kRowsPerCta>, Int<kTileKV>, Int<kDimQK>>, GMMA::Major::K,
                           GMMA::Major::K>()));
  // The owner's P from registers; the other warpgroup's from shared memory.
  using MmaORegs = decltype(make_tiled_mma(
      GMMA::rs_op_selector<M, M, float, Shape<Int<kRowsPerCta>, Int<kDimV / 2>, Int<kTileKV>>, GMMA::Major::K,
                           GMMA::Major::MN>()));
  using MmaOSmem = decltype(make_tiled_mma(
      GMMA::ss_op_selector<M, M, float, Shape<Int<kRowsPerCta>, Int<kDimV / 2>, Int<kTileKV>>, GMMA::Major::K,
                           GMMA::Major::MN>()));
};

// Per-row hand-off values: in `red` (16-bit), in `hand` (e4m3).
template <class T>
__device__ __forceinline__ float* hand_values(SharedStorage<T, 32, false>& ss) { return &ss.red[0][0][0][0]; }
template <class T>
__device__ __forceinline__ float* hand_values(HeadsOnMFp8Storage<T>& ss) { return &ss.hand[0][0]; }

// An e4m3 tile (fp8_tile.cuh's layout) into the fp16 tile (LayoutKV), exact; thread ct of the
// 256 consumer threads converts row ct / 4, e4m3 units ct % 4 + 4 k (16 dims each).
__device__ __forceinline__ void e4m3_tile_to_f16(const uint8_t* tile, uint8_t* tile16, int ct) {
  const int r = ct / 4;
#pragma unroll
  for (int k = 0; k < kDimQK / 64; ++k) {
    const int u = ct % 4 + 4 * k;  // 0..31 latent, 32..35 rope
    const uint4 v = lds128(tile + (u < kDimV / 16 ? fp8_nope_offset(r, u) : fp8_rope_offset(r, u - kDimV / 16)));
    uint32_t h[8];
    e4m3x4_to_f16x4(v.x, h[0], h[1]);
    e4m3x4_to_f16x4(v.y, h[2], h[3]);
    e4m3x4_to_f16x4(v.z, h[4], h[5]);
    e4m3x4_to_f16x4(v.w, h[6], h[7]);
    sts128(tile16 + sw128_unit_offset(r, 2 * u), h[0], h[1], h[2], h[3]);
    sts128(tile16 + sw128_unit_offset(r, 2 * u + 1), h[4], h[5], h[6], h[7]);
  }
}

// Q (16-bit T, as the producer loaded it) to fp16 in place, by the 256 consumer threads (row
// ct / 4, units ct % 4 + 4 k). A row whose max |q| reaches 2^15 is scaled by 2^-e first; its
// 2^e goes to `row_scale` for S. Needs the 4 threads of a row in one lane quad.
template <class T>
__device__ __forceinline__ void q_to_f16_in_place(uint8_t* q, float* row_scale, int ct) {
  constexpr int kUnits = kDimQK / 8 / 4;  // per thread
  const int r = ct / 4;
  float amax = 0.f;
#pragma unroll
  for (int k = 0; k < kUnits; ++k) {
    const uint4 v = lds128(q + sw128_unit_offset(r, ct % 4 + 4 * k));
    const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(static_cast<float>(e[j])));
  }
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, 2));
  int e2 = 0;
  frexpf(amax, &e2);  // amax < 2^e2
  const int shift = e2 > 15 ? e2 - 15 : 0;
  const float down = ldexpf(1.f, -shift);
#pragma unroll
  for (int k = 0; k < kUnits; ++k) {
    uint8_t* unit = q + sw128_unit_offset(r, ct % 4 + 4 * k);
    const uint4 v = lds128(unit);
    const T* e = reinterpret_cast<const T*>(&v);
    uint32_t h[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __half2 x = __floats2half2_rn(static_cast<float>(e[2 * j]) * down, static_cast<float>(e[2 * j + 1]) * down);
      h[j] = *reinterpret_cast<const uint32_t*>(&x);
    }
    sts128(unit, h[0], h[1], h[2], h[3]);
  }
  if (ct % 4 == 0) row_scale[r] = ldexpf(1.f, shift);
}

template <class T, bool kFp8, class S>
__device__ __forceinline__ void consumer_heads_on_m(const DecodeParams& p, S& ss, int part, int group, int wg) {
  using M = std::conditional_t<kFp8, cutlass::half_t, T>;  // WGMMA operand type
  using C = HeadsOnMConfig<M>;
  constexpr int kStages = S::kStages;
  static_assert(cosize_v<typename C::LayoutQ> * sizeof(M) == sizeof(ss.q), "Q fills both buffers");
  static_assert(cosize_v<typename C::LayoutP> * sizeof(M) == sizeof(ss.p), "P fills both buffers");
  const int tid = threadIdx.x % 128;
  const int lane = tid % 32, warp = tid / 32;
  // Accumulator element (v0, h, j) of a 64 x N atom sits at row 16 warp + lane / 4 + 8 h and
  // column 2 (lane % 4) + v0 + 8 j: each thread holds two rows, each row sits in one lane quad.
  const int row_base = 16 * warp + lane / 4;
  auto row_of = [&](int h) { return row_base + 8 * h; };

  typename C::MmaS mma_s;
  typename C::MmaORegs mma_or;
  typename C::MmaOSmem mma_os;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_or = mma_or.get_thread_slice(tid);
  auto thr_os = mma_os.get_thread_slice(tid);

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<M*>(ss.q[0])), typename C::LayoutQ{});
  Tensor sP = make_tensor(make_smem_ptr(reinterpret_cast<M*>(ss.p[0])), typename C::LayoutP{});
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);
  Tensor tOrPs = thr_os.partition_fragment_A(sP);
  // P as register A fragments ((2,2,2), 1, 4): value i + 8 kb is accumulator value i + 8 kb of S.
  Tensor tOrP = thr_or.partition_fragment_A(
      make_tensor(make_smem_ptr(static_cast<M*>(nullptr)), Layout<Shape<Int<kRowsPerCta>, Int<kTileKV>>>{}));
  Tensor accS = partition_fragment_C(mma_s, Shape<Int<kRowsPerCta>, Int<kTileKV>>{});   // ((2,2,8),1,1)
  Tensor accO = partition_fragment_C(mma_or, Shape<Int<kRowsPerCta>, Int<kDimV / 2>>{});  // ((2,2,32),1,1)
  static_assert(decltype(size(tOrP))::value == decltype(size(accS))::value);

  // Hand-off values (16-bit: in `red`, unused by this form): the tile's new running max and
  // rescale factor per row, each warpgroup's row sums per piece parity; e4m3: Q's row scales.
  float* hand_m = hand_values(ss);
  float* hand_alpha = hand_m + kRowsPerCta;
  auto row_sums = [&](int parity, int w) { return hand_alpha + kRowsPerCta * (1 + 2 * parity + w); };
  float* q_row_scale = hand_m + 6 * kRowsPerCta;
  if constexpr (!kFp8) static_assert(sizeof(ss.red) >= 6 * kRowsPerCta * sizeof(float), "hand-off values fit in red");
  const int ct = wg * 128 + tid;  // consumer thread, for the conversions
  const float kv_scale = kFp8 && p.kv_scale ? *p.kv_scale : 1.f;
  const float s_scale = p.scale_log2 * (kFp8 ? kv_scale * (p.q_scale ? *p.q_scale : 1.f) : 1.f);
  uint64_t* p_full = &ss.xfer_full;  // one phase per tile: its P, max and factors are published
  // The owner stores P by shared-window address (the swizzled tensor access compiles to generic
  // 16-bit stores with 64-bit address math, about 1.3k cycles a tile in the trace). LayoutP is
  // one 64-column chunk: word q of unit j of row r at sw128_unit_offset(r, j) + 4 q, i.e.
  // r * 128 + ((j ^ r % 8) << 4) + 4 q. p_word[h] is this thread's word in unit 0 of its row h,
  // before the swizzle.
  static_assert(decltype(size(accS))::value == 32, "two rows x 8 units x one word per thread");
  const uint32_t p_word[2] = {smem_addr(ss.p[0]) + row_of(0) * 128 + 4 * (lane % 4),
                              smem_addr(ss.p[0]) + row_of(1) * 128 + 4 * (lane % 4)};
  const int p_swizzle = row_of(0) % 8;  // = row_of(1) % 8

  int it = 0, piece_idx = 0;
  ETAP_TRACE_INIT(tid);
  ETAP_MARK(15);
  ETAP_CTA_SPAN_BEGIN();
  for_each_piece(p, part, [&](const Piece& pc) __attribute__((always_inline)) {
    const int len = effective_len(p, pc.batch, pc.len);
    int limit[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok = (group * p.rows_per_group + row_of(h)) / p.h_q;
      limit[h] = p.causal ? len - (p.s_q - 1 - tok) : len;
    }
    const int min_limit = min(limit[0], limit[1]);
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    clear(accO);

    if (piece_idx == 0 && wg == 0) {  // the first piece's Q, in place of the producer (consumer())
      load_q_async<T, 32, kFp8, true>(p, ss, pc.batch, group, tid);
      cp_async_arrive_noinc(&ss.q_full);
    }
    mbar_wait(&ss.q_full, piece_idx & 1);
    float s_mul[2] = {s_scale, s_scale};  // score -> log2 domain, per row
    if constexpr (kFp8) {
      q_to_f16_in_place<T>(ss.q[0], q_row_scale, ct);
      fence_proxy_async();  // generic writes -> the S WGMMAs
      named_barrier_sync(kBarConsumers, 256);
#pragma unroll
      for (int h = 0; h < 2; ++h) s_mul[h] *= q_row_scale[row_of(h)];
    }
    fence_proxy_async();
    ETAP_MARK(3);

    // The tile S and O read: the stage itself (16-bit), or the fp16 copy of it (e4m3).
    auto operand_tile = [&](int stage) {
      if constexpr (kFp8) return reinterpret_cast<M*>(ss.kv16);
      else return reinterpret_cast<M*>(ss.kv[stage]);
    };
    auto vt_half = [&](int stage) {
      return make_tensor(make_smem_ptr(operand_tile(stage) + wg * C::kVHalfOffset), typename C::LayoutVtHalf{});
    };
    // S of the tile in `stage` (use parity `parity`): the WGMMAs over its first 256 columns go
    // out as soon as those have landed, the rest once the whole tile has.
    auto issue_scores = [&](int stage, uint32_t parity) {
      Tensor sK = make_tensor(make_smem_ptr(operand_tile(stage)), typename C::Base::LayoutKV{});
      Tensor tSrK = thr_s.partition_fragment_B(sK);
      constexpr int kFirstSteps = kFirstCols / 16;
      if constexpr (!kFp8) {  // (e4m3: the fp16 copy is complete before any S)
        mbar_wait(&ss.full_first[stage], parity);
        fence_proxy_async();  // cp.async (generic proxy) writes -> WGMMA (async proxy) reads
      }
      warpgroup_fence_operand(accS);
      warpgroup_arrive();
#pragma unroll
      for (int k = 0; k < size<2>(tSrK); ++k) {
        if (!kFp8 && k == kFirstSteps) {
          mbar_wait(&ss.full[stage], parity);
          fence_proxy_async();
        }
        mma_s.accumulate_ = k == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
        cute::gemm(mma_s, tSrQ(_, _, k), tSrK(_, _, k), accS);
      }
      warpgroup_commit_batch();
    };
    auto rescale = [&](const float (&alpha)[2]) {
      // Once the running maxima settle every factor is 1: skip it then (warp-uniform).
      if (__any_sync(0xffffffff, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int i = 0; i < size(accO); ++i) accO(i) *= alpha[(i / 2) % 2];
      }
    };

    bool s_issued = false;  // this warpgroup's S for its next tile is already in flight
    for (int t = pc.tile_begin; t < pc.tile_end; ++t, ++it) {
      const int stage = it % kStages;
      if constexpr (kFp8) {
        // Both warpgroups: once both are done with the fp16 tile (their O of the last tile
        // waited), convert this one into it and free the e4m3 stage for the next load.
        mbar_wait(&ss.full[stage], (it / kStages) & 1);
        named_barrier_sync(kBarConsumers, 256);
        e4m3_tile_to_f16(ss.kv[stage], ss.kv16, ct);
        mbar_arrive(&ss.empty[stage]);
        fence_proxy_async();  // generic writes -> the WGMMAs of this tile
        named_barrier_sync(kBarConsumers, 256);
      }
      if ((it & 1) == wg) {
        // The owner: S, the softmax, P handed over, then its half of O from registers.
        ETAP_MARK(4);
        if (!s_issued) issue_scores(stage, (it / kStages) & 1);
        s_issued = false;
        warpgroup_wait<0>();  // S, and the other half's WGMMA that read the previous P
        warpgroup_fence_operand(accS);
        ETAP_MARK(5);

        const bool need_mask = (t + 1) * kTileKV > min_limit;
        float row_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int i = 0; i < size(accS); ++i) {
          const int h = (i / 2) % 2;
          float s = accS(i) * (kFp8 ? s_mul[h] : p.scale_log2);
          if (need_mask && t * kTileKV + 2 * (lane % 4) + (i % 2) + 8 * (i / 4) >= limit[h]) s = -INFINITY;
          accS(i) = s;
          row_max[h] = fmaxf(row_max[h], s);
        }
        ETAP_MARK(6);
        float alpha[2], base[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xffffffff, row_max[h], 1));
          row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xffffffff, row_max[h], 2));
          alpha[h] = online_softmax_step(row_max[h], m_run[h], l_run[h], base[h]);
        }
#pragma unroll
        for (int i = 0; i < size(accS); ++i) {
          const int h = (i / 2) % 2;
          const float pr = exp2f(accS(i) - base[h]);
          l_run[h] += pr;
          tOrP(i) = static_cast<M>(pr);
        }
        // P(r, c) for c = 2 (lane % 4) + 8 j + {0, 1}: one 32-bit word in 16-byte unit j of row r.
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int i = 4 * j + 2 * h;
            st_shared_u32(p_word[h] + ((j ^ p_swizzle) << 4),
                          uint32_t(tOrP(i).raw()) | (uint32_t(tOrP(i + 1).raw()) << 16));
          }
        }
        if (lane % 4 == 0) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            hand_m[row_of(h)] = m_run[h];
            hand_alpha[row_of(h)] = alpha[h];
          }
        }
        fence_proxy_async();  // P's generic writes -> the other warpgroup's WGMMA reads
        mbar_arrive(p_full);
        ETAP_MARK(8);

        rescale(alpha);
        Tensor tOrV = thr_or.partition_fragment_B(vt_half(stage));
        warpgroup_fence_operand(tOrP);  // P's registers packed before the first WGMMA reads them
        warpgroup_fence_operand(accO);
        warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < size<2>(tOrV); ++k) cute::gemm(mma_or, tOrP(_, _, k), tOrV(_, _, k), accO);
        warpgroup_commit_batch();
        warpgroup_wait<0>();
        warpgroup_fence_operand(accO);
        ETAP_MARK(9);
        if constexpr (!kFp8) mbar_arrive(&ss.empty[stage]);
      } else {
        ETAP_MARK(11);
        // The other warpgroup: the owner's P from shared memory into this half of O. It owns
        // the next tile: when that tile has landed, its S goes first, so the tensor cores run
        // it during the owner's softmax of this tile (the same answer for the whole warpgroup).
        const bool has_next = !kFp8 && t + 1 < pc.tile_end;  // (e4m3: one fp16 tile, no early S)
        const int next = (it + 1) % kStages;
        const uint32_t next_parity = ((it + 1) / kStages) & 1;
        if (has_next && named_barrier_and(2 + wg, 128, mbar_test(&ss.full_first[next], next_parity) &&
                                                           mbar_test(&ss.full[next], next_parity))) {
          issue_scores(next, next_parity);  // (its waits pass at once)
          s_issued = true;
        }
        ETAP_MARK(12);
        if constexpr (!kFp8) {
          mbar_wait(&ss.full_first[stage], (it / kStages) & 1);  // V (complete: the owner waited too)
          mbar_wait(&ss.full[stage], (it / kStages) & 1);
        }
        mbar_wait(p_full, it & 1);
        ETAP_MARK(13);
        float alpha[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          alpha[h] = hand_alpha[row_of(h)];
          m_run[h] = hand_m[row_of(h)];
          l_run[h] *= alpha[h];
        }
        rescale(alpha);
        Tensor tOrV = thr_os.partition_fragment_B(vt_half(stage));
        warpgroup_fence_operand(accO);
        warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < size<2>(tOrV); ++k) cute::gemm(mma_os, tOrPs(_, _, k), tOrV(_, _, k), accO);
        warpgroup_commit_batch();
        warpgroup_wait<0>();  // this O (and the next S, if issued before it)
        warpgroup_fence_operand(accO);
        // Released before waiting for the next tile: with two stages, that tile's successor can
        // only start loading once this one is free (waiting first serialises the loads).
        if constexpr (!kFp8) mbar_arrive(&ss.empty[stage]);
        ETAP_MARK(14);
        if (has_next && !s_issued) {  // the next tile's S, completed in the owner step
          issue_scores(next, next_parity);
          s_issued = true;
        }
      }
    }

    // Row sums: the lane quad, then the two warpgroups (each summed the tiles it owned).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l_run[h] += __shfl_xor_sync(0xffffffff, l_run[h], 1);
      l_run[h] += __shfl_xor_sync(0xffffffff, l_run[h], 2);
    }
    if (lane % 4 == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) row_sums(piece_idx & 1, wg)[row_of(h)] = l_run[h];
    }
    named_barrier_sync(kBarConsumers, 256);
    mbar_arrive(&ss.q_empty);  // every WGMMA that read Q has completed
    float inv_l[2], lse2[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float l = row_sums(piece_idx & 1, 0)[row_of(h)] + row_sums(piece_idx & 1, 1)[row_of(h)];
      inv_l[h] = l > 0.f ? (kFp8 ? kv_scale : 1.f) / l : 0.f;
      lse2[h] = l > 0.f ? m_run[h] + log2f(l) : -INFINITY;
    }

    const int d0 = wg * (kDimV / 2) + 2 * (lane % 4);  // dim of value (0, h, 0)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int local = row_of(h);
      const int grow = group * p.rows_per_group + local;
      if (local >= p.rows_per_group || grow >= p.rows || pc.slot == -2) continue;
      const int tok = grow / p.h_q, head = grow % p.h_q;
      if (pc.slot == -1) {
        T* dst = static_cast<T*>(p.out) + pc.batch * p.out_stride[0] + tok * p.out_stride[1] +
                 head * p.out_stride[2] + d0;
#pragma unroll
        for (int j = 0; j < size(accO) / 4; ++j) {
          const int i = 4 * j + 2 * h;
          const T lo = static_cast<T>(accO(i) * inv_l[h]), hi = static_cast<T>(accO(i + 1) * inv_l[h]);
          *reinterpret_cast<uint32_t*>(dst + 8 * j) = uint32_t(lo.raw()) | (uint32_t(hi.raw()) << 16);
        }
        if (wg == 0 && lane % 4 == 0)
          p.lse[pc.batch * p.lse_stride[0] + head * p.lse_stride[1] + tok * p.lse_stride[2]] =
              lse2[h] * 0.6931471805599453f;
      } else {
        const int64_t row = (int64_t(pc.slot) * p.num_groups + group) * kRowsPerCta + local;
        float* dst = p.o_accum + row * kDimV + d0;
#pragma unroll
        for (int j = 0; j < size(accO) / 4; ++j) {
          const int i = 4 * j + 2 * h;
          *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(accO(i) * inv_l[h], accO(i + 1) * inv_l[h]);
        }
        if (wg == 0 && lane % 4 == 0) p.lse_accum[row] = lse2[h];
      }
    }
    ETAP_MARK(10);
    ++piece_idx;
  });
  ETAP_CTA_SPAN_END(tid, wg, it);
  ETAP_TRACE_DUMP(1 + wg);
}

}  // namespace etap::sm90
