#!/usr/bin/env python3
"""Registers, shared memory, stack frame and spills of every kernel in every dtype, as ptxas reports them.

    python3 tools/gpu/resusage.py [--arch sm_90] [--compiler nvcc|nvrtc|auto] [--cubins DIR] [--jobs N] [--dtypes BF16,F16,F32] [--tsv PATH]

With nvcc (the GPU host's CUDA 13): `nvcc -arch=sm_90 -cubin -lineinfo -std=c++17 -Ikernels -Inative
-DVTE_DTYPE_<T> -Xptxas -v` per (kernel file, dtype), the cubins kept in --cubins for cuobjdump. Without nvcc
(a machine with NVRTC only, e.g. Debian's libnvrtc11.2 = CUDA 11.8, which knows sm_90): NVRTC compiles the same
sources with the options the runtime uses (KernelCatalog.Options) plus --ptxas-options=-v (no -lineinfo) and prints the same
ptxas lines; that figure is CUDA 11.8's ptxas, not CUDA 13's, and the table says which compiler made it.
Prints one table (file, dtype, entry, registers, shared bytes, stack bytes, spill stores/loads); exits 1 when
a build fails, an entry the catalog expects is missing, or anything spills.
"""
import argparse
import concurrent.futures as cf
import ctypes
import os
import re
import shutil
import subprocess
import sys

ROOT = os.environ.get("VTE_ROOT", os.getcwd())
DTYPES = ("BF16", "F16", "F32")


def catalog():
    """(file, [entries]) from src/VteKernels.Cuda/Kernels/KernelCatalog.cs, the runtime's own list."""
    text = open(os.path.join(ROOT, "src/VteKernels.Cuda/Kernels/KernelCatalog.cs"), encoding="utf-8").read()
    out = []
    for m in re.finditer(r'new\("([a-z_0-9]+\.cu)", \[([^\]]*)\]', text):
        out.append((m.group(1), re.findall(r'"([a-z_0-9]+)"', m.group(2))))
    return out


def nvcc_build(path, dtype, arch, cubin):
    cmd = ["nvcc", f"-arch={arch}", "-cubin", "-lineinfo", "-std=c++17", "-Ikernels", "-Inative", f"-DVTE_DTYPE_{dtype}",
           "-Xptxas", "-v", "-o", cubin, path]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return p.returncode == 0, p.stdout + p.stderr


_nvrtc = None


def nvrtc():
    global _nvrtc
    if _nvrtc is None:
        names = [os.environ["VTE_REAL_NVRTC"]] if os.environ.get("VTE_REAL_NVRTC") else []
        names += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"]
        for n in names:
            try:
                _nvrtc = ctypes.CDLL(n)
                break
            except OSError:
                pass
        else:
            raise SystemExit("no libnvrtc (and no nvcc)")
    return _nvrtc


def nvrtc_build(path, dtype, arch, cubin):
    lib = nvrtc()
    src = open(os.path.join(ROOT, path), "rb").read()
    hdr = {"common.cuh": open(os.path.join(ROOT, "kernels/common.cuh"), "rb").read(),
           "vte_params.h": open(os.path.join(ROOT, "native/vte_params.h"), "rb").read()}
    prog = ctypes.c_void_p()
    names = (ctypes.c_char_p * 2)(*[k.encode() for k in hdr])
    texts = (ctypes.c_char_p * 2)(*hdr.values())
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 2, texts, names) != 0:
        return False, "nvrtcCreateProgram failed"
    # No -lineinfo here: NVRTC 11.8 crashes (SIGSEGV) with it on bias_act.cu; line tables only matter for ncu, which
    # reads the nvcc cubins of the GPU host.
    opts = [f"--gpu-architecture={arch}", "-std=c++17", f"-DVTE_DTYPE_{dtype}", "--ptxas-options=-v"]
    o = (ctypes.c_char_p * len(opts))(*[x.encode() for x in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), o)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace")
    if rc == 0 and cubin:
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
        img = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetCUBIN(prog, img)
        open(cubin, "wb").write(img.raw)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, text


