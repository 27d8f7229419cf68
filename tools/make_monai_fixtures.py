#!/usr/bin/env python3
"""Writes Tests/HistoDataTests/Fixtures/monai.json: references for HistoData's MONAI transforms (DTSeg's augmentation,
SPEC §1) at fixed parameters, from MONAI's documented definitions written out here in float64 with numpy (and
torch.nn.functional.interpolate for the zoom, which is what MONAI's Zoom calls):

- AdjustContrast: ((x - min) / (range + 1e-7)) ** gamma * range + min over the whole image;
- GaussianSmooth: separable erf-approximated kernels over +-int(max(4 sigma, 0.5) + 0.5) taps, not renormalised,
  zero padding; sigma[0] runs along the first spatial axis (rows index = y);
- HistogramShift: np.interp from control points evenly spaced over [min, max] to the floating ones;
- Zoom(keep_size=True): F.interpolate(scale_factor, recompute_scale_factor=True, mode area / nearest), then
  ResizeWithPadOrCrop back to the input size (symmetric edge padding, centre crop from size//2 - target//2).

The image is planar [3, H, W] on the 0-255 scale; the label map holds 0, 1, 2 and 255 (ignore).
Usage: python3 tools/make_monai_fixtures.py
"""
import json, math, os
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoDataTests", "Fixtures", "monai.json")
H, W = 9, 11


def contrast(x, gamma):
    low, span = x.min(), x.max() - x.min()
    return ((x - low) / (span + 1e-7)) ** gamma * span + low


def erf_kernel(sigma):
    tail = int(max(sigma * 4.0, 0.5) + 0.5)
    t = 1 / (math.sqrt(2) * sigma)
    return np.array([max(0.0, 0.5 * (math.erf(t * (k + 0.5)) - math.erf(t * (k - 0.5))))
                     for k in range(-tail, tail + 1)])


def convolve_zero_padded(line, kernel):
    radius = len(kernel) // 2
    padded = np.concatenate([np.zeros(radius), line, np.zeros(radius)])
    return np.array([np.dot(padded[i:i + len(kernel)], kernel) for i in range(len(line))])


def smooth(x, sigma_down, sigma_across):
    down, across = erf_kernel(sigma_down), erf_kernel(sigma_across)
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        rows = np.stack([convolve_zero_padded(row, across) for row in x[c]])
        out[c] = np.stack([convolve_zero_padded(col, down) for col in rows.T]).T
    return out


def histogram_shift(x, floating):
    low, high = x.min(), x.max()
    reference = np.linspace(0, 1, len(floating)) * (high - low) + low
    return np.interp(x, reference, np.asarray(floating) * (high - low) + low)


def zoom_keep_size(x, factor, mode, dtype):
    zoomed = F.interpolate(torch.tensor(x, dtype=dtype)[None], scale_factor=[factor, factor], mode=mode,
                           recompute_scale_factor=True)[0].double().numpy()
    out = zoomed
    for axis, size in ((1, x.shape[1]), (2, x.shape[2])):
        diff = size - out.shape[axis]
        if diff > 0:
            pad = [(0, 0)] * 3
            pad[axis] = (diff // 2, diff - diff // 2)
            out = np.pad(out, pad, mode="edge")
        elif diff < 0:
            start = out.shape[axis] // 2 - size // 2
            out = np.take(out, range(start, start + size), axis=axis)
    return out


def flat(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def main():
    rng = np.random.default_rng(16)
    image = rng.uniform(0, 255, (3, H, W)).astype(np.float32).astype(np.float64)
    label = rng.choice([0, 1, 2, 255], size=(1, H, W), p=[0.4, 0.3, 0.2, 0.1]).astype(np.float64)
    fixture = {
        "generator": "tools/make_monai_fixtures.py", "shape": [3, H, W], "image": flat(image), "label": flat(label),
        "contrast": [{"gamma": g, "output": flat(contrast(image, g))} for g in (1.37, 1.92)],
        "smooth": [{"sigma_down": d, "sigma_across": a, "output": flat(smooth(image, d, a))}
                   for d, a in ((1.6, 0.7), (1.05, 1.9))],
        "histogram_shift": [{"floating": f, "output": flat(histogram_shift(image, f))}
                            for f in ([0, 0.31, 1], [0, 0.2, 0.7, 1])],
        "zoom": [{"factor": z, "image": flat(zoom_keep_size(image, z, "area", torch.float64)),
                  "label": flat(zoom_keep_size(label, z, "nearest", torch.float32))}
                 for z in (0.5, 0.73, 1.37, 2.0)],
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print(f"{OUT}: {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
