#!/usr/bin/env python3
"""Writes Tests/HistoMetricsTests/Fixtures/instances/: crops of real CPM-15 instance maps with the boundary targets,
watershed labels and instance scores that scikit-image and the reference implementations below compute on them.
HistoMetricsTests compare the Swift implementations with these files exactly.

For each of three tiles, the 128×128 window (on a stride-16 grid) with the most pairs of touching instances:
- crop_N.png             16-bit instance map (ids as in the source tile; 0 = background)
- boundary_N_wW.png      8-bit three-class target, width W = 1, 2, 3: find_boundaries(crop, mode='inner')
                         (connectivity 1) dilated W − 1 times by a 3×3 cross, kept on the foreground: 2 there,
                         1 on the rest of the foreground, 0 on the background
- boundary_binary_N.png  the same with W = 2 on the 8-connected components of the crop's foreground (a binary mask)
- elevation_N.png        16-bit: round(65535 · (1 − gaussian_filter(interior, 1.5))), interior = target W 2 == 1
- markers_N.png          16-bit: 8-connected components of elevation < 32768 (interior "probability" > 1/2),
                         every third one dropped (so that some basins are flooded from a neighbour's marker)
- mask_N.png             8-bit 0/255: gaussian_filter(foreground, 1) > 1/2
- watershed_N.png        16-bit: skimage.segmentation.watershed(elevation, markers, mask=mask) (connectivity 1)
- watershed_coarse_N.png 16-bit: skimage.segmentation.watershed(elevation // 8192, markers) without a mask: 8
                         levels, so plateaus are large and ties decide (push order, neighbour order up, left,
                         right, down)
- scores.json            per crop, for predictions "watershed" (the map above) and "components" (8-connected
                         components of the mask, touching nuclei merged) against the crop: AJI+ (HoVer-Net
                         get_fast_aji_plus with the exact IoU) and detection TP/FP/FN (IoU ≥ 0.5, one-to-one by
                         the largest total IoU among those pairs)

Usage: python3 tools/instance_fixtures.py [DATA]   (DATA defaults to $HISTODIFF_DATA or ../shared/data)
Needs numpy, scipy, scikit-image and Pillow; the tests need none of them.
"""
import json, os, sys
import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import find_boundaries, watershed

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMetricsTests", "Fixtures", "instances")
TILES = ["image01", "image05", "image10"]
SIZE = 128
CROSS = ndimage.generate_binary_structure(2, 1)
EIGHT = np.ones((3, 3), dtype=bool)


def write(name, array):
    Image.fromarray(array).save(os.path.join(OUT, name), optimize=True)


def touching_pairs(labels):
    pairs = set()
    for a, b in [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])]:
        keep = (a > 0) & (b > 0) & (a != b)
        pairs |= set(zip(a[keep].tolist(), b[keep].tolist()))
    return len(pairs)


def best_window(instances):
    h, w = instances.shape
    windows = [(y, x) for y in range(0, h - SIZE + 1, 16) for x in range(0, w - SIZE + 1, 16)]
    return max(windows, key=lambda o: touching_pairs(instances[o[0]:o[0] + SIZE, o[1]:o[1] + SIZE]))


def boundary_target(instances, width):
    edge = find_boundaries(instances, connectivity=1, mode="inner")
    if width > 1:
        edge = ndimage.binary_dilation(edge, CROSS, iterations=width - 1)
    target = (instances > 0).astype(np.uint8)
    target[edge & (instances > 0)] = 2
    return target


def iou_table(truth, prediction):
    """Intersections and IoUs of every (true id, predicted id) pair, ids ascending."""
    t_ids, p_ids = np.unique(truth[truth > 0]), np.unique(prediction[prediction > 0])
    inter = np.array([[np.sum((truth == t) & (prediction == p)) for p in p_ids] for t in t_ids], dtype=np.int64)
    t_area = np.array([np.sum(truth == t) for t in t_ids])[:, None]
    p_area = np.array([np.sum(prediction == p) for p in p_ids])[None, :]
    union = t_area + p_area - inter
    return inter, union, t_area[:, 0], p_area[0]


def aji_plus(truth, prediction):
    """HoVer-Net get_fast_aji_plus: one-to-one pairs by linear_sum_assignment on the IoU, overlapping pairs kept."""
    inter, union, t_area, p_area = iou_table(truth, prediction)
    iou = inter / union
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    i_sum = int(inter[rows, cols].sum())
    u_sum = int(union[rows, cols].sum())
    u_sum += int(np.delete(t_area, rows).sum()) + int(np.delete(p_area, cols).sum())
    return i_sum, u_sum


def detection(truth, prediction):
    """TP/FP/FN of a one-to-one matching at IoU ≥ 0.5 that maximises the total IoU of its pairs."""
    inter, union, t_area, p_area = iou_table(truth, prediction)
    eligible = np.where(2 * inter >= union, inter / union, 0.0)
    rows, cols = linear_sum_assignment(-eligible)
    tp = int(np.sum(eligible[rows, cols] > 0))
    return tp, len(p_area) - tp, len(t_area) - tp


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HISTODIFF_DATA",
                                                                os.path.join(HERE, "..", "..", "shared", "data"))
    os.makedirs(OUT, exist_ok=True)
    scores = {}
    for n, tile in enumerate(TILES):
        instances = np.array(Image.open(os.path.join(data, "cpm15", "instances", tile + ".png")))
        y, x = best_window(instances)
        crop = instances[y:y + SIZE, x:x + SIZE].astype(np.uint16)
        write(f"crop_{n}.png", crop)
        for width in (1, 2, 3):
            write(f"boundary_{n}_w{width}.png", boundary_target(crop, width))
        components = ndimage.label(crop > 0, structure=EIGHT)[0]
        write(f"boundary_binary_{n}.png", boundary_target(components, 2))
        interior = (boundary_target(crop, 2) == 1).astype(np.float64)
        elevation = np.round(65535 * (1 - ndimage.gaussian_filter(interior, 1.5))).astype(np.uint16)
        markers = ndimage.label(elevation < 32768, structure=EIGHT)[0].astype(np.uint16)
        markers[markers % 3 == 0] = 0
        mask = ndimage.gaussian_filter((crop > 0).astype(np.float64), 1) > 0.5
        flooded = watershed(elevation.astype(np.float64), markers, mask=mask).astype(np.uint16)
        write(f"elevation_{n}.png", elevation)
        write(f"markers_{n}.png", markers)
        write(f"mask_{n}.png", (mask * 255).astype(np.uint8))
        write(f"watershed_{n}.png", flooded)
        coarse = watershed((elevation // 8192).astype(np.float64), markers).astype(np.uint16)
        write(f"watershed_coarse_{n}.png", coarse)
        merged = ndimage.label(mask, structure=EIGHT)[0]
        scores[f"crop_{n}"] = {"source": f"cpm15/instances/{tile}.png", "y": y, "x": x}
        for name, prediction in [("watershed", flooded), ("components", merged)]:
            i, u = aji_plus(crop, prediction)
            tp, fp, fn = detection(crop, prediction)
            scores[f"crop_{n}"][name] = {"aji_plus_intersection": i, "aji_plus_union": u, "tp": tp, "fp": fp, "fn": fn}
        print(tile, (y, x), "touching pairs", touching_pairs(crop), scores[f"crop_{n}"])
    with open(os.path.join(OUT, "scores.json"), "w") as f:
        json.dump(scores, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
