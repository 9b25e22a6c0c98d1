"""Photo-like sample images, drawn deterministically from a seed.

Photo-like means what a dhash sees in a real photo: smooth sky and ground gradients, soft-edged
shapes with shading, low-frequency texture, vignetting and sensor grain; not white noise, whose
hash would be meaningless. The demo, the benchmarks and the tests share this one generator.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def realistic_photo(width: int, height: int, seed: int) -> Image.Image:
    """An RGB photo-like image; the same arguments always give the same pixels."""
    rng = np.random.default_rng(seed)
    base_w = min(width, 640)
    base_h = max(1, round(base_w * height / width))
    base = _scene(base_w, base_h, rng)
    img = (
        base
        if (base_w, base_h) == (width, height)
        else base.resize((width, height), Image.Resampling.BICUBIC)
    )
    # Full-resolution detail: correlated texture (about two pixels wide) plus sensor grain.
    half = rng.standard_normal((max(1, height // 2), max(1, width // 2)), dtype=np.float32)
    texture = np.asarray(Image.fromarray(half).resize((width, height), Image.Resampling.BICUBIC))
    luma = texture * float(rng.uniform(3.0, 7.0))
    luma += rng.standard_normal((height, width), dtype=np.float32) * float(rng.uniform(1.0, 2.5))
    arr = np.asarray(img, dtype=np.float32)
    arr += luma[..., None]
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _scene(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = rng.uniform(0.3, 0.7) * height + rng.uniform(-0.15, 0.15) * (xx - width / 2)
    sky_top, sky_low = rng.uniform(60, 255, 3), rng.uniform(120, 255, 3)
    ground_near, ground_far = rng.uniform(10, 140, 3), rng.uniform(40, 200, 3)
    t_sky = np.clip(yy / np.maximum(horizon, 1), 0, 1)[..., None]
    t_ground = np.clip((yy - horizon) / np.maximum(height - horizon, 1), 0, 1)[..., None]
    sky = sky_top * (1 - t_sky) + sky_low * t_sky
    ground = ground_far * (1 - t_ground) + ground_near * t_ground
    arr = np.where((yy < horizon)[..., None], sky, ground)
    # Low-frequency texture: a coarse random field upsampled smoothly (clouds, terrain).
    coarse = rng.normal(0, 1, (rng.integers(3, 8), rng.integers(3, 8))).astype(np.float32)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    arr = arr + np.asarray(field)[..., None] * rng.uniform(6, 22)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        _shape(draw, width, height, rng)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.8))))
    # Mid-frequency detail (foliage, fabric): a finer blurred field, then vignetting.
    fine = rng.normal(0, 1, (max(2, height // 8), max(2, width // 8))).astype(np.float32)
    detail = np.asarray(Image.fromarray(fine).resize((width, height), Image.Resampling.BICUBIC))
    r = np.hypot((xx - width / 2) / width, (yy - height / 2) / height)
    vignette = 1.0 - rng.uniform(0.1, 0.45) * r**2
    arr = np.asarray(img, dtype=np.float32) * vignette[..., None] + detail[..., None] * 6
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _shape(draw: ImageDraw.ImageDraw, width: int, height: int, rng: np.random.Generator) -> None:
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx = rng.uniform(0.03, 0.3) * width
    ry = rng.uniform(0.03, 0.3) * height
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    kind = rng.integers(0, 3)
    if kind == 0:
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=color)
    elif kind == 1:
        draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=color)
    else:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        points = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
        draw.polygon([(float(x), float(y)) for x, y in points], fill=color)
