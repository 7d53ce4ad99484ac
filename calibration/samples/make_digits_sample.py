"""Write calibration/samples/digits-20: 20 real scikit-learn digits (2 per class) as 8x8 PNGs
and the manifest that lists them. Run from the repository root:

    .venv/bin/python calibration/samples/make_digits_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

OUT = Path(__file__).parent / "digits-20"


def main() -> None:
    digits = load_digits()
    OUT.mkdir(exist_ok=True)
    names = []
    for label in range(10):
        for index in np.flatnonzero(digits.target == label)[:2]:
            # Digits are 0..16; scale to 8 bits so the image loader's /255 gives back ~x/16.
            pixels = np.round(digits.images[index] * 255.0 / 16.0).astype(np.uint8)
            name = f"{label}-{index:04d}.png"
            Image.fromarray(pixels, mode="L").save(OUT / name)
            names.append(name)
    lines = [
        "# 20 real handwritten digits from scikit-learn's load_digits (2 per class), written by",
        "# calibration/samples/make_digits_sample.py; small enough for tests.",
        "name: digits-20",
        "input_shape: [1, 8, 8]",
        "preprocessing: 8-bit gray PNG, bilinear resize to 8x8 (already 8x8), scaled to [0, 1] (x / 255)",
        "images:",
        *[f"  - {name}" for name in names],
        "",
    ]
    (OUT / "manifest.yaml").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