FUNC = re.compile(r"(?:Compiling entry function|Function properties for) '?([A-Za-z_0-9]+)'?")
USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse(log):
    """{entry: dict(regs, smem, stack, spill_st, spill_ld)} from ptxas -v output."""
    out, cur = {}, None
    for line in log.splitlines():
        m = FUNC.search(line)
        if m:
            cur = out.setdefault(m.group(1), dict(regs=None, smem=0, stack=0, spill_st=0, spill_ld=0))
            continue
        if cur is None:
            continue
        m = STACK.search(line)
        if m:
            cur.update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        m = USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            cur["smem"] = int(m.group(2) or 0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--compiler", default="auto", choices=("auto", "nvcc", "nvrtc"))
    ap.add_argument("--cubins", default=None)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tsv", default=None)
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of BF16,F16,F32")
    a = ap.parse_args()
    compiler = a.compiler if a.compiler != "auto" else ("nvcc" if shutil.which("nvcc") else "nvrtc")
    build = nvcc_build if compiler == "nvcc" else nvrtc_build
    if a.cubins:
        os.makedirs(a.cubins, exist_ok=True)
    dtypes = [d for d in a.dtypes.split(",") if d in DTYPES]
    jobs = [(f, entries, d) for f, entries in catalog() for d in dtypes]
    if not jobs:
        print("error: no kernels found in KernelCatalog.cs")
        return 1

    def one(job):
        f, _, d = job
        cubin = os.path.join(a.cubins, f"{f[:-3]}.{d}.cubin") if a.cubins else None
        return build(os.path.join("kernels", f), d, a.arch, cubin)

    # NVRTC through ctypes is called from threads (it is thread-safe per program); nvcc runs as processes.
    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        results = list(ex.map(one, jobs))
    rows, problems = [], []
    for (f, entries, d), (ok, log) in zip(jobs, results):
        if not ok:
            problems.append(f"build failed: {f} {d}: " + " | ".join(log.strip().splitlines()[-3:]))
            continue
        got = parse(log)
        for e in entries:
            name = f"{e}_{d.lower()}"
            r = got.get(name)
            if r is None or r["regs"] is None:
                problems.append(f"no ptxas report for {name} in {f} {d}")
                continue
            rows.append((f, d, name, r))
            if r["spill_st"] or r["spill_ld"]:
                problems.append(f"spills: {name}: {r['spill_st']} bytes stored, {r['spill_ld']} loaded")
    version = ""
    if compiler == "nvcc":
        version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    else:
        maj, mi = ctypes.c_int(), ctypes.c_int()
        nvrtc().nvrtcVersion(ctypes.byref(maj), ctypes.byref(mi))
        version = f"NVRTC {maj.value}.{mi.value}"
    print(f"resource usage, {a.arch}, {compiler} ({version}): {len(rows)} entries of {len(jobs)} (file, dtype) builds")
    print(f"{'file':<24} {'dtype':<5} {'entry':<28} {'regs':>5} {'smem B':>7} {'stack B':>7} {'spill st':>8} {'spill ld':>8}")
    for f, d, name, r in rows:
        print(f"{f:<24} {d:<5} {name:<28} {r['regs']:>5} {r['smem']:>7} {r['stack']:>7} {r['spill_st']:>8} {r['spill_ld']:>8}")
    if a.tsv:
        with open(a.tsv, "w") as t:
            t.write("file\tdtype\tentry\tregisters\tsmem_bytes\tstack_bytes\tspill_store_bytes\tspill_load_bytes\tcompiler\n")
            for f, d, name, r in rows:
                t.write(f"{f}\t{d}\t{name}\t{r['regs']}\t{r['smem']}\t{r['stack']}\t{r['spill_st']}\t{r['spill_ld']}\t{compiler} {version}\n")
    for p in problems:
        print(f"FAIL {p}")
    print(f"resource usage: {'FAIL' if problems else 'ok'} ({len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
