"""The float64 reference (etap_kernels/reference.py) against a naive dense softmax attention.

The naive version builds each sequence's dense K and V position by position through the page
table and does the softmax of every (token, head) row by hand; the reference gathers whole pages
and vectorises. Both read the same (rounded) inputs, so they agree to float64 round-off.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from etap_kernels.reference import flash_mla_reference, mla_decode_reference

D_QK, D_V, D_R = 576, 512, 64
SCALE = D_QK ** -0.5
INVALID_PAGE = 10**6  # padding in block tables: reading it would raise


def cdiv(a, b):
    return -(-a // b)


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """The naive loops issue many tiny ops: intra-op threads only add overhead, and on a busy
    2-core machine their spin-waiting slowed this module down tenfold."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# ----------------------------------------------------------------------------- inputs

def make_inputs(lens, page_size, h_q, s_q, *, addressing="block_table", fused=True,
                dtype=torch.bfloat16, extra_pages=3, rng=None):
    """Random paged inputs. ``fused``: q and the cache are views of one 576-wide buffer;
    otherwise separate tensors, q_nope a transposed (non-contiguous) view."""
    rng = rng or random.Random(0)
    b = len(lens)
    need = [cdiv(n, page_size) for n in lens]
    num_pages = sum(need) + extra_pages
    if fused:
        cache = torch.randn(num_pages, page_size, D_QK).to(dtype)
        ckv, kpe = cache[..., :D_V], cache[..., D_V:]
        q = torch.randn(b, s_q, h_q, D_QK).to(dtype)
        q_nope, q_rope = q[..., :D_V], q[..., D_V:]
    else:
        ckv = torch.randn(num_pages, page_size, D_V).to(dtype)
        kpe = torch.randn(num_pages, page_size, D_R).to(dtype)
        q_nope = torch.randn(b, h_q, s_q, D_V).to(dtype).transpose(1, 2)
        q_rope = torch.randn(b, s_q, h_q, D_R).to(dtype)
    perm = list(range(num_pages))
    rng.shuffle(perm)
    pages, k = [], 0
    for m in need:
        pages.append(perm[k:k + m])
        k += m
    seqlens = torch.tensor(lens, dtype=torch.int32)
    kw = {}
    if addressing == "block_table":
        width = max(need) + 2
        table = torch.full((b, width), INVALID_PAGE, dtype=torch.int32)
        for i, pg in enumerate(pages):
            table[i, :len(pg)] = torch.tensor(pg, dtype=torch.int32)
        kw["block_table"] = table
    else:
        # Each sequence may own more pages than it needs (trailing entries are valid but unused).
        indices, indptr = [], [0]
        for pg in pages:
            indices += pg + [rng.randrange(num_pages) for _ in range(rng.randint(0, 2))]
            indptr.append(len(indices))
        kw["kv_indptr"] = torch.tensor(indptr, dtype=torch.int32)
        kw["kv_indices"] = torch.tensor(indices, dtype=torch.int32)
    return q_nope, q_rope, ckv, kpe, seqlens, kw


def page_list(i, kw):
    if "block_table" in kw:
        return kw["block_table"][i].tolist()
    ptr = kw["kv_indptr"].tolist()
    return kw["kv_indices"][ptr[i]:ptr[i + 1]].tolist()


# ----------------------------------------------------------------------------- naive

