"""Time an ONNX backbone in ONNX Runtime on a raw float32 input file.

Prints one JSON object with the wall time of each timed run in seconds.
Runs on the CPU execution provider with sequential execution and
`--threads` intra-op threads.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="ONNX model file")
    parser.add_argument("--input", required=True, help="raw little-endian float32 NHWC input")
    parser.add_argument("--batch", type=int, required=True, help="images in the input")
    parser.add_argument("--resolution", type=int, required=True, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--iters", type=int, default=2, help="timed runs (default 2)")
    parser.add_argument("--output", help="write the features of the last run here (raw float32)")
    args = parser.parse_args()

    shape = (args.batch, args.resolution, args.resolution, 3)
    data = np.fromfile(args.input, dtype="<f4")
    if data.size != np.prod(shape):
        parser.error(f"{args.input} has {data.size} values, shape {shape} needs {np.prod(shape)}")
    data = data.reshape(shape)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: data}

    for _ in range(args.warmup):
        session.run(["features"], feeds)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        (features,) = session.run(["features"], feeds)
        times.append(time.perf_counter() - start)
    if args.output:
        features.astype("<f4").tofile(args.output)
    print(json.dumps({"times_s": times, "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
