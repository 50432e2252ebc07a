"""Run an ONNX model on one raw float32 input with ONNX Runtime.

Usage: run_onnx.py MODEL INPUT SHAPE OUTPUT_DIR

INPUT holds little-endian float32 values in row-major order, SHAPE is their
comma-separated shape (e.g. 8,224,224,3), and the model's single input takes
them. Each model output NAME is written to OUTPUT_DIR/NAME.f32 in the same
raw format, and OUTPUT_DIR/shapes.json maps every output name to its shape
and lists the model's metadata.
Needs the onnxruntime and numpy packages.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    model_path, input_path, shape_text, output_dir = sys.argv[1:]
    shape = [int(d) for d in shape_text.split(",")]
    data = np.fromfile(input_path, dtype="<f4")
    if data.size != int(np.prod(shape)):
        sys.exit(f"{input_path} has {data.size} values, shape {shape} needs {int(np.prod(shape))}")

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, {model_input.name: data.reshape(shape)})

    shapes = {}
    for name, value in zip(names, results):
        value.astype("<f4").tofile(os.path.join(output_dir, f"{name}.f32"))
        shapes[name] = list(value.shape)
    with open(os.path.join(output_dir, "shapes.json"), "w") as f:
        metadata = session.get_modelmeta().custom_metadata_map
        json.dump({"onnxruntime": ort.__version__, "outputs": shapes, "metadata": metadata}, f)


if __name__ == "__main__":
    main()