def naive_attention(q_nope, q_rope, ckv, kpe, seqlens, kw, scale=SCALE, causal=False):
    b, s_q, h_q, _ = q_nope.shape
    page_size = ckv.shape[1]
    out = torch.zeros(b, s_q, h_q, D_V, dtype=torch.float64)
    lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        n = int(seqlens[i])
        table = page_list(i, kw)
        K = torch.zeros(n, D_QK, dtype=torch.float64)
        V = torch.zeros(n, D_V, dtype=torch.float64)
        for j in range(n):
            page, row = table[j // page_size], j % page_size
            K[j, :D_V] = ckv[page, row].double()
            K[j, D_V:] = kpe[page, row].double()
            V[j] = ckv[page, row].double()
        for t in range(s_q):
            visible = n - (s_q - 1 - t) if causal else n
            visible = max(0, visible)
            for h in range(h_q):
                if visible == 0:
                    lse[i, h, t] = -math.inf
                    continue  # out stays 0
                qv = torch.cat([q_nope[i, t, h].double(), q_rope[i, t, h].double()])
                s = (K[:visible] @ qv) * scale
                m = s.max()
                e = torch.exp(s - m)
                denom = e.sum()
                out[i, t, h] = (e @ V[:visible]) / denom
                lse[i, h, t] = m + torch.log(denom)
    return out, lse


def assert_close(actual, expected, rtol=1e-10, atol=1e-10):
    assert actual.dtype == torch.float64
    assert actual.shape == expected.shape
    assert not torch.isnan(actual).any()
    # -inf must match exactly (empty rows); everything else numerically.
    inf_a, inf_e = torch.isinf(actual), torch.isinf(expected)
    assert torch.equal(inf_a, inf_e)
    assert torch.equal(actual[inf_a], expected[inf_e])
    torch.testing.assert_close(actual[~inf_a], expected[~inf_e], rtol=rtol, atol=atol)


LENS = [0, 1, 63, 64, 65]


# ----------------------------------------------------------------------------- grid

@pytest.mark.parametrize("addressing", ["block_table", "indptr"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("h_q", [1, 16, 128])
@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_matches_naive(page_size, h_q, s_q, causal, addressing, seed):
    rng = random.Random(seed)
    lens = LENS + [rng.randint(1, 200)]
    rng.shuffle(lens)
    fused = (page_size + h_q + s_q) % 2 == 0  # both layouts appear across the grid
    inputs = make_inputs(lens, page_size, h_q, s_q, addressing=addressing, fused=fused, rng=rng)
    q_nope, q_rope, ckv, kpe, seqlens, kw = inputs
    out, lse = mla_decode_reference(*inputs[:5], **kw, causal=causal)
    ref_out, ref_lse = naive_attention(*inputs, causal=causal)
    assert out.shape == (len(lens), s_q, h_q, D_V) and lse.shape == (len(lens), h_q, s_q)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)
    for i, n in enumerate(lens):  # rows that see nothing: out 0, lse -inf
        if n == 0:
            assert torch.all(out[i] == 0) and torch.all(lse[i] == -math.inf)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("addressing", ["block_table", "indptr"])
def test_layouts_and_addressing_agree(fused, addressing):
    """Same data through both layouts and both addressings gives identical results."""
    lens = [65, 0, 130, 7]
    base = make_inputs(lens, 16, 16, 2, addressing="block_table", fused=True, rng=random.Random(3))
    q_nope, q_rope, ckv, kpe, seqlens, kw = base
    expected = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw, causal=True)
    if not fused:
        q_nope, q_rope = q_nope.contiguous(), q_rope.contiguous()
        ckv, kpe = ckv.contiguous(), kpe.contiguous()
    if addressing == "indptr":
        pages = [kw["block_table"][i, :cdiv(n, 16)].tolist() for i, n in enumerate(lens)]
        indptr = [0]
        for pg in pages:
            indptr.append(indptr[-1] + len(pg))
        kw = {"kv_indptr": torch.tensor(indptr, dtype=torch.int32),
              "kv_indices": torch.tensor(sum(pages, []), dtype=torch.int32)}
    out, lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw, causal=True)
    assert torch.equal(out, expected[0]) and torch.equal(lse, expected[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_other_dtypes(dtype):
    inputs = make_inputs([3, 70], 16, 4, 2, dtype=dtype, rng=random.Random(5))
    out, lse = mla_decode_reference(*inputs[:5], **inputs[5], causal=True)
    ref_out, ref_lse = naive_attention(*inputs, causal=True)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)


def test_long_sequence():
    inputs = make_inputs([3000, 1], 64, 8, 1, rng=random.Random(7))
    out, lse = mla_decode_reference(*inputs[:5], **inputs[5])
    ref_out, ref_lse = naive_attention(*inputs)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)


# ----------------------------------------------------------------------------- properties

