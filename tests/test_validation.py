"""Input validation of the public entries (CPU: every structural check runs before the device
check, so wrong inputs are reported by name without a GPU)."""

from __future__ import annotations

import pytest
import torch

import etap_kernels
from etap_kernels.interface import row_grouping

BF16 = torch.bfloat16


def _inputs(b=2, s_q=1, h_q=16, num_pages=8, page_size=16, dtype=BF16):
    buf = torch.randn(num_pages, page_size, 576, dtype=dtype)
    return dict(
        q_nope=torch.randn(b, s_q, h_q, 512, dtype=dtype),
        q_rope=torch.randn(b, s_q, h_q, 64, dtype=dtype),
        ckv_cache=buf[..., :512],
        kpe_cache=buf[..., 512:],
        cache_seqlens=torch.tensor([5] * b, dtype=torch.int32),
        tile_scheduler_metadata=torch.zeros(4, 8, dtype=torch.int32),
        num_splits=torch.zeros(b + 1, dtype=torch.int32),
        block_table=torch.zeros(b, 4, dtype=torch.int32),
    )


def _call(**over):
    args = _inputs()
    args.update(over)
    kw = {k: args.pop(k) for k in list(args) if k not in (
        "q_nope", "q_rope", "ckv_cache", "kpe_cache", "cache_seqlens", "tile_scheduler_metadata", "num_splits")}
    return etap_kernels.mla_decode(
        args["q_nope"], args["q_rope"], args["ckv_cache"], args["kpe_cache"], args["cache_seqlens"],
        args["tile_scheduler_metadata"], args["num_splits"], **kw)


@pytest.mark.parametrize(
    "override,exc,name",
    [
        (dict(q_nope=torch.randn(2, 1, 16, 512)), TypeError, "q_nope"),
        (dict(q_nope="not a tensor"), TypeError, "q_nope"),
        (dict(q_nope=torch.randn(2, 16, 512, dtype=BF16)), ValueError, "q_nope"),
        (dict(q_nope=torch.randn(2, 1, 16, 256, dtype=BF16)), ValueError, "q_nope"),
        (dict(q_rope=torch.randn(2, 1, 16, 64, dtype=torch.float16)), TypeError, "q_rope"),
        (dict(q_rope=torch.randn(2, 1, 8, 64, dtype=BF16)), ValueError, "q_rope"),
        (dict(ckv_cache=torch.randn(8, 16, 576, dtype=BF16)), ValueError, "ckv_cache"),
        (dict(kpe_cache=torch.randn(8, 32, 64, dtype=BF16)), ValueError, "kpe_cache"),
        (dict(ckv_cache=torch.randn(8, 16, 1024, dtype=BF16)[..., ::2]), ValueError, "ckv_cache"),
        (dict(ckv_cache=torch.randn(8, 16, 516, dtype=BF16)[..., 4:]), ValueError, "ckv_cache"),
        (dict(cache_seqlens=torch.tensor([5, 5], dtype=torch.int64)), TypeError, "cache_seqlens"),
        (dict(cache_seqlens=torch.tensor([5, 5, 5], dtype=torch.int32)), ValueError, "cache_seqlens"),
        (dict(block_table=torch.zeros(2, 4, dtype=torch.int64)), TypeError, "block_table"),
        (dict(block_table=torch.zeros(3, 4, dtype=torch.int32)), ValueError, "block_table"),
        (dict(block_table=torch.zeros(4, 2, dtype=torch.int32).t()), ValueError, "block_table"),
        (dict(block_table=None), ValueError, "block_table"),
        (dict(kv_indptr=torch.zeros(3, dtype=torch.int32)), ValueError, "block_table"),
        (dict(block_table=None, kv_indptr=torch.zeros(3, dtype=torch.int32)), ValueError, "kv_indices"),
        (dict(block_table=None, kv_indptr=torch.zeros(2, dtype=torch.int32),
              kv_indices=torch.zeros(4, dtype=torch.int32)), ValueError, "kv_indptr"),
        (dict(tile_scheduler_metadata=torch.zeros(4, 7, dtype=torch.int32)), ValueError, "tile_scheduler_metadata"),
        (dict(num_splits=torch.zeros(2, dtype=torch.int32)), ValueError, "num_splits"),
        (dict(softmax_scale=float("nan")), ValueError, "softmax_scale"),
        (dict(softmax_scale="0.1"), TypeError, "softmax_scale"),
        (dict(causal=1), TypeError, "causal"),
        (dict(out=torch.empty(2, 1, 16, 512, dtype=torch.float16)), TypeError, "out"),
        (dict(out=torch.empty(2, 1, 16, 256, dtype=BF16)), ValueError, "out"),
        (dict(lse=torch.empty(2, 1, 16)), ValueError, "lse"),
        (dict(lse=torch.empty(2, 16, 1, dtype=torch.float64)), TypeError, "lse"),
    ],
)
def test_mla_decode_rejects_bad_argument(override, exc, name):
    with pytest.raises(exc, match=name):
        _call(**override)


