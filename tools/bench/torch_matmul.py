#!/usr/bin/env python3
"""torch.matmul peer of `VteKernels.Bench kernels`: the same LLaVA-1.5-7B GEMM and GEMV shapes in bf16 on the
same GPU, timed the same way (CUDA events around a CUDA graph replaying the op, median of 9 samples after a
warm-up), plus a device-to-device copy for the same GB/s reference. Writes JSON next to the kernels results.

    python3 tools/bench/torch_matmul.py [--quick] [--out bench/results/torch-matmul.json]

Needs PyTorch with CUDA on the GPU host (not a dependency of this repository; CI never runs it).
y = x @ W.T with W stored [out, in] is exactly the runtime's Linear (torch.nn.functional.linear).
"""
import argparse
import datetime
import json
import os
import statistics

import torch


def time_graph(fn, samples, target_ms=2.0):
    """Median and minimum ms per call of fn, replayed in a CUDA graph."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = max(start.elapsed_time(end), 1e-4)
    reps = int(min(1000, max(1, target_ms / once)))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm-up on the capture stream (cuBLAS workspace, heuristics)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times), min(times), reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join("bench", "results", "torch-matmul.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: torch reports no CUDA device")
        return 2
    samples = 5 if args.quick else 9
    dev = torch.device("cuda")
    torch.manual_seed(0)

    copy_bytes = (256 << 20) if args.quick else (1 << 30)
    src = torch.empty(copy_bytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_ms, _, _ = time_graph(lambda: dst.copy_(src), samples)
    copy_gbps = 2 * copy_bytes / (copy_ms * 1e-3) / 1e9
    print(f"{torch.cuda.get_device_name()}: copy {copy_gbps:.0f} GB/s (read + write bytes)")

    big = 8192
    a = torch.randn(big, big, dtype=torch.bfloat16, device=dev)
    w = torch.randn(big, big, dtype=torch.bfloat16, device=dev)
    ref_ms, _, _ = time_graph(lambda: torch.matmul(a, w.T), samples)
    ref_tflops = 2 * big ** 3 / (ref_ms * 1e-3) / 1e12
    print(f"reference GEMM {big}^3: {ref_tflops:.1f} TFLOP/s")
    del a, w

    rows = []
    d, ffn, vocab, n = 4096, 11008, 32064, 640
    for name, m, k, o in [("q_proj", n, d, d), ("gate/up", n, d, ffn), ("down", n, ffn, d), ("clip fc1", 577, 1024, 4096),
                          ("q_proj", 1, d, d), ("gate/up", 1, d, ffn), ("down", 1, ffn, d), ("lm_head", 1, d, vocab)]:
        x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
        weight = torch.randn(o, k, dtype=torch.bfloat16, device=dev) * 0.02
        median, minimum, reps = time_graph(lambda: torch.matmul(x, weight.T), samples)
        tflops = 2 * m * k * o / (median * 1e-3) / 1e12
        gbps = 2 * (m * k + o * k + m * o) / (median * 1e-3) / 1e9
        rows.append(dict(op="torch.matmul", shape=f"{name} {k}->{o}, m={m}", reps=reps, medianMs=round(median, 5), minMs=round(minimum, 5),
                         tflops=round(tflops, 2), percentOfGemm=round(100 * tflops / ref_tflops, 1),
                         gbps=round(gbps, 1), percentOfCopy=round(100 * gbps / copy_gbps, 1)))
        print(f"  {name} {k}->{o} m={m}: {median:.4f} ms, {tflops:.1f} TFLOP/s, {gbps:.0f} GB/s")

    doc = dict(
        benchmark="torch.matmul (x @ W.T) in bf16, the peer of VteKernels.Bench kernels",
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        quick=args.quick,
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        copyGBps=round(copy_gbps, 1),
        gemmReferenceTflops=round(ref_tflops, 2),
        note="GB/s counts x, W and y bytes once; copy GB/s counts read + write bytes; each op replayed in a CUDA graph.",
        rows=rows,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