def test_default_scale_is_576_rsqrt():
    inputs = make_inputs([40, 9], 16, 2, 1, rng=random.Random(1))
    a = mla_decode_reference(*inputs[:5], **inputs[5])
    b = mla_decode_reference(*inputs[:5], **inputs[5], softmax_scale=576 ** -0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = mla_decode_reference(*inputs[:5], **inputs[5], softmax_scale=0.3)
    ref = naive_attention(*inputs, scale=0.3)
    assert_close(c[0], ref[0])
    assert_close(c[1], ref[1])


def test_single_key_is_exact():
    """One visible key: out = that V row exactly, lse = scale * q . k (natural log)."""
    q_nope, q_rope, ckv, kpe, seqlens, kw = make_inputs([1], 4, 3, 1, rng=random.Random(2))
    out, lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw)
    page = int(kw["block_table"][0, 0])
    k = torch.cat([ckv[page, 0], kpe[page, 0]]).double()
    for h in range(3):
        q = torch.cat([q_nope[0, 0, h], q_rope[0, 0, h]]).double()
        assert torch.equal(out[0, 0, h], ckv[page, 0].double())
        torch.testing.assert_close(lse[0, h, 0], (q @ k) * SCALE, rtol=1e-13, atol=1e-13)


def test_lse_is_natural_log_of_softmax_denominator():
    q_nope, q_rope, ckv, kpe, seqlens, kw = make_inputs([50], 64, 2, 1, rng=random.Random(4))
    _, lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw)
    page = int(kw["block_table"][0, 0])
    K = torch.cat([ckv[page, :50], kpe[page, :50]], dim=-1).double()
    for h in range(2):
        q = torch.cat([q_nope[0, 0, h], q_rope[0, 0, h]]).double()
        expected = math.log(sum(math.exp(float(x)) for x in (K @ q) * SCALE))
        assert abs(float(lse[0, h, 0]) - expected) < 1e-10


def test_empty_sequences_have_no_nan():
    inputs = make_inputs([0, 0, 0], 16, 16, 4, rng=random.Random(6))
    for causal in (False, True):
        out, lse = mla_decode_reference(*inputs[:5], **inputs[5], causal=causal)
        assert not torch.isnan(out).any() and not torch.isnan(lse).any()
        assert torch.all(out == 0) and torch.all(lse == -math.inf)


def test_causal_rows_that_see_nothing():
    # s_q=4, len=2: token t sees positions < 2 - (3 - t): t=0 -> -1, t=1 -> 0, t=2 -> 1, t=3 -> 2.
    inputs = make_inputs([2], 1, 5, 4, rng=random.Random(8))
    out, lse = mla_decode_reference(*inputs[:5], **inputs[5], causal=True)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.all(out[0, :2] == 0) and torch.all(lse[0, :, :2] == -math.inf)
    assert torch.isfinite(lse[0, :, 2:]).all()
    ckv, table = inputs[2], inputs[5]["block_table"]
    torch.testing.assert_close(out[0, 2], ckv[int(table[0, 0]), 0].double().expand(5, -1), rtol=0, atol=0)