def test_mla_decode_needs_cuda_tensors():
    with pytest.raises(ValueError, match="CUDA"):
        _call()


def test_flash_mla_with_kvcache_rejects_bad_shapes():
    q = torch.randn(2, 1, 16, 576, dtype=BF16)
    k = torch.randn(8, 16, 1, 576, dtype=BF16)
    bt = torch.zeros(2, 4, dtype=torch.int32)
    lens = torch.zeros(2, dtype=torch.int32)
    meta, splits = torch.zeros(4, 8, dtype=torch.int32), torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ValueError, match="head_dim_v"):
        etap_kernels.flash_mla_with_kvcache(q, k, bt, lens, 128, meta, splits)
    with pytest.raises(ValueError, match="k_cache"):
        etap_kernels.flash_mla_with_kvcache(q, torch.randn(8, 16, 2, 576, dtype=BF16), bt, lens, 512, meta, splits)
    with pytest.raises(ValueError, match="q head dim"):
        etap_kernels.flash_mla_with_kvcache(q[..., :512], k, bt, lens, 512, meta, splits)
    with pytest.raises(TypeError, match="k_cache"):
        etap_kernels.flash_mla_with_kvcache(q, k.half(), bt, lens, 512, meta, splits)


def test_get_mla_metadata_rejects_bad_arguments():
    lens = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(ValueError, match="num_heads_k"):
        etap_kernels.get_mla_metadata(lens, 16, 2)
    with pytest.raises(TypeError, match="cache_seqlens"):
        etap_kernels.get_mla_metadata(lens.long(), 16, 1)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k"):
        etap_kernels.get_mla_metadata(lens, 0, 1)
    with pytest.raises(ValueError, match="CUDA"):
        etap_kernels.get_mla_metadata(lens, 16, 1)


@pytest.mark.parametrize("rows", list(range(1, 1025)))
def test_row_grouping_covers_rows_with_padding_below_8(rows):
    groups, per_group, per_wg = row_grouping(rows)
    assert groups * per_group >= rows > (groups - 1) * per_group
    assert per_group <= 64 and per_wg in (8, 16, 24, 32)
    assert 2 * per_wg >= per_group
    # two warpgroups of N = per_wg columns: fewer than 16 padded columns per CTA
    assert 2 * per_wg - per_group < 16


