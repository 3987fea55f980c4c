"""Large e4m3 cases under -DETAP_EXP_NO_MATH: which one faults."""
import sys
sys.path.insert(0, "scripts")
import torch, reliability as R
specs = [(1, 65536, 64), (2, 65536, 64), (16, 8192, 64), (16, 16384, 64), (16, 65536, 64)]
if len(sys.argv) > 1:
    specs = [specs[int(i)] for i in sys.argv[1].split(",")]
for b, ctx, ps in specs:
    c = dict(dtype="fp8", h_q=16, s_q=1, lens=[ctx] * b, page_size=ps, layout="block_table", strided=False,
             causal=False, seed=1, kv_scale=0.05)
    x = R.build(c)
    try:
        meta, splits = R.etap_kernels.get_mla_metadata(x["seqlens"], 16, 1, is_fp8_kvcache=True)
        print("splits", splits.tolist()[:4], "meta", tuple(meta.shape), flush=True)
        R.run_etap(c, x, validate=False)
        torch.cuda.synchronize()
        print("ok", b, ctx, ps, flush=True)
    except Exception as e:
        print("FAULT", b, ctx, ps, repr(e)[:300], flush=True)
        break
