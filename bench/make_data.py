"""Write benchmark inputs: a seeded random NHWC float32 tensor, or a
synthetic photo-like JPEG.

  make_data.py tensor OUT BATCH RESOLUTION
  make_data.py jpeg OUT WIDTH HEIGHT
"""

import sys

import numpy as np


def write_tensor(path: str, batch: int, resolution: int) -> None:
    # Values in [-1, 1), the range of (pixel - 127) / 128.
    rng = np.random.default_rng(batch * 1000 + resolution)
    data = rng.uniform(-1.0, 1.0, size=(batch, resolution, resolution, 3))
    data.astype("<f4").tofile(path)


def write_jpeg(path: str, width: int, height: int) -> None:
    """Smooth colour fields, hard-edged shapes and sensor-like noise, so the
    JPEG has the entropy of a real photo rather than of flat colour."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(12)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 90 * np.sin(x / 700 + 1.0) * np.cos(y / 500),
            128 + 80 * np.sin(y / 400 + 2.0),
            128 + 70 * np.cos((x + y) / 900),
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(300):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        size = rng.integers(40, 600)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + size, y0 + size * 0.7], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + size * 0.6, y0 + size], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    pixels = np.asarray(image).astype(np.float32)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(path, quality=90)


def main() -> None:
    if len(sys.argv) != 5 or sys.argv[1] not in ("tensor", "jpeg"):
        sys.exit(__doc__)
    _, kind, out, a, b = sys.argv
    if kind == "tensor":
        write_tensor(out, int(a), int(b))
    else:
        write_jpeg(out, int(a), int(b))


if __name__ == "__main__":
    main()
