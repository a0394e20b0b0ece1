#!/usr/bin/env python3
"""Convert a folder of PyTorch pickle weights (pytorch_model.bin, or the shards that
pytorch_model.bin.index.json lists) to safetensors, which is all VteKernels reads.

Original LLaVA checkpoints (haotian-liu/LLaVA; the DyVTE and SAISA releases) and older CLIP folders
(openai/clip-vit-large-patch14-336) are often only .bin files. Usage:

    python tools/convert/bin_to_safetensors.py MODEL_DIR [--out DIR] [--force]

writes next to the .bin files (or into --out):
    pytorch_model.bin                        -> model.safetensors
    pytorch_model-0000i-of-0000N.bin + index -> model-0000i-of-0000N.safetensors + model.safetensors.index.json
with every tensor kept under its name, dtype and shape, shard by shard (one shard in memory at a time).
config.json and the tokenizer files are left alone; with --out, copy them yourself.

Needs only torch (Debian: python3-torch). The files are written here rather than with the safetensors
package, which is not packaged where this project builds: the format is an 8-byte little-endian header
length, a JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}
padded with spaces to a multiple of 8, then the raw little-endian bytes of each tensor in header order.
The .bin files are unpickled with torch.load(weights_only=True), which refuses pickles that would run code.
"""
import argparse
import json
import os
import struct
import sys

import torch

# torch dtype -> safetensors dtype name (the ones checkpoints use).
DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def load_state_dict(path):
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the pickle holds more than tensors, or is damaged
        sys.exit(f"{path}: cannot load with torch.load(weights_only=True): {e}")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        sys.exit(f"{path}: not a flat dict of tensors (a training checkpoint, not a model's weights?)")
    return sd


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: move the same 2-byte words as int16
        t = t.view(torch.int16)
    if sys.byteorder != "little":
        sys.exit("big-endian hosts are not supported")
    return t.numpy().tobytes() if t.numel() else b""


def write_safetensors(path, sd):
    """Writes one safetensors file; returns the tensors' total byte count."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(sd)
    for name in names:
        t = sd[name]
        if t.dtype not in DTYPES:
            sys.exit(f"{name}: dtype {t.dtype} has no safetensors name here")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in names:
            f.write(tensor_bytes(sd[name]))
    os.replace(tmp, path)
    return offset


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="folder with pytorch_model.bin or pytorch_model.bin.index.json")
    ap.add_argument("--out", help="output folder (default: model_dir)")
    ap.add_argument("--force", action="store_true", help="replace safetensors files that are already there")
    args = ap.parse_args()
    src = args.model_dir
    out = args.out or src
    os.makedirs(out, exist_ok=True)

    index = os.path.join(src, "pytorch_model.bin.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
        targets = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        outputs = targets + ["model.safetensors.index.json"]
    elif os.path.exists(os.path.join(src, "pytorch_model.bin")):
        shards, targets = ["pytorch_model.bin"], ["model.safetensors"]
        outputs = targets
    else:
        sys.exit(f"{src}: neither pytorch_model.bin nor pytorch_model.bin.index.json")

    existing = [o for o in outputs if os.path.exists(os.path.join(out, o))]
    if existing and not args.force:
        sys.exit(f"{out}: {', '.join(existing)} already there (use --force to replace)")

    new_map, total = {}, 0
    for shard, target in zip(shards, targets):
        sd = load_state_dict(os.path.join(src, shard))
        if os.path.exists(index):
            listed = {k for k, v in weight_map.items() if v == shard}
            if listed != set(sd):
                sys.exit(f"{shard}: holds {len(sd)} tensors but the index lists {len(listed)} for it")
        total += write_safetensors(os.path.join(out, target), sd)
        new_map.update({name: target for name in sd})
        print(f"{shard} -> {target}: {len(sd)} tensors")
        del sd

    if os.path.exists(index):
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(new_map.items()))}, f, indent=2)
            f.write("\n")
    print(f"{len(new_map)} tensors, {total / 1e9:.2f} GB written to {out}")


if __name__ == "__main__":
    main()
