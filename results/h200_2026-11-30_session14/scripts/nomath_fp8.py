"""Which e4m3 case faults under -DETAP_EXP_NO_MATH (outputs are wrong by design; only faults matter)."""
import sys, traceback
sys.path.insert(0, "scripts")
import torch, reliability as R
cases = [c for c in R.driver_cases() if c["dtype"] == "fp8"]
if len(sys.argv) > 1:
    cases = [cases[int(i)] for i in sys.argv[1].split(",")]
for i, c in enumerate(cases):
    x = R.build(c)
    try:
        R.run_etap(c, x, validate=False)
        torch.cuda.synchronize()
        print("ok", i, c["h_q"], c["lens"], c["page_size"], flush=True)
    except Exception as e:
        print("FAULT", i, c, repr(e)[:200], flush=True)
        break