@pytest.mark.parametrize("page_size", [1, 2, 4, 24, 100])
def test_row_grouping_kv_split_up_to_16_rows_on_cp_async_pages(page_size, monkeypatch):
    monkeypatch.delenv("ETAP_KV_SPLIT_MAX_ROWS", raising=False)
    for rows in range(1, 17):
        groups, per_group, per_wg = row_grouping(rows, page_size=page_size)
        assert (groups, per_group, per_wg) == (1, rows, 8 * -(-rows // 8))
    assert row_grouping(17, page_size=page_size) == (1, 17, 16)  # 9 + 8 rows: row split
    for bulk in (8, 16, 64, 128):
        assert row_grouping(16, page_size=bulk) == (1, 16, 8)
    monkeypatch.setenv("ETAP_KV_SPLIT_MAX_ROWS", "8")
    assert row_grouping(16, page_size=page_size) == (1, 16, 8)
    monkeypatch.setenv("ETAP_KV_SPLIT_MAX_ROWS", "sixteen")
    with pytest.raises(ValueError, match="ETAP_KV_SPLIT_MAX_ROWS"):
        row_grouping(16, page_size=page_size)


@pytest.mark.parametrize("rows", list(range(1, 257)))
def test_row_grouping_fp8_kv_split_keeps_n_at_most_16(rows, monkeypatch):
    monkeypatch.setenv("ETAP_KV_SPLIT_MAX_ROWS_FP8", "64")  # clamped: KV split needs N <= 16
    groups, per_group, per_wg = row_grouping(rows, fp8=True)
    assert groups * per_group >= rows > (groups - 1) * per_group
    assert per_group <= 64 and per_wg in (8, 16, 24, 32)
    assert 2 * per_wg >= per_group
    if per_wg >= per_group:  # KV split
        assert per_wg <= 16
    assert groups == -(-rows // 64)


FP8 = torch.float8_e4m3fn


def _fp8_cache(num_pages=8, page_size=16):
    buf = torch.randn(num_pages, page_size, 576).to(FP8)
    return dict(ckv_cache=buf[..., :512], kpe_cache=buf[..., 512:])


@pytest.mark.parametrize(
    "override,exc,name",
    [
        (dict(ckv_cache=torch.zeros(8, 16, 512, dtype=torch.uint8), kpe_cache=torch.zeros(8, 16, 64, dtype=torch.uint8)),
         TypeError, "float8_e4m3fn"),
        (dict(_fp8_cache(), q_nope=torch.randn(2, 1, 16, 512, dtype=torch.float16),
              q_rope=torch.randn(2, 1, 16, 64, dtype=torch.float16)), TypeError, "bf16 queries"),
        (dict(_fp8_cache(), kpe_cache=torch.randn(8, 16, 64, dtype=BF16)), TypeError, "kpe_cache"),
        (dict(_fp8_cache(), kv_scale="2"), TypeError, "kv_scale"),
        (dict(_fp8_cache(), kv_scale=float("nan")), ValueError, "kv_scale"),
        (dict(_fp8_cache(), kv_scale=-1.0), ValueError, "kv_scale"),
        (dict(_fp8_cache(), kv_scale=torch.ones(2)), TypeError, "kv_scale"),
        (dict(_fp8_cache(), q_scale=torch.ones(1, dtype=torch.float64)), TypeError, "q_scale"),
        (dict(kv_scale=1.0), ValueError, "e4m3"),
    ],
)
def test_fp8_cache_rejects_bad_argument(override, exc, name):
    with pytest.raises(exc, match=name):
        _call(**override)


def test_fp8_cache_passes_structural_checks_on_cpu():
    # Everything but the device is valid: the error names the device.
    with pytest.raises(ValueError, match="CUDA"):
        _call(**_fp8_cache(), kv_scale=0.5)


def test_flash_mla_fp8_entry_checks_descales():
    q8 = torch.randn(2, 1, 16, 576).to(FP8)
    cache = torch.randn(8, 16, 1, 576).to(FP8)
    common = (torch.zeros(2, 4, dtype=torch.int32), torch.tensor([5, 5], dtype=torch.int32), 512,
              torch.zeros(4, 8, dtype=torch.int32), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="e4m3 k_cache"):
        etap_kernels.flash_mla_with_kvcache(q8, cache.to(BF16), *common)
    with pytest.raises(ValueError, match="descale_q"):
        etap_kernels.flash_mla_with_kvcache(q8.to(BF16), cache, *common, descale_q=1.0)
    with pytest.raises(ValueError, match="CUDA"):
        etap_kernels.flash_mla_with_kvcache(q8, cache, *common, descale_q=0.5, descale_k=0.25)
