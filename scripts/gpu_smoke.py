"""Quick GPU smoke check: builds the extension, runs a few shapes against a float64 reference,
checks the SASS for HGMMA, and times one large case. The full sweep is `pytest -m gpu`."""

import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import etap_kernels  # noqa: E402
from etap_kernels import _build  # noqa: E402
from etap_kernels.reference import flash_mla_reference  # noqa: E402


def run_case(b, s_q, h, lens, page_size, dtype, causal, layout):
    dev = "cuda"
    max_len = max(lens + [1])
    pages_per = (max_len + page_size - 1) // page_size
    num_pages = b * pages_per + 3
    buf = torch.randn(num_pages, page_size, 1, 576, dtype=dtype, device=dev)
    perm = torch.randperm(num_pages, device=dev)[: b * pages_per].view(b, pages_per).to(torch.int32)
    q = torch.randn(b, s_q, h, 576, dtype=dtype, device=dev)
    seqlens = torch.tensor(lens, dtype=torch.int32, device=dev)
    meta, splits = etap_kernels.get_mla_metadata(seqlens, s_q * h, 1)
    if layout == "flashmla":
        out, lse = etap_kernels.flash_mla_with_kvcache(q, buf, perm, seqlens, 512, meta, splits, causal=causal)
    else:
        flat = buf.view(num_pages, page_size, 576)
        indptr = torch.arange(0, b * pages_per + 1, pages_per, dtype=torch.int32, device=dev)
        out = torch.full((b, s_q, h, 512), float("nan"), dtype=dtype, device=dev)
        lse = torch.full((b, h, s_q), float("nan"), dtype=torch.float32, device=dev)
        etap_kernels.mla_decode(q[..., :512], q[..., 512:], flat[..., :512], flat[..., 512:], seqlens, meta, splits,
                                kv_indptr=indptr, kv_indices=perm.flatten().contiguous(), causal=causal,
                                out=out, lse=lse)
    torch.cuda.synchronize()
    ref_o, ref_l = flash_mla_reference(q, buf, perm, seqlens, 512, causal=causal)
    err = ((out.double() - ref_o).norm() / ref_o.norm().clamp_min(1e-30)).item()
    fin = torch.isfinite(ref_l)
    lse_ok = bool(torch.equal(torch.isfinite(lse), fin)) and (
        (lse.double()[fin] - ref_l[fin]).abs().max().item() < 1e-2 if fin.any() else True)
    nan = bool(torch.isnan(out).any())
    if nan and os.environ.get("ETAP_DIAG"):
        bad = torch.isnan(out).any(-1)  # [b, s_q, h]
        print("   NaN rows (b, t, h):", bad.nonzero().tolist()[:40], "cols per row:",
              torch.isnan(out).sum(-1)[bad].tolist()[:10])
    return err, lse_ok, nan


def main():
    if "--only-timing" in sys.argv:
        return timing(profile=False)
    t0 = time.time()
    ext = _build.load_extension()
    print(f"extension ready in {time.time() - t0:.1f}s: {ext.__file__}", flush=True)
    so = ext.__file__
    sass = subprocess.run(["cuobjdump", "--dump-sass", so], capture_output=True, text=True).stdout
    print("HGMMA in SASS:", sass.count("HGMMA"), " LDL/STL:", sass.count("LDL"), sass.count("STL"), flush=True)
    torch.manual_seed(0)
    cases = [
        (1, 1, 16, [64], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 16, [200], 64, torch.bfloat16, False, "flashmla"),
        (3, 1, 16, [0, 1, 65], 16, torch.bfloat16, False, "flashinfer"),
        (4, 2, 16, [63, 64, 130, 1000], 1, torch.bfloat16, True, "flashinfer"),
        (2, 1, 128, [5000, 77], 64, torch.float16, False, "flashmla"),
        (2, 4, 8, [300, 9], 32, torch.bfloat16, True, "flashmla"),
        (64, 1, 32, [(i * 97) % 3000 for i in range(64)], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 1, [70000], 128, torch.bfloat16, False, "flashinfer"),
        (2, 1, 40, [100, 2000], 16, torch.float16, True, "flashinfer"),
        (2, 1, 40, [100, 2000], 16, torch.bfloat16, False, "flashinfer"),
        (1, 1, 40, [64], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 48, [500], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 40, [2000], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 24, [2000], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 64, [2000], 64, torch.bfloat16, False, "flashmla"),
        (1, 1, 33, [100], 64, torch.bfloat16, False, "flashmla"),
    ]
    fails = 0
    for c in cases:
        try:
            err, lse_ok, nan = run_case(*c)
            ok = err < 1e-2 and lse_ok and not nan
        except Exception as exc:  # noqa: BLE001
            err, lse_ok, nan, ok = float("nan"), False, True, False
            print("   exception:", repr(exc)[:300])
        fails += not ok
        print(f"{'OK  ' if ok else 'FAIL'} b={c[0]} s_q={c[1]} h={c[2]} page={c[4]} {str(c[5])[6:]} causal={c[6]} "
              f"{c[7]}: rel_err={err:.2e} lse_ok={lse_ok} nan={nan}", flush=True)

    timing()
    print(f"smoke: {len(cases) - fails} passed, {fails} failed")


def timing(profile=True):
    """One timing: b=16, s=65536, h=16, bf16, page 64."""
    b, s, h = 16, 65536, 16
    buf = torch.randn(b * s // 64, 64, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.arange(b * s // 64, dtype=torch.int32, device="cuda").view(b, -1)
    q = torch.randn(b, 1, h, 576, dtype=torch.bfloat16, device="cuda")
    lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
    meta, splits = etap_kernels.get_mla_metadata(lens, h, 1)
    f = lambda: etap_kernels.interface.mla_decode(  # noqa: E731
        q[..., :512], q[..., 512:], buf[:, :, 0, :512], buf[:, :, 0, 512:], lens, meta, splits,
        block_table=bt, validate_values=False)
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    times = []
    for _ in range(5):  # back-to-back launches so host overhead stays hidden
        ev[0].record()
        for _ in range(10):
            f()
        ev[1].record(); torch.cuda.synchronize()
        times.append(ev[0].elapsed_time(ev[1]) * 1e3 / 10)
    times.sort()
    med = times[len(times) // 2]
    gbs = b * s * 576 * 2 / med / 1e3
    print(f"timing b={b} s={s} h={h}: median {med:.1f} us, {gbs:.0f} GB/s", flush=True)
    if not profile:
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from baselines import load_flashmla
    fm = load_flashmla()
    if fm is not None:
        fmeta = fm.metadata(lens, 1, h)
        g = lambda: fm(q, buf, bt, lens, meta=fmeta)  # noqa: E731
        o_ref, l_ref = g()
        o_us, l_us = f()
        print("flashmla vs etap: max|dout| =", (o_ref.float() - o_us.float()).abs().max().item(),
              " max|dlse| =", (l_ref.float() - l_us.float()).abs().max().item())
        for _ in range(3):
            g()
        torch.cuda.synchronize()
        ft = []
        for _ in range(5):
            ev[0].record()
            for _ in range(10):
                g()
            ev[1].record(); torch.cuda.synchronize()
            ft.append(ev[0].elapsed_time(ev[1]) * 1e3 / 10)
        ft.sort()
        print(f"flashmla same inputs: median {ft[2]:.1f} us, {b * s * 576 * 2 / ft[2] / 1e3:.0f} GB/s")
    from torch.profiler import profile as torch_profile, ProfilerActivity
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            f()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=6))


if __name__ == "__main__":
    main()
