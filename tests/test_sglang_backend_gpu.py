"""GPU tests of ``EtapAttnBackend`` inside SGLang 0.5.10.post1 (needs sglang, flashinfer, a Hopper GPU).

The backends get the minimal objects they use (as SGLang's own test_trtllm_mla_backend.py does):
a mock ModelRunner (model_config, req_to_token_pool, a real ``MLATokenToKVPool``, server_args), a
``RadixAttention`` layer with the absorbed-MLA shapes (576 = 512 + 64, v 512) and ``ForwardBatch``
objects. Checked, for page sizes 1, 16 and 64 and a shuffled page allocation:

- decode (eager) and target verify (s_q = draft tokens, causal) against attention computed
  directly over the tokens gathered through ``req_to_token`` (float64), and against SGLang's own
  FlashMLA backend (page size 64, when sgl_kernel's FlashMLA loads) on identical inputs;
- decode through a captured CUDA graph, replayed on new lengths/pages/KV, against eager;
- the split (q_rope/k_rope) and the concatenated (576-wide q) calling conventions agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

sglang = pytest.importorskip("sglang")
pytest.importorskip("flashinfer")

REPO = Path(__file__).resolve().parents[1]

from sglang.srt.layers import dp_attention as _dp_attn  # noqa: E402

_dp_attn.get_attention_tp_size = lambda: 1  # before any backend module binds it (TP = 1 here)

from sglang.srt.configs.model_config import AttentionArch  # noqa: E402
from sglang.srt.layers.radix_attention import RadixAttention  # noqa: E402
from sglang.srt.mem_cache.memory_pool import MLATokenToKVPool  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode  # noqa: E402
from sglang.srt.server_args import (  # noqa: E402
    ServerArgs,
    get_global_server_args,
    set_global_server_args_for_scheduler,
)

try:
    from etap_integration.sglang_etap.backend import EtapAttnBackend
except ImportError:  # run from a checkout without installing the package
    import importlib.util
    import types

    pkg = types.ModuleType("etap_integration")
    pkg.__path__ = [str(REPO / "integration")]
    sys.modules.setdefault("etap_integration", pkg)
    sys.path.insert(0, str(REPO))
    from etap_integration.sglang_etap.backend import EtapAttnBackend

H = 16
NUM_DRAFT = 3
CTX = 1024
MAX_BS = 8
SCALE = 0.1352  # DeepSeek-style (1/sqrt(192) * mscale^2), anything but 576**-0.5


def _default_server_args() -> ServerArgs:
    """ServerArgs with its defaults; __post_init__ (which wants a loadable model config) only
    when it works (the device has no internet to look "dummy" up)."""
    try:
        return ServerArgs(model_path="dummy")
    except Exception:  # noqa: BLE001
        import dataclasses

        args = object.__new__(ServerArgs)
        for f in dataclasses.fields(ServerArgs):
            if f.default is not dataclasses.MISSING:
                setattr(args, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                setattr(args, f.name, f.default_factory())
        args.model_path = "dummy"
        return args


@pytest.fixture(scope="module", autouse=True)
def _server_args():
    args = _default_server_args()
    args.enable_dp_attention = False
    args.speculative_num_draft_tokens = NUM_DRAFT
    set_global_server_args_for_scheduler(args)
    yield


class MockModelRunner:
    def __init__(self, page_size: int, seed: int = 0, kv_dtype: torch.dtype = torch.bfloat16):
        self.device = "cuda"
        self.dtype = torch.bfloat16
        self.kv_cache_dtype = kv_dtype
        self.page_size = page_size
        self.use_mla_backend = True
        self.server_args = get_global_server_args()
        self.model_config = type("ModelConfig", (), {
            "context_len": CTX, "attention_arch": AttentionArch.MLA, "num_attention_heads": H,
            "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 512,
            "scaling": SCALE, "get_num_kv_heads": staticmethod(lambda _: 1),
        })
        pages_per_req = CTX // page_size
        n_pages = MAX_BS * pages_per_req
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n_pages, generator=g).view(MAX_BS, pages_per_req)  # shuffled pages
        offs = torch.arange(page_size)
        req_to_token = (perm[:, :, None] * page_size + offs).reshape(MAX_BS, CTX).to(torch.int32).cuda()
        self.req_to_token_pool = type("TokenPool", (), {"size": MAX_BS, "req_to_token": req_to_token})
        self.token_to_kv_pool = MLATokenToKVPool(
            size=n_pages * page_size, page_size=page_size, dtype=kv_dtype, kv_lora_rank=512,
            qk_rope_head_dim=64, layer_num=1, device="cuda", enable_memory_saver=False,
        )

    def fill_kv(self, seed: int):
        buf = self.token_to_kv_pool.kv_buffer[0]
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(buf.shape, generator=g, device="cuda", dtype=torch.float32)
        if self.kv_cache_dtype == torch.float8_e4m3fn:  # e4m3 values over most of the range, stored as bytes
            buf.copy_((x * 40).clamp(-448, 448).to(torch.float8_e4m3fn).view(buf.dtype))
        else:
            buf.copy_(x.to(buf.dtype))

    def kv_values(self) -> torch.Tensor:
        """The cache as float64 values [slots, 576] (e4m3: before the layer's k_scale)."""
        buf = self.token_to_kv_pool.kv_buffer[0][:, 0]
        if self.kv_cache_dtype == torch.float8_e4m3fn:
            buf = buf.view(torch.float8_e4m3fn)
        return buf.double()


def _layer():
    return RadixAttention(num_heads=H, head_dim=576, scaling=SCALE, num_kv_heads=1, layer_id=0,
                          v_head_dim=512, prefix="attn_mqa")


def _batch(runner, backend, mode, seq_lens, rpi, n_new):
    """seq_lens: tokens already in the cache before this step (decode: including the new token)."""
    bs = len(seq_lens)
    seq = torch.tensor(seq_lens, dtype=torch.int64, device="cuda")
    rpi_t = torch.tensor(rpi, dtype=torch.int64, device="cuda")
    r2t = runner.req_to_token_pool.req_to_token
    if mode == ForwardMode.DECODE:
        loc = r2t[rpi_t, seq - 1]
    else:  # TARGET_VERIFY: draft tokens at positions seq .. seq + n_new - 1
        loc = torch.stack([r2t[rpi_t, seq + t] for t in range(n_new)], dim=1).reshape(-1)
    fb = ForwardBatch(
        batch_size=bs, input_ids=torch.zeros(bs * n_new, dtype=torch.int64, device="cuda"),
        out_cache_loc=loc.to(torch.int64), seq_lens_sum=int(seq.sum()), forward_mode=mode,
        req_pool_indices=rpi_t, seq_lens=seq, seq_lens_cpu=seq.cpu(), attn_backend=backend,
    )
    fb.req_to_token_pool = runner.req_to_token_pool
    fb.token_to_kv_pool = runner.token_to_kv_pool
    fb.positions = torch.zeros(bs * n_new, dtype=torch.int64, device="cuda")
    return fb


def _inputs(n_tokens, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda", dtype=torch.float32).to(torch.bfloat16)  # noqa: E731
    return r(n_tokens, H, 512), r(n_tokens, H, 64), r(n_tokens, 1, 512), r(n_tokens, 1, 64)


def _reference(runner, seq_lens, rpi, q_nope, q_rope, s_q, kv_scale=1.0):
    """float64 attention over tokens gathered via req_to_token (after the new KV was written)."""
    buf = runner.kv_values() * kv_scale
    r2t = runner.req_to_token_pool.req_to_token
    q = torch.cat([q_nope, q_rope], -1).double().view(len(seq_lens), s_q, H, 576)
    out = torch.zeros(len(seq_lens), s_q, H, 512, dtype=torch.float64, device="cuda")
    for i, (n0, r) in enumerate(zip(seq_lens, rpi)):
        n = n0 if s_q == 1 else n0 + s_q
        keys = buf[r2t[r, :n].long()]
        for t in range(s_q):
            vis = n - (s_q - 1 - t)
            p = torch.softmax(q[i, t] @ keys[:vis].T * SCALE, -1)
            out[i, t] = p @ keys[:vis, :512]
    return out.view(-1, H * 512)


def _close(a, b, what):
    err = (a.double() - b.double()).abs().max().item()
    ref = b.double().abs().max().item()
    assert err <= 2e-2 * max(ref, 1.0), f"{what}: max err {err:.3e} (max |ref| {ref:.3e})"


SEQ = [1, 37, 64, 65, 300, 1000]
RPI = [5, 0, 3, 7, 1, 2]


@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_decode_matches_reference(page_size):
    runner = MockModelRunner(page_size)
    runner.fill_kv(1)
    backend = EtapAttnBackend(runner)
    fb = _batch(runner, backend, ForwardMode.DECODE, SEQ, RPI, 1)
    backend.init_forward_metadata(fb)
    qn, qr, kn, kr = _inputs(len(SEQ), 2)
    out = backend.forward_decode(qn, kn, None, _layer(), fb, q_rope=qr, k_rope=kr)
    assert out.shape == (len(SEQ), H * 512) and out.dtype == torch.bfloat16
    _close(out, _reference(runner, SEQ, RPI, qn, qr, 1), f"decode page {page_size}")
    # concatenated 576-wide q (FlashMLA's calling convention), KV already written
    q_cat = torch.cat([qn, qr], -1)
    out2 = backend.forward_decode(q_cat, None, None, _layer(), fb)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)


@pytest.mark.parametrize("page_size", [1, 64])
def test_target_verify_matches_reference(page_size):
    runner = MockModelRunner(page_size)
    runner.fill_kv(3)
    backend = EtapAttnBackend(runner)
    seq = [5, 64, 130, 500]
    rpi = [2, 6, 0, 4]
    fb = _batch(runner, backend, ForwardMode.TARGET_VERIFY, seq, rpi, NUM_DRAFT)
    backend.init_forward_metadata(fb)
    qn, qr, kn, kr = _inputs(len(seq) * NUM_DRAFT, 4)
    out = backend.forward_extend(qn, kn, None, _layer(), fb, q_rope=qr, k_rope=kr)
    _close(out, _reference(runner, seq, rpi, qn, qr, NUM_DRAFT), f"verify page {page_size}")


def _flashmla_backend(runner):
    try:
        from sglang.srt.layers.attention.flashmla_backend import FlashMLABackend

        return FlashMLABackend(runner)
    except Exception as exc:  # sgl_kernel without FlashMLA, etc.
        pytest.skip(f"SGLang's FlashMLA backend unavailable: {exc}")


@pytest.mark.parametrize("mode", ["decode", "verify"])
def test_matches_sglang_flashmla(mode):
    runner_e, runner_f = MockModelRunner(64), MockModelRunner(64)
    runner_e.fill_kv(5)
    runner_f.fill_kv(5)
    etap, fmla = EtapAttnBackend(runner_e), _flashmla_backend(runner_f)
    fmode = ForwardMode.DECODE if mode == "decode" else ForwardMode.TARGET_VERIFY
    n_new = 1 if mode == "decode" else NUM_DRAFT
    seq = SEQ if mode == "decode" else [5, 64, 130, 500]
    rpi = RPI[: len(seq)]
    fb_e = _batch(runner_e, etap, fmode, seq, rpi, n_new)
    fb_f = _batch(runner_f, fmla, fmode, seq, rpi, n_new)
    etap.init_forward_metadata(fb_e)
    fmla.init_forward_metadata(fb_f)
    qn, qr, kn, kr = _inputs(len(seq) * n_new, 6)
    layer = _layer()
    q_cat, k_cat = torch.cat([qn, qr], -1), torch.cat([kn, kr], -1)
    if mode == "decode":
        out_e = etap.forward_decode(qn, kn, None, layer, fb_e, q_rope=qr, k_rope=kr)
        out_f = fmla.forward_decode(q_cat, k_cat, kn, layer, fb_f)
    else:
        out_e = etap.forward_extend(qn, kn, None, layer, fb_e, q_rope=qr, k_rope=kr)
        out_f = fmla.forward_extend(q_cat, k_cat, kn, layer, fb_f)
    _close(out_e, out_f, f"etap vs flashmla ({mode})")


@pytest.mark.parametrize("page_size", [1, 64])
def test_cuda_graph_replay(page_size):
    runner = MockModelRunner(page_size)
    runner.fill_kv(7)
    backend = EtapAttnBackend(runner)
    backend.init_cuda_graph_state(MAX_BS, MAX_BS)
    layer = _layer()
    bs = 4
    # static input buffers, as SGLang's CudaGraphRunner keeps them (seq_lens filled with 1)
    seq_buf = torch.ones(MAX_BS, dtype=torch.int32, device="cuda")
    rpi_buf = torch.zeros(MAX_BS, dtype=torch.int64, device="cuda")
    loc_buf = torch.zeros(MAX_BS, dtype=torch.int64, device="cuda")
    qn_buf, qr_buf, kn_buf, kr_buf = _inputs(MAX_BS, 8)
    backend.init_forward_metadata_capture_cuda_graph(
        bs, bs, rpi_buf[:bs], seq_buf[:bs], None, ForwardMode.DECODE, None)
    fb = _batch(runner, backend, ForwardMode.DECODE, [1] * bs, [0] * bs, 1)
    fb.out_cache_loc = loc_buf[:bs]
    fb.seq_lens, fb.req_pool_indices = seq_buf[:bs], rpi_buf[:bs]

    def step():
        return backend.forward_decode(qn_buf[:bs], kn_buf[:bs], None, layer, fb,
                                      q_rope=qr_buf[:bs], k_rope=kr_buf[:bs])

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()

    for trial, (seq, rpi) in enumerate([([3, 700, 64, 129], [4, 1, 6, 0]), ([1000, 2, 513, 40], [0, 7, 3, 5])]):
        runner.fill_kv(100 + trial)
        seq_t = torch.tensor(seq, device="cuda")
        rpi_t = torch.tensor(rpi, device="cuda")
        seq_buf[:bs].copy_(seq_t)
        rpi_buf[:bs].copy_(rpi_t)
        loc_buf[:bs].copy_(runner.req_to_token_pool.req_to_token[rpi_t, seq_t - 1])
        qn, qr, kn, kr = _inputs(bs, 200 + trial)
        qn_buf[:bs].copy_(qn); qr_buf[:bs].copy_(qr); kn_buf[:bs].copy_(kn); kr_buf[:bs].copy_(kr)
        backend.init_forward_metadata_replay_cuda_graph(
            bs, rpi_buf[:bs], seq_buf[:bs], int(sum(seq)), None, ForwardMode.DECODE, None,
            seq_lens_cpu=torch.tensor(seq, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        _close(static_out, _reference(runner, seq, rpi, qn, qr, 1), f"graph replay {trial} page {page_size}")


@pytest.mark.parametrize("page_size", [1, 64])
def test_fp8_e4m3_kv_decode(page_size):
    """--kv-cache-dtype fp8_e4m3: the uint8 pool decoded as e4m3 with the layer's k_scale, bf16 q;
    against the float64 reference over the dequantised cache, and SGLang's FlashMLA FP8 path."""
    runner = MockModelRunner(page_size, kv_dtype=torch.float8_e4m3fn)
    runner.fill_kv(11)
    backend = EtapAttnBackend(runner)
    layer = _layer()
    layer.k_scale = torch.tensor(0.03, device="cuda")
    layer.k_scale_float = 0.03
    fb = _batch(runner, backend, ForwardMode.DECODE, SEQ, RPI, 1)
    backend.init_forward_metadata(fb)
    qn, qr, _, _ = _inputs(len(SEQ), 12)
    out = backend.forward_decode(qn, None, None, layer, fb, q_rope=qr, save_kv_cache=False)
    assert out.dtype == torch.bfloat16 and not torch.isnan(out).any()
    _close(out, _reference(runner, SEQ, RPI, qn, qr, 1, kv_scale=0.03), f"e4m3 decode page {page_size}")
    if page_size != 64:
        return
    fmla_runner = MockModelRunner(64, kv_dtype=torch.float8_e4m3fn)
    fmla_runner.token_to_kv_pool.kv_buffer[0].copy_(runner.token_to_kv_pool.kv_buffer[0])
    try:  # SGLang's own FP8 path (quantises q with k_scale); its failures are not ours
        from sglang.srt.layers.attention.flashmla_backend import FlashMLABackend

        fmla = FlashMLABackend(fmla_runner)
        fb_f = _batch(fmla_runner, fmla, ForwardMode.DECODE, SEQ, RPI, 1)
        fmla.init_forward_metadata(fb_f)
        out_f = fmla.forward_decode(torch.cat([qn, qr], -1), None, None, layer, fb_f, save_kv_cache=False)
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001
        print(f"SGLang's FlashMLA FP8 path not compared: {type(exc).__name__}: {exc}")
        return
    # FlashMLA's FP8 path also rounds q to e4m3: compare at its (looser) precision
    err = (out.double() - out_f.double()).abs().max().item()
    assert err <= 0.1 * max(out_f.double().abs().max().item(), 1.0), f"etap vs flashmla, e4m3 cache: {err:.3e}"


def test_fp8_e5m2_kv_refused():
    runner = MockModelRunner(64)
    runner.kv_cache_dtype = torch.float8_e5m2
    with pytest.raises(NotImplementedError, match="e4m3 only"):
        EtapAttnBackend(runner)
