#!/usr/bin/env python3
"""HF transformers peer of `VteKernels.Bench gpu-e2e`: the same llava-hf folder, token ids and pixel values, batch 1.

    python3 tools/bench/hf_llava_peer.py MODEL_DIR WORK_DIR

WORK_DIR holds inputs.json ({"ids": [...], "image_size": 336, "decode": 64, "samples": 5}) and pixels.f32 (3 x S x S
float32, already CLIP-normalised: the very values our engine reads). LlavaForConditionalGeneration in bf16 with
attn_implementation="sdpa" on the GPU. Greedy: the first token from the prefill's last logits, then `decode`
steps with the KV cache (past_key_values), each step's argmax read on the host, as the C# side does. One warm-up,
then `samples` timed runs: time to first token (prefill + argmax + .item()), decode tokens/s. Prints progress
lines starting "hf:" on stderr and one JSON object on stdout; without torch, CUDA or transformers it prints
{"error": ...} and exits 3.
"""
import json
import os
import statistics
import sys
import time


def main() -> int:
    model_dir, work = sys.argv[1], sys.argv[2]
    try:
        import torch
        import transformers
        from transformers import LlavaForConditionalGeneration
    except ImportError as e:
        print(json.dumps({"error": f"torch / transformers not available: {e}"}))
        return 3
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch has no CUDA device"}))
        return 3
    spec = json.load(open(os.path.join(work, "inputs.json")))
    size, decode, samples = spec["image_size"], spec["decode"], spec["samples"]
    dev = torch.device("cuda")
    ids = torch.tensor([spec["ids"]], dtype=torch.long, device=dev)
    pixels = torch.frombuffer(bytearray(open(os.path.join(work, "pixels.f32"), "rb").read()), dtype=torch.float32)
    pixels = pixels.view(1, 3, size, size).to(dev, torch.bfloat16)

    t = time.perf_counter()
    kw = dict(attn_implementation="sdpa")
    try:  # straight onto the GPU (accelerate), not through a 14 GB copy in host memory
        import accelerate  # noqa: F401
        kw["device_map"] = "cuda"
    except ImportError:
        pass
    try:
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16, **kw)
    except TypeError:  # transformers 4.x spells it torch_dtype
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.bfloat16, **kw)
    model = model.to(dev).eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t
    print(f"hf: loaded {model_dir} in {load_s:.1f} s (transformers {transformers.__version__}, torch {torch.__version__})", file=sys.stderr, flush=True)

    @torch.inference_mode()
    def greedy():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
        nxt = int(out.logits[0, -1].argmax().item())
        ttft = time.perf_counter() - t0
        past, tokens = out.past_key_values, [nxt]
        t1 = time.perf_counter()
        for _ in range(decode):
            out = model(input_ids=torch.tensor([[nxt]], device=dev), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax().item())
            tokens.append(nxt)
        return tokens, ttft * 1e3, (time.perf_counter() - t1) * 1e3

    tokens, _, _ = greedy()  # warm-up and the tokens compared
    ttfts, decs = [], []
    for _ in range(samples):
        _, a, b = greedy()
        ttfts.append(a)
        decs.append(b)
    ttft, dec = statistics.median(ttfts), statistics.median(decs)
    print(f"hf: first token {ttft:.2f} ms, decode {decode / (dec * 1e-3):.1f} tok/s", file=sys.stderr, flush=True)
    print(json.dumps({"tokens": tokens, "ttft_ms": ttft, "decode_tok_s": decode / (dec * 1e-3), "load_s": round(load_s, 2),
                      "versions": f"transformers {transformers.__version__}, torch {torch.__version__}, attn sdpa, bf16",
                      "device": torch.cuda.get_device_name(0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
