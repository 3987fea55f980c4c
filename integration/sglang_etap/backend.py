"""``EtapAttnBackend``: SGLang attention backend that runs MLA decode on the ETAP kernels.

Modelled on SGLang 0.5.10.post1's ``FlashMLABackend`` (``layers/attention/flashmla_backend.py``):

- It subclasses SGLang's ``FlashInferMLAAttnBackend``. Prefill/extend (``EXTEND``, ``MIXED``,
  ``DRAFT_EXTEND``, ``DRAFT_EXTEND_V2``, chunked-prefix MHA, piecewise CUDA graph) is delegated
  to it unchanged, exactly as FlashMLA does; FlashInfer indexes the KV pool token by token, so
  that path works for every ``--page-size``.
- Decode (``DECODE``/``IDLE``) and speculative ``TARGET_VERIFY`` (``s_q`` = number of draft
  tokens, causal) run ``etap_kernels.mla_decode`` on the split latent cache: ``ckv``/``kpe`` are
  strided views ``buf[..., :512]``/``buf[..., 512:]`` of SGLang's per-layer ``[slots, 1, 576]``
  buffer, viewed as ``[num_pages, page_size, ...]``; pages come from a block table built from
  ``req_to_token`` for SGLang's page size (1 by default, any value with ``--page-size``).
- CUDA graphs: ``init_cuda_graph_state`` allocates fixed buffers (block table of full width,
  int32 lengths, split schedule); capture and replay rebuild them eagerly before the graph runs
  (``etap_kernels.get_mla_metadata`` runs on the GPU without a host sync), so the captured
  ``mla_decode`` reads only those buffers. The captured table is passed at full width because
  ETAP clamps lengths to the table's capacity.
- The q/k inputs may come split (``q_rope``/``k_rope`` keyword arguments, as DeepSeek's
  absorbed path passes them to the backends listed in ``FORWARD_ABSORB_CORE_ATTENTION_BACKENDS``)
  or concatenated (576-wide ``q``, as FlashMLA receives them); both are handled.

Head counts come from the layer (``layer.tp_q_head_num``: heads per attention-TP rank), so
tensor parallelism and DP attention need nothing special. FP8 KV caches are refused with
``NotImplementedError``.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

from sglang.srt.layers import dp_attention as _dp_attention
from sglang.srt.layers.attention.flashinfer_mla_backend import FlashInferMLAAttnBackend
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

from . import _paging

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.model_runner import ModelRunner
    from sglang.srt.speculative.spec_info import SpecInput

logger = logging.getLogger(__name__)

_FP8_DTYPES = tuple(
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, n)
)


def _import_etap_kernels():
    try:
        import etap_kernels
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "The 'etap' SGLang attention backend needs the 'etap_kernels' package (the ETAP CUDA "
            "kernels). Install the ETAP repository (`pip install --no-build-isolation <etap repo>`) "
            f"in the environment that runs SGLang. Original error: {exc}"
        ) from exc
    return etap_kernels


def _create_flashmla_kv_indices():
    """SGLang's Triton block-table builder (power-of-two page sizes), or None."""
    try:
        from sglang.srt.layers.attention.utils import create_flashmla_kv_indices_triton
    except Exception:  # pragma: no cover - triton missing
        return None
    return create_flashmla_kv_indices_triton


@dataclass
class EtapDecodeMetadata:
    """Everything one decode (or target-verify) step passes to every layer."""

    tile_scheduler_metadata: torch.Tensor  # int32 [num_sm_parts, 8]
    num_splits: torch.Tensor  # int32 [bs + 1]
    block_table: torch.Tensor  # int32 [bs, width]
    cache_seqlens: torch.Tensor  # int32 [bs]
    s_q: int  # query tokens per request (1, or the number of draft tokens)
    num_q_heads: int  # heads the schedule was computed for


