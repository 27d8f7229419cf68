#!/usr/bin/env python3
"""Writes Tests/HistoDataTests/Fixtures/augment.json: references for HistoData's augmentations, computed here in
float64 with numpy (and scipy.ndimage for rotation), independently of the Swift code and without skimage/torchvision:

- stains: skimage's rgb2hed / hed2rgb (colour deconvolution, Ruifrok & Johnston), re-implemented from their
  definitions with skimage's matrix, and the H&E stain jitter hed2rgb(alpha * rgb2hed(x) + beta);
- colour: torchvision's brightness / contrast / saturation / grayscale definitions, hue shifts through the standard
  library's colorsys (an independent HSV implementation), a Gaussian blur as a direct 2-D convolution over numpy's
  reflect padding;
- geometry: scipy.ndimage.rotate (bilinear, mode='mirror' = numpy's reflect) and affine_transform for a zoom.

Images are planar [3, H, W] in [0, 1] with odd sizes. Usage: python3 tools/make_aug_fixtures.py
"""
import colorsys, json, math, os
import numpy as np
import scipy.ndimage as ndi

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoDataTests", "Fixtures", "augment.json")
H, W = 5, 7

RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def rgb2hed(planes):
    rgb = np.maximum(planes.transpose(1, 2, 0), 1e-6)
    stains = (np.log(rgb) / np.log(1e-6)) @ HED_FROM_RGB
    return np.maximum(stains, 0).transpose(2, 0, 1)


def hed2rgb(planes):
    log_rgb = -(planes.transpose(1, 2, 0) * -np.log(1e-6)) @ RGB_FROM_HED
    return np.clip(np.exp(log_rgb), 0, 1).transpose(2, 0, 1)


def gray(planes):
    return 0.2989 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]


def blend(a, b, factor):
    return np.clip(factor * a + (1 - factor) * b, 0, 1)


def hue_shift(planes, turns):
    out = np.empty_like(planes)
    for y in range(planes.shape[1]):
        for x in range(planes.shape[2]):
            h, s, v = colorsys.rgb_to_hsv(*planes[:, y, x])
            out[:, y, x] = colorsys.hsv_to_rgb((h + turns) % 1.0, s, v)
    return out


def blur(planes, sigma):
    radius = math.ceil(3 * sigma)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = np.outer(weights, weights) / weights.sum() ** 2
    out = np.zeros_like(planes)
    for c in range(planes.shape[0]):
        padded = np.pad(planes[c], radius, mode="reflect")
        for y in range(planes.shape[1]):
            for x in range(planes.shape[2]):
                out[c, y, x] = (padded[y:y + 2 * radius + 1, x:x + 2 * radius + 1] * kernel).sum()
    return out


def flat(a):
    return [float(v) for v in np.asarray(a).ravel()]


def main():
    rng = np.random.default_rng(2024)
    image = rng.uniform(0, 1, (3, H, W))
    image[:, 0, 0] = 1.0            # white: no stain
    image[:, 0, 1] = 0.0            # black: the 1e-6 floor
    image[:, 1, 1] = [0.8, 0.8, 0.8]  # gray: hue undefined
    image[:, 2, 3] = [0.45, 0.25, 0.6]  # haematoxylin-like
    stains = rgb2hed(image)
    arbitrary_stains = rng.uniform(-0.02, 0.15, (3, H, W))
    scale, shift = [1.08, 0.93, 1.0], [0.015, -0.01, 0.005]

    cases = {
        "rgbToHED": {"values": flat(stains)},
        "hedToRGB": {"input": flat(arbitrary_stains), "values": flat(hed2rgb(arbitrary_stains))},
        "roundTrip": {"values": flat(hed2rgb(stains))},
        "stainJitter": {"scale": scale, "shift": shift,
                        "values": flat(hed2rgb(np.array(scale)[:, None, None] * stains + np.array(shift)[:, None, None]))},
        "brightness": {"factor": 1.3, "values": flat(np.clip(image * 1.3, 0, 1))},
        "contrastLow": {"factor": 0.6, "values": flat(blend(image, gray(image).mean(), 0.6))},
        "contrastHigh": {"factor": 1.4, "values": flat(blend(image, gray(image).mean(), 1.4))},
        "saturationLow": {"factor": 0.3, "values": flat(blend(image, gray(image)[None], 0.3))},
        "saturationHigh": {"factor": 1.5, "values": flat(blend(image, gray(image)[None], 1.5))},
        "huePlus": {"turns": 0.1, "values": flat(hue_shift(image, 0.1))},
        "hueMinus": {"turns": -0.3, "values": flat(hue_shift(image, -0.3))},
        "grayscale": {"values": flat(np.repeat(gray(image)[None], 3, axis=0))},
        "blurSmall": {"sigma": 0.8, "values": flat(blur(image, 0.8))},
        "blurWide": {"sigma": 1.7, "values": flat(blur(image, 1.7))},  # radius 6 reflects more than once
    }

    # Geometry on one [9, 11] plane: scipy's rotation about the centre (positive = counter-clockwise as displayed,
    # like np.rot90) and a zoom about the centre.
    plane = rng.uniform(0, 1, (9, 11))
    geometry = {"height": 9, "width": 11, "input": flat(plane), "cases": []}
    for degrees in [15.0, -10.0]:
        rotated = ndi.rotate(plane, degrees, reshape=False, order=1, mode="mirror")
        geometry["cases"].append({"degrees": degrees, "scale": 1.0, "values": flat(rotated)})
    for scale in [1.25, 0.8]:
        centre = (np.array(plane.shape) - 1) / 2
        zoomed = ndi.affine_transform(plane, np.eye(2) / scale, offset=centre - centre / scale, order=1, mode="mirror")
        geometry["cases"].append({"degrees": 0.0, "scale": scale, "values": flat(zoomed)})

    fixture = {"shape": [3, H, W], "image": flat(image), "cases": cases,
               "geometry": geometry}
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