def test_causal_token_equals_truncated_sequence():
    """Causal token t == a single-token query over the first len - (s_q - 1 - t) positions."""
    s_q = 4
    q_nope, q_rope, ckv, kpe, seqlens, kw = make_inputs([70, 64, 3], 16, 8, s_q, rng=random.Random(9))
    out, lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw, causal=True)
    full_out, full_lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw, causal=False)
    # The last token sees everything.
    torch.testing.assert_close(out[:, -1], full_out[:, -1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse[..., -1], full_lse[..., -1], rtol=1e-12, atol=1e-12)
    for t in range(s_q):
        short = (seqlens - (s_q - 1 - t)).clamp(min=0).to(torch.int32)
        o1, l1 = mla_decode_reference(q_nope[:, t:t + 1], q_rope[:, t:t + 1], ckv, kpe, short, **kw)
        assert_close(out[:, t:t + 1], o1, rtol=1e-12, atol=1e-12)
        assert_close(lse[..., t:t + 1], l1, rtol=1e-12, atol=1e-12)


def test_causal_with_one_token_is_noncausal():
    inputs = make_inputs([33, 65], 16, 4, 1, rng=random.Random(10))
    a = mla_decode_reference(*inputs[:5], **inputs[5], causal=True)
    b = mla_decode_reference(*inputs[:5], **inputs[5], causal=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- FlashMLA layout

@pytest.mark.parametrize("causal", [False, True])
def test_flash_mla_reference(causal):
    lens, ps, h_q, s_q = [0, 65, 130, 1], 64, 16, 2
    q_nope, q_rope, ckv, kpe, seqlens, kw = make_inputs(lens, ps, h_q, s_q, fused=True, rng=random.Random(11))
    q = torch.cat([q_nope, q_rope], dim=-1)
    k_cache = torch.cat([ckv, kpe], dim=-1).unsqueeze(2)  # [num_pages, page_size, 1, 576]
    out, lse = flash_mla_reference(q, k_cache, kw["block_table"], seqlens, 512, causal=causal)
    exp_out, exp_lse = mla_decode_reference(q_nope, q_rope, ckv, kpe, seqlens, **kw, causal=causal)
    assert torch.equal(out, exp_out) and torch.equal(lse, exp_lse)
    ref_out, ref_lse = naive_attention(q_nope, q_rope, ckv, kpe, seqlens, kw, causal=causal)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)
    with pytest.raises(ValueError):
        flash_mla_reference(q, k_cache, kw["block_table"], seqlens, 256)


# ----------------------------------------------------------------------------- bad inputs

def test_rejects_bad_addressing_and_lengths():
    q_nope, q_rope, ckv, kpe, seqlens, kw = make_inputs([5, 20], 16, 2, 1, rng=random.Random(12))
    args = (q_nope, q_rope, ckv, kpe, seqlens)
    with pytest.raises(ValueError):
        mla_decode_reference(*args)  # neither addressing
    indptr = torch.tensor([0, 1, 3], dtype=torch.int32)
    with pytest.raises(ValueError):
        mla_decode_reference(*args, block_table=kw["block_table"], kv_indptr=indptr, kv_indices=indptr)
    with pytest.raises(ValueError):
        mla_decode_reference(*args, kv_indptr=indptr)  # kv_indices missing
    too_long = torch.tensor([5, 16 * 4], dtype=torch.int32)  # table holds 2 + 2 padding columns
    with pytest.raises(ValueError):
        mla_decode_reference(q_nope, q_rope, ckv, kpe, too_long, **kw)  # would read a padding id
    with pytest.raises(ValueError):
        mla_decode_reference(q_nope, q_rope, ckv, kpe, torch.tensor([-1, 3], dtype=torch.int32), **kw)
    with pytest.raises(ValueError):
        mla_decode_reference(*args, kv_indptr=torch.tensor([0, 1, 1], dtype=torch.int32),
                             kv_indices=torch.tensor([0], dtype=torch.int32))  # seq 1 needs 2 pages


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
def test_reference_on_gpu_long_sequence():
    """The reference runs on the inputs' device; 65536 tokens on a GPU match the CPU result."""
    inputs = make_inputs([65536, 100], 64, 16, 2, rng=random.Random(13))
    cpu = mla_decode_reference(*inputs[:5], **inputs[5], causal=True)
    cuda = [x.cuda() for x in inputs[:5]]
    kw = {k: v.cuda() for k, v in inputs[5].items()}
    gpu = mla_decode_reference(*cuda, **kw, causal=True)
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-10, atol=1e-10)


def test_fp8_cache_is_dequantised_with_its_scales():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 1, 4, 576, generator=gen, dtype=torch.float64)
    cache = (torch.randn(6, 16, 1, 576, generator=gen) * 40).to(torch.float8_e4m3fn)
    bt = torch.tensor([[0, 1], [3, 2]], dtype=torch.int32)
    lens = torch.tensor([20, 17], dtype=torch.int32)
    out, lse = flash_mla_reference(q, cache, bt, lens, kv_scale=0.02, q_scale=0.5)
    want, want_lse = flash_mla_reference(q * 0.5, cache.to(torch.float64) * 0.02, bt, lens)
    assert_close(out, want)
    assert_close(lse, want_lse)