class EtapAttnBackend(FlashInferMLAAttnBackend):
    """MLA attention backend: FlashInfer MLA for prefill/extend, ETAP for decode/verify."""

    def __init__(
        self,
        model_runner: ModelRunner,
        skip_prefill: bool = False,
        kv_indptr_buf: Optional[torch.Tensor] = None,
        q_indptr_decode_buf: Optional[torch.Tensor] = None,
        *,
        decode_extra_tokens: int = 0,
    ):
        cfg = model_runner.model_config
        kv_lora_rank = getattr(cfg, "kv_lora_rank", None)
        qk_rope_head_dim = getattr(cfg, "qk_rope_head_dim", None)
        if kv_lora_rank != _paging.HEAD_DIM_CKV or qk_rope_head_dim != _paging.HEAD_DIM_KPE:
            raise ValueError(
                "The 'etap' attention backend supports MLA with kv_lora_rank=512 and "
                f"qk_rope_head_dim=64 (DeepSeek-V2/V3 style); this model has kv_lora_rank={kv_lora_rank}, "
                f"qk_rope_head_dim={qk_rope_head_dim}. Use --attention-backend flashinfer or triton."
            )
        kv_dtype = model_runner.kv_cache_dtype
        if kv_dtype in _FP8_DTYPES and kv_dtype != torch.float8_e4m3fn:
            raise NotImplementedError(
                f"The 'etap' attention backend supports FP8 KV caches in e4m3 only, got {kv_dtype}. "
                "Run with --kv-cache-dtype fp8_e4m3 or auto/bf16."
            )
        if kv_dtype not in (torch.bfloat16, torch.float16, torch.float8_e4m3fn):
            raise NotImplementedError(
                f"The 'etap' attention backend needs a bf16, fp16 or fp8_e4m3 KV cache, got {kv_dtype}."
            )
        server_args = model_runner.server_args
        topk = getattr(server_args, "speculative_eagle_topk", None)
        if getattr(server_args, "speculative_algorithm", None) is not None and topk is not None and topk > 1:
            raise ValueError(
                "The 'etap' attention backend supports speculative decoding with "
                f"--speculative-eagle-topk 1 only (got {topk}): target verify runs causal, without a tree mask."
            )

        super().__init__(model_runner, skip_prefill, kv_indptr_buf, q_indptr_decode_buf)

        self.etap = _import_etap_kernels()
        params = inspect.signature(self.etap.mla_decode).parameters
        # Value checks that read device memory would cost one host sync per layer in eager mode.
        self._decode_kwargs = {"validate_values": False} if "validate_values" in params else {}
        # e4m3 cache (--kv-cache-dtype fp8_e4m3): SGLang stores k / k_scale; ETAP takes bf16
        # queries and the per-layer k_scale, and writes a bf16 output.
        self.is_fp8_kvcache = kv_dtype == torch.float8_e4m3fn
        if self.is_fp8_kvcache and "kv_scale" not in params:
            raise NotImplementedError("this etap_kernels build has no FP8 KV cache support (kv_scale)")
        self._schedule_kwargs = (
            {"is_fp8_kvcache": True}
            if self.is_fp8_kvcache and "is_fp8_kvcache" in inspect.signature(self.etap.get_mla_metadata).parameters
            else {}
        )

        self.page_size = int(model_runner.page_size)
        self.req_to_token = model_runner.req_to_token_pool.req_to_token
        self.num_q_heads = cfg.num_attention_heads // _dp_attention.get_attention_tp_size()
        self.kv_lora_rank = kv_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        self.kv_cache_dim = kv_lora_rank + qk_rope_head_dim
        self.data_type = kv_dtype
        self.q_data_type = model_runner.dtype
        self.num_draft_tokens = getattr(server_args, "speculative_num_draft_tokens", None) or 0
        # Draft step i of a multi-step draft attends to its i + 1 new tokens (FlashInfer's rule).
        self.decode_extra_tokens = int(decode_extra_tokens)
        self._triton_builder = (
            _create_flashmla_kv_indices() if _paging.triton_page_size_ok(self.page_size) else None
        )

        self.forward_metadata = None
        self.cuda_graph_block_table: Optional[torch.Tensor] = None
        self.cuda_graph_cache_seqlens: Optional[torch.Tensor] = None
        self.cuda_graph_tile_metadata: Optional[torch.Tensor] = None
        self.cuda_graph_num_splits: Optional[torch.Tensor] = None
        self.cuda_graph_metadata = {}

    # ------------------------------------------------------------------ helpers

    def _mode_shape(self, forward_mode: ForwardMode):
        """(s_q, extra kv tokens) for the modes ETAP serves, or None for the delegated ones."""
        if forward_mode.is_decode_or_idle():
            return 1, self.decode_extra_tokens
        if forward_mode.is_target_verify():
            if self.num_draft_tokens < 1:
                raise ValueError("TARGET_VERIFY without --speculative-num-draft-tokens")
            return self.num_draft_tokens, self.num_draft_tokens
        return None

    def _fill_block_table(self, req_pool_indices, cache_seqlens, out, num_pages):
        bs = req_pool_indices.shape[0]
        if self._triton_builder is not None:
            self._triton_builder[(bs,)](
                self.req_to_token,
                req_pool_indices,
                cache_seqlens,
                None,
                out,
                self.req_to_token.stride(0),
                out.stride(0),
                PAGED_SIZE=self.page_size,
            )
        else:
            _paging.fill_block_table_torch(
                self.req_to_token, req_pool_indices, self.page_size, out, num_pages
            )

    def _schedule(self, cache_seqlens: torch.Tensor, s_q: int, num_heads: int):
        return self.etap.get_mla_metadata(cache_seqlens, s_q * num_heads, 1, **self._schedule_kwargs)

    # ------------------------------------------------------------------ eager metadata

    def init_forward_metadata(self, forward_batch: ForwardBatch):
        shape = self._mode_shape(forward_batch.forward_mode)
        if shape is None:
            return super().init_forward_metadata(forward_batch)
        s_q, extra = shape
        bs = forward_batch.batch_size
        if bs == 0:
            self.forward_metadata = None
            return
        seq_lens = forward_batch.seq_lens[:bs]
        cache_seqlens = (seq_lens + extra if extra else seq_lens).to(torch.int32)
        if forward_batch.seq_lens_cpu is not None:
            max_len = int(forward_batch.seq_lens_cpu[:bs].max()) + extra
        else:
            max_len = int(cache_seqlens.max())
        width = _paging.eager_table_width(max_len, self.page_size)
        block_table = torch.zeros((bs, width), dtype=torch.int32, device=seq_lens.device)
        self._fill_block_table(forward_batch.req_pool_indices[:bs], cache_seqlens, block_table, width)
        meta, splits = self._schedule(cache_seqlens, s_q, self.num_q_heads)
        self.forward_metadata = EtapDecodeMetadata(
            meta, splits, block_table, cache_seqlens, s_q, self.num_q_heads
        )

    # ------------------------------------------------------------------ CUDA graphs

    def init_cuda_graph_state(
        self,
        max_bs: int,
        max_num_tokens: int,
        block_table_buf: Optional[torch.Tensor] = None,
    ):
        device = self.req_to_token.device
        extra = max(self.num_draft_tokens, self.decode_extra_tokens)
        width = _paging.graph_table_width(self.max_context_len, extra, self.page_size)
        if block_table_buf is None:
            block_table_buf = torch.zeros((max_bs, width), dtype=torch.int32, device=device)
        elif block_table_buf.shape[0] < max_bs or block_table_buf.dtype != torch.int32:
            raise ValueError("block_table_buf must be int32 with at least max_bs rows")
        self.cuda_graph_block_table = block_table_buf
        self.cuda_graph_cache_seqlens = torch.ones((max_bs,), dtype=torch.int32, device=device)
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.cuda_graph_tile_metadata = torch.zeros((sms, 8), dtype=torch.int32, device=device)
        self.cuda_graph_num_splits = torch.zeros((max_bs + 1,), dtype=torch.int32, device=device)
        self.cuda_graph_metadata = {}

    def _graph_metadata(self, bs, req_pool_indices, seq_lens, s_q, extra) -> EtapDecodeMetadata:
        lens = self.cuda_graph_cache_seqlens[:bs]
        lens.copy_(seq_lens[:bs] + extra if extra else seq_lens[:bs])
        table = self.cuda_graph_block_table[:bs]
        self._fill_block_table(req_pool_indices[:bs], lens, table, table.shape[1])
        meta, splits = self._schedule(lens, s_q, self.num_q_heads)
        parts = meta.shape[0]
        if parts > self.cuda_graph_tile_metadata.shape[0]:
            raise RuntimeError(
                f"ETAP schedule has {parts} parts, more than the {self.cuda_graph_tile_metadata.shape[0]} preallocated"
            )
        self.cuda_graph_tile_metadata[:parts].copy_(meta)
        self.cuda_graph_num_splits[: bs + 1].copy_(splits)
        return EtapDecodeMetadata(
            self.cuda_graph_tile_metadata[:parts],
            self.cuda_graph_num_splits[: bs + 1],
            table,
            lens,
            s_q,
            self.num_q_heads,
        )

    def init_forward_metadata_capture_cuda_graph(
        self,
        bs: int,
        num_tokens: int,
        req_pool_indices: torch.Tensor,
        seq_lens: torch.Tensor,
        encoder_lens: Optional[torch.Tensor],
        forward_mode: ForwardMode,
        spec_info: Optional[SpecInput],
    ):
        shape = self._mode_shape(forward_mode)
        if shape is None:
            if not hasattr(self, "cuda_graph_qo_indptr"):
                raise NotImplementedError(
                    f"The 'etap' backend captures CUDA graphs for DECODE/IDLE/TARGET_VERIFY only, got {forward_mode}"
                )
            return super().init_forward_metadata_capture_cuda_graph(
                bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info
            )
        s_q, extra = shape
        md = self._graph_metadata(bs, req_pool_indices, seq_lens, s_q, extra)
        self.cuda_graph_metadata[(bs, s_q)] = md
        self.forward_metadata = md

    def init_forward_metadata_replay_cuda_graph(
        self,
        bs: int,
        req_pool_indices: torch.Tensor,
        seq_lens: torch.Tensor,
        seq_lens_sum: int,
        encoder_lens: Optional[torch.Tensor],
        forward_mode: ForwardMode,
        spec_info: Optional[SpecInput],
        seq_lens_cpu: Optional[torch.Tensor],
    ):
        shape = self._mode_shape(forward_mode)
        if shape is None:
            return super().init_forward_metadata_replay_cuda_graph(
                bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu
            )
        s_q, extra = shape
        md = self._graph_metadata(bs, req_pool_indices, seq_lens, s_q, extra)
        captured = self.cuda_graph_metadata.get((bs, s_q))
        if captured is not None and captured.tile_scheduler_metadata.shape != md.tile_scheduler_metadata.shape:
            raise RuntimeError(
                "ETAP split schedule changed size between CUDA-graph capture and replay "
                f"({tuple(captured.tile_scheduler_metadata.shape)} vs {tuple(md.tile_scheduler_metadata.shape)})"
            )
        self.forward_metadata = captured if captured is not None else md

    def get_cuda_graph_seq_len_fill_value(self):
        return 1

    # ------------------------------------------------------------------ forward

    def _save_kv(self, forward_batch, layer, k, v, k_rope, save_kv_cache):
        if k is None or not save_kv_cache:
            return
        pool = forward_batch.token_to_kv_pool
        if k_rope is not None:
            pool.set_mla_kv_buffer(layer, forward_batch.out_cache_loc, k, k_rope)
        else:
            assert v is not None
            pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)

    def _run_etap(self, q, q_rope, layer: RadixAttention, forward_batch: ForwardBatch):
        md: EtapDecodeMetadata = self.forward_metadata
        h = layer.tp_q_head_num
        d_v = layer.v_head_dim
        d_r = layer.head_dim - d_v
        if d_v != _paging.HEAD_DIM_CKV or d_r != _paging.HEAD_DIM_KPE:
            raise ValueError(f"ETAP expects the absorbed MLA layer (576 = 512 + 64), got {layer.head_dim}/{d_v}")
        bs, s_q = md.cache_seqlens.shape[0], md.s_q
        if q_rope is not None:
            q_nope = q.view(-1, h, d_v)
            q_pe = q_rope.view(-1, h, d_r)
        else:
            q_all = q.view(-1, h, layer.head_dim)
            q_nope, q_pe = q_all[..., :d_v], q_all[..., d_v:]
        if q_nope.shape[0] != bs * s_q:
            raise ValueError(f"ETAP got {q_nope.shape[0]} query tokens for {bs} requests x {s_q}")
        kv = forward_batch.token_to_kv_pool.get_key_buffer(layer.layer_id)
        out_dtype = q_nope.dtype
        extra = dict(self._decode_kwargs)
        if self.is_fp8_kvcache:
            if kv.dtype == torch.uint8:  # SGLang's storage dtype for FP8 pools
                kv = kv.view(torch.float8_e4m3fn)
            q_nope, q_pe = q_nope.to(torch.bfloat16), q_pe.to(torch.bfloat16)
            k_scale = getattr(layer, "k_scale", None)
            if isinstance(k_scale, torch.Tensor):
                extra["kv_scale"] = k_scale.reshape(1).to(torch.float32)
            elif k_scale is not None:
                extra["kv_scale"] = float(k_scale)
        elif q_nope.dtype != kv.dtype:
            q_nope, q_pe = q_nope.to(kv.dtype), q_pe.to(kv.dtype)
        q_nope = _paging.as_aligned(q_nope.reshape(bs, s_q, h, d_v))
        q_pe = _paging.as_aligned(q_pe.reshape(bs, s_q, h, d_r))
        ckv, kpe = _paging.split_latent_cache(kv, self.page_size)
        meta, splits = md.tile_scheduler_metadata, md.num_splits
        if h != md.num_q_heads:  # a layer with another head count: schedule it (graph-safe)
            meta, splits = self._schedule(md.cache_seqlens, s_q, h)
        out = q_nope.new_empty((bs, s_q, h, d_v))
        self.etap.mla_decode(
            q_nope,
            q_pe,
            ckv,
            kpe,
            md.cache_seqlens,
            meta,
            splits,
            block_table=md.block_table,
            softmax_scale=layer.scaling,
            causal=s_q > 1,
            out=out,
            **extra,
        )
        return out.to(out_dtype).view(-1, h * d_v)

    def forward_decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer: RadixAttention,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        q_rope: Optional[torch.Tensor] = None,
        k_rope: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        self._save_kv(forward_batch, layer, k, v, k_rope, save_kv_cache)
        return self._run_etap(q, q_rope, layer, forward_batch)

    def forward_extend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer: RadixAttention,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        q_rope: Optional[torch.Tensor] = None,
        k_rope: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        if not forward_batch.forward_mode.is_target_verify():
            return super().forward_extend(
                q, k, v, layer, forward_batch, save_kv_cache, q_rope=q_rope, k_rope=k_rope
            )
        self._save_kv(forward_batch, layer, k, v, k_rope, save_kv_cache)
        return self._run_etap(q, q_rope, layer, forward_batch)


