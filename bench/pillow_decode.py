"""Time Pillow decoding and resizing a list of images on one thread, as a
baseline for pantry's decoder.

Each image is decoded with JPEG DCT scaling (`Image.draft`) to no less than
the target side, resized so the shorter side is RESOLUTION (bilinear) and
centre-cropped to a square. Prints one JSON object with images per second.

  pillow_decode.py LIST RESOLUTION REPEAT
"""

import json
import sys
import time

import PIL
from PIL import Image


def decode_resize(path: str, side: int) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (side, side))
        image = image.convert("RGB")
    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return image.crop((left, top, left + side, top + side))


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        paths = [line.strip() for line in f if line.strip()]
    side, repeat = int(sys.argv[2]), int(sys.argv[3])
    decode_resize(paths[0], side)  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        for path in paths:
            decode_resize(path, side)
    elapsed = time.perf_counter() - start
    count = repeat * len(paths)
    print(json.dumps({"images": count, "seconds": elapsed, "images_per_s": count / elapsed,
                      "pillow": PIL.__version__}))


if __name__ == "__main__":
    main()
