"""Summarize a bench/run.sh results folder: median images per second per
backbone, batch and side, the pantry/ONNX Runtime ratio, peak memory, and
decode throughput.

  summarize.py RESULTS WORK

RESULTS holds NAME.json (program output) and NAME.time (/usr/bin/time -v);
WORK contains the feature files that both sides wrote, which are compared.
"""

import glob
import json
import os
import re
import statistics
import sys

import numpy as np


def peak_rss_mib(stem: str) -> float:
    with open(stem + ".time") as f:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
    return int(match.group(1)) / 1024 if match else float("nan")


def collect(results: str, side: str, kind: str, batch: int):
    """Gather the timed runs of one case over all rounds, and its max peak RSS."""
    times, rss = [], []
    for path in sorted(glob.glob(os.path.join(results, f"{side}-{kind}-b{batch}-r*.json"))):
        with open(path) as f:
            times.extend(json.load(f)["times_s"])
        rss.append(peak_rss_mib(path[: -len(".json")]))
    return times, (max(rss) if rss else float("nan"))


def feature_difference(work: str, kind: str, batch: int) -> str:
    paths = [os.path.join(work, f"{side}-{kind}-b{batch}.f32") for side in ("pantry", "ort")]
    if not all(os.path.exists(p) for p in paths):
        return "-"
    pantry, ort = (np.fromfile(p, dtype="<f4") for p in paths)
    if pantry.shape != ort.shape:
        return f"shape {pantry.shape} vs {ort.shape}"
    return f"{np.abs(pantry - ort).max():.1e}"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, work = sys.argv[1:]

    print()
    print("backbone            batch  pantry img/s  ORT img/s  pantry/ORT  "
          "pantry RSS MiB  ORT RSS MiB  max |feature diff|  runs")
    for kind in ("efficientnet-lite0", "efficientnet-lite2"):
        for batch in (1, 32):
            ort_times, ort_rss = collect(results, "ort", kind, batch)
            pantry_times, pantry_rss = collect(results, "pantry", kind, batch)
            if not ort_times:
                continue
            ort_rate = batch / statistics.median(ort_times)
            if pantry_times:
                pantry_rate = batch / statistics.median(pantry_times)
                pantry_text, ratio = f"{pantry_rate:12.1f}", f"{pantry_rate / ort_rate:10.2f}"
            else:
                pantry_text, ratio = f"{'-':>12}", f"{'-':>10}"
            print(f"{kind:<19} {batch:>5}  {pantry_text}  {ort_rate:9.1f}  {ratio}  "
                  f"{pantry_rss:14.0f}  {ort_rss:11.0f}  {feature_difference(work, kind, batch):>18}"
                  f"  {len(pantry_times)}/{len(ort_times)}")

    print()
    print("decode + resize to 224, one thread   images/s  peak RSS MiB")
    for path in sorted(glob.glob(os.path.join(results, "decode-*.json"))):
        with open(path) as f:
            figures = json.load(f)
        name = os.path.basename(path)[len("decode-"): -len(".json")]
        print(f"{name:<36} {figures['images_per_s']:8.1f}  {peak_rss_mib(path[:-5]):12.0f}")


if __name__ == "__main__":
    main()