class EtapMultiStepDraftBackend:
    """EAGLE/MTP multi-step draft decode with ETAP (topk = 1), like FlashMLAMultiStepDraftBackend.

    Draft step ``i`` attends to the request's ``seq_len + i + 1`` tokens (the prefix plus the
    draft tokens written so far, the lengths FlashInfer's draft backend uses); all steps share one
    CUDA-graph block table.
    """

    def __init__(self, model_runner: ModelRunner, topk: int, speculative_num_steps: int):
        if topk > 1:
            raise ValueError("The 'etap' backend supports speculative decoding with topk=1 only")
        self.topk = topk
        self.speculative_num_steps = speculative_num_steps
        max_bs = model_runner.req_to_token_pool.size * self.topk
        self.kv_indptr = torch.zeros(
            (self.speculative_num_steps, max_bs + 1), dtype=torch.int32, device=model_runner.device
        )
        self.attn_backends = [
            EtapAttnBackend(
                model_runner,
                skip_prefill=True,
                kv_indptr_buf=self.kv_indptr[i],
                decode_extra_tokens=i + 1,
            )
            for i in range(self.speculative_num_steps - 1)
        ]

    def _each(self, fn: Callable[[int], None]):
        for i in range(self.speculative_num_steps - 1):
            fn(i)

    def init_forward_metadata(self, forward_batch: ForwardBatch):
        self._each(lambda i: self.attn_backends[i].init_forward_metadata(forward_batch))

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        if not self.attn_backends:
            return
        first = self.attn_backends[0]
        width = _paging.graph_table_width(
            first.max_context_len, self.speculative_num_steps + 1, first.page_size
        )
        shared = torch.zeros((max_bs, width), dtype=torch.int32, device=first.req_to_token.device)
        self._each(lambda i: self.attn_backends[i].init_cuda_graph_state(max_bs, max_num_tokens, shared))

    def init_forward_metadata_capture_cuda_graph(self, forward_batch: ForwardBatch):
        self._each(
            lambda i: self.attn_backends[i].init_forward_metadata_capture_cuda_graph(
                forward_batch.batch_size,
                forward_batch.batch_size * self.topk,
                forward_batch.req_pool_indices,
                forward_batch.seq_lens,
                encoder_lens=None,
                forward_mode=ForwardMode.DECODE,
                spec_info=forward_batch.spec_info,
            )
        )

    def init_forward_metadata_replay_cuda_graph(self, forward_batch: ForwardBatch, bs: int):
        self._each(
            lambda i: self.attn_backends[i].init_forward_metadata_replay_cuda_graph(
                bs,
                forward_batch.req_pool_indices,
                forward_batch.seq_lens,
                seq_lens_sum=-1,
                encoder_lens=None,
                forward_mode=ForwardMode.DECODE,
                spec_info=forward_batch.spec_info,
                seq_lens_cpu=forward_batch.seq_lens_cpu,
            )
        )


def create_etap_backend(runner):
    """The factory registered as ``ATTENTION_BACKENDS["etap"]``."""
    if not getattr(runner, "use_mla_backend", False):
        raise ValueError(
            "The 'etap' attention backend can only be used with MLA models (DeepSeek-V2/V3 style)."
        )
    return EtapAttnBackend(runner)
