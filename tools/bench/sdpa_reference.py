#!/usr/bin/env python3
"""torch.nn.functional.scaled_dot_product_attention at the attention benchmark's shapes, for comparison.

Called by `VteKernels.Bench attention` on the GPU host with the shapes as JSON:

    python3 tools/bench/sdpa_reference.py '[{"name": "prefill causal", "nq": 640, "nk": 640, "heads": 32,
                                            "kv_heads": 32, "head_dim": 128, "causal": true}]'

bf16, layout (1, heads, rows, head_dim), CUDA events around `reps` calls after a warm-up, median of
`--samples` samples (ms per call). A causal shape with nq < nk means the queries are the LAST nq key
positions (bottom-right alignment, as the C# backend's AttentionMask.Causal): torch's is_causal aligns
top-left, so those shapes use torch.nn.attention.bias.causal_lower_right (or, on an older torch, a boolean
mask, which routes away from the flash kernel). Prints one JSON object; without torch or CUDA it prints
{"error": ...} and exits 3.
"""
import json
import statistics
import sys


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    samples = 9
    for a in sys.argv[1:]:
        if a.startswith("--samples="):
            samples = int(a.split("=", 1)[1])
    shapes = json.loads(args[0] if args else sys.stdin.read())
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(json.dumps({"error": f"torch not available: {e}"}))
        return 3
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch has no CUDA device"}))
        return 3
    try:
        from torch.nn.attention.bias import causal_lower_right
    except ImportError:
        causal_lower_right = None

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for s in shapes:
        nq, nk, h, kvh, hd = s["nq"], s["nk"], s["heads"], s["kv_heads"], s["head_dim"]
        q = torch.randn(1, h, nq, hd, device=dev, dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, kvh, nk, hd, device=dev, dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, kvh, nk, hd, device=dev, dtype=torch.bfloat16, generator=gen)
        extra = {"enable_gqa": True} if kvh != h else {}
        mask_kind = "none"
        if s["causal"] and nq == nk:
            call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)
            mask_kind = "is_causal"
        elif s["causal"] and nq > 1:
            if causal_lower_right is not None:
                bias = causal_lower_right(nq, nk)
                mask_kind = "causal_lower_right"
            else:
                bias = torch.ones(nq, nk, dtype=torch.bool, device=dev).tril(diagonal=nk - nq)
                mask_kind = "boolean tril mask"
            call = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, **extra)
        else:  # no mask, or one query that sees every key
            call = lambda: F.scaled_dot_product_attention(q, k, v, **extra)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        reps = int(min(1000, max(1, 2.0 / max(start.elapsed_time(end), 1e-4))))  # a sample lasts ~2 ms
        times = []
        for _ in range(samples):
            start.record()
            for _ in range(reps):
                call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
        rows.append({"name": s["name"], "nq": nq, "nk": nk, "mask": mask_kind, "reps": reps,
                     "median_ms": statistics.median(times), "min_ms": min(times)})
        del q, k, v
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                      "device": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
