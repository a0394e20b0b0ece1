#!/usr/bin/env python3
"""Summary of the xunit v3 XML files of one verification pass; exits 1 unless it is a real pass.

    python3 tools/gpu/testsummary.py [--mode gpu|emulator] t-fused.xml t-rest.xml ...

A pass needs, in every file: results at all (a process that died writes none), a non-zero total, no failure
or error, and no skip except the documented ones:
  - CudaCliTests.WithoutAGpuCudaIsOneErrorLine skips wherever a device is usable (it checks the no-GPU CLI);
  - on the emulator only, tests that skip because they need a real GPU ("not the CPU emulator") or a real
    NVRTC (KernelPtxTests: the emulator's NVRTC builds C++, not PTX; CI runs them again without it).
Everything else that skipped is listed with its reason and fails the pass: a GPU run where tests skip has
not tested them.
"""
import os
import sys
import xml.etree.ElementTree as ET

ALWAYS = ("VteKernels.Cuda.Tests.CudaCliTests.WithoutAGpuCudaIsOneErrorLine",)
EMULATOR_REASONS = ("not the CPU emulator", "needs a real NVRTC to emit PTX; this one is the CPU emulator")


def main():
    args = sys.argv[1:]
    mode = "gpu"
    if len(args) >= 2 and args[0] == "--mode":
        mode, args = args[1], args[2:]
    problems, lines = [], []
    grand = dict(total=0, passed=0, failed=0, skipped=0)
    for path in args:
        name = os.path.basename(path).removesuffix(".xml")
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            problems.append(f"{name}: no results (the process died or ran out of time; see {name}.log)")
            continue
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            problems.append(f"{name}: unreadable results ({e})")
            continue
        c = dict(total=0, passed=0, failed=0, skipped=0)
        allowed = 0
        for t in root.iter("test"):
            c["total"] += 1
            result = t.get("result")
            tname = t.get("name", "?")
            if result == "Pass":
                c["passed"] += 1
            elif result == "Skip":
                c["skipped"] += 1
                reason = (t.findtext("reason") or "").strip().splitlines()[0:1]
                reason = reason[0] if reason else "(no reason)"
                method = tname.split("(")[0]
                if method in ALWAYS or (mode == "emulator" and any(r in reason for r in EMULATOR_REASONS)):
                    allowed += 1
                else:
                    problems.append(f"{name}: skipped {tname}: {reason}")
            else:
                c["failed"] += 1
                msg = (t.findtext("failure/message") or "").strip().splitlines()
                problems.append(f"{name}: {result.lower() if result else 'failed'} {tname}: {msg[0][:300] if msg else ''}")
        for a in root.iter("assembly"):
            errors = int(a.get("errors", "0"))
            if errors:
                problems.append(f"{name}: {errors} errors outside tests (see {name}.log)")
        if c["total"] == 0:
            problems.append(f"{name}: no test ran (the filters select nothing)")
        for k in grand:
            grand[k] += c[k]
        lines.append(f"{name:<20} total {c['total']:>4}  passed {c['passed']:>4}  failed {c['failed']:>3}  skipped {c['skipped']:>3} ({allowed} documented)")
    for line in lines:
        print(line)
    for p in problems[:40]:
        print(f"FAIL {p}")
    if len(problems) > 40:
        print(f"FAIL ... and {len(problems) - 40} more")
    if not args:
        problems.append("no result files")
    verdict = "PASS" if not problems and grand["total"] > 0 else "FAIL"
    print(f"tests {verdict}: {grand['passed']} passed, {grand['failed']} failed, {grand['skipped']} skipped of {grand['total']} in {len(args)} processes")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
