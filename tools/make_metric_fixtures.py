#!/usr/bin/env python3
"""Writes Tests/HistoMetricsTests/Fixtures/metrics.json: expected metric values computed with numpy/scipy on real
instance maps from the shared data folder and on copies modified by simple, exactly reproducible recipes. Only the
small JSON is committed; HistoMetricsTests re-creates the same modified masks from the same files in Swift.

Recipes, on an instance map T (H×W, 0 = background), with out-of-image pixels read as 0:
- "eroded":  P[y,x] = T[y,x] where T[y,x] > 0 and its four 4-neighbours all equal T[y,x], else 0
             (each instance eroded by a 3×3 cross);
- "shifted": P[y,x] = T[y-3, x+2], 0 where that is outside (content moved 3 rows down and 2 columns left);
- "blurred": S[y,x] = number of foreground pixels (T > 0) in the 5×5 window centred at (y,x);
             P = S >= 13 (a binary mask: its instances are its 8-connected components).
Threshold sweep scores: float32(S') / float32(25), S' the 5×5 window count of the "shifted" foreground.

Definitions (the Swift library documents the same ones):
- Confusion counts on foreground (> 0) vs background; dice = 2TP/(2TP+FP+FN), iou = TP/(TP+FP+FN), …
- AJI: Kumar et al. 2017; each GT instance takes the overlapping prediction of largest IoU (first on ties).
- AJI+: HoVer-Net get_fast_aji_plus: one-to-one pairing maximising the total IoU (linear_sum_assignment).
- Components: scipy.ndimage.label with a 3×3 structure (8-connectivity).
- hd / hd95: medpy.metric.binary.hd / hd95: surfaces = mask XOR binary_erosion(mask, 3×3 cross), distances from
  distance_transform_edt, hd = max of both directed maxima, hd95 = np.percentile of both directions pooled, 95.
- hd_points / hd95_points: the same over all foreground pixels (hd_points is checked with directed_hausdorff).
- row_hd: GenSelfDiff's max(directed_hausdorff(T, P), directed_hausdorff(P, T)) over the masks' rows.
- Ciampi sweep: thresholds np.arange(0, 0.9, 0.02), prediction = score > threshold (compared in float32, as NumPy
  1.x did for a float32 array against a float64 scalar), TP and TP+FP+FN pooled over the images.

Usage: python3 tools/make_metric_fixtures.py [DATA]   (DATA defaults to $HISTODIFF_DATA or ../shared/data)
"""
import json, os, struct, sys, zlib
import numpy as np
from scipy import ndimage, stats
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import directed_hausdorff

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "Tests", "HistoMetricsTests", "Fixtures", "metrics.json")
# Relative to the data folder: two CPM-15 tiles and one 1000×1000 MoNuSeg tile.
INSTANCE_MAPS = ["cpm15/instances/image01.png", "cpm15/instances/image02.png",
                 "monuseg-train/instances/TCGA-21-5784-01Z-00-DX1.png"]
SHIFT = (3, -2)
CROSS = ndimage.generate_binary_structure(2, 1)
EIGHT = np.ones((3, 3), dtype=bool)


def read_gray_png(path):
    """8- or 16-bit grayscale, non-interlaced PNG (the layout of the shared instance maps), numpy + zlib only."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert color == 0 and depth in (8, 16) and interlace == 0, f"{path}: unsupported layout {header}"
    bpp = depth // 8
    stride = width * bpp
    raw = zlib.decompress(idat)
    rows, prior = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            if kind == 1: line[i] = (line[i] + a) & 0xFF
            elif kind == 2: line[i] = (line[i] + b) & 0xFF
            elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 0xFF
        rows.append(bytes(line))
        prior = line
    dtype = ">u2" if depth == 16 else np.uint8
    return np.frombuffer(b"".join(rows), dtype=dtype).reshape(height, width).astype(np.int64)


def neighbour(a, dy, dx):
    """b[y,x] = a[y+dy, x+dx], 0 outside."""
    h, w = a.shape
    out = np.zeros_like(a)
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = a[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def eroded(t):
    keep = t > 0
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        keep &= neighbour(t, dy, dx) == t
    return np.where(keep, t, 0)


def shifted(t):
    return neighbour(t, -SHIFT[0], -SHIFT[1])


def window_count(fg):
    f = fg.astype(np.int64)
    return sum(neighbour(f, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3))


def components(mask):
    labels, count = ndimage.label(mask, structure=EIGHT)
    return labels.astype(np.int64), count


def pair_tables(true, pred):
    t_ids = np.unique(true[true > 0])
    p_ids = np.unique(pred[pred > 0])
    ti = np.searchsorted(t_ids, true)
    pi = np.searchsorted(p_ids, pred)
    both = (true > 0) & (pred > 0)
    inter = np.zeros((len(t_ids), len(p_ids)), dtype=np.int64)
    np.add.at(inter, (ti[both], pi[both]), 1)
    area_t = np.bincount(ti[true > 0], minlength=len(t_ids))
    area_p = np.bincount(pi[pred > 0], minlength=len(p_ids))
    union = area_t[:, None] + area_p[None, :] - inter
    return inter, union, area_t, area_p


def aji(true, pred):
    inter, union, area_t, area_p = pair_tables(true, pred)
    num = den = 0
    used = np.zeros(len(area_p), dtype=bool)
    for i in range(len(area_t)):
        if not inter[i].any():
            den += area_t[i]
            continue
        j = int(np.argmax(inter[i] / union[i]))
        num += inter[i, j]
        den += union[i, j]
        used[j] = True
    den += area_p[~used].sum()
    return float(num / den) if den else 1.0


def aji_plus(true, pred):
    inter, union, area_t, area_p = pair_tables(true, pred)
    iou = inter / (union + 1.0e-6)
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    num = inter[rows, cols].sum()
    den = union[rows, cols].sum()
    den += np.delete(area_t, rows).sum() + np.delete(area_p, cols).sum()
    return float(num / den) if den else 1.0


def surface(mask):
    return mask ^ ndimage.binary_erosion(mask, structure=CROSS, iterations=1)


def directed(a_points, b_points):
    """Distances from every pixel of a_points to the nearest pixel of b_points (medpy's __surface_distances)."""
    return ndimage.distance_transform_edt(~b_points)[a_points]


def distances(pred, true, on_surface):
    a, b = (surface(pred), surface(true)) if on_surface else (pred, true)
    d1, d2 = directed(a, b), directed(b, a)
    return float(max(d1.max(), d2.max())), float(np.percentile(np.hstack((d1, d2)), 95))


def confusion(pred, true):
    tp = int(np.sum(pred & true)); fp = int(np.sum(pred & ~true))
    fn = int(np.sum(~pred & true)); tn = int(np.sum(~pred & ~true))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "dice": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn),
            "accuracy": (tp + tn) / (tp + fp + fn + tn), "specificity": tn / (tn + fp),
            "sensitivity": tp / (tp + fn), "precision": tp / (tp + fp)}


def case(true_map, variant):
    true = true_map > 0
    if variant == "blurred":
        pred = window_count(true) >= 13
        pred_instances, _ = components(pred)
    else:
        pred_instances = eroded(true_map) if variant == "eroded" else shifted(true_map)
        pred = pred_instances > 0
    pred_cc, pred_count = components(pred)
    true_cc, true_count = components(true)
    hd, hd95 = distances(pred, true, on_surface=True)
    hd_points, hd95_points = distances(pred, true, on_surface=False)
    pa, ta = np.argwhere(pred).astype(float), np.argwhere(true).astype(float)
    assert max(directed_hausdorff(pa, ta)[0], directed_hausdorff(ta, pa)[0]) == hd_points
    rows_p, rows_t = pred.astype(float), true.astype(float)
    weights = np.arange(pred.size, dtype=np.int64).reshape(pred.shape) % 9973
    result = confusion(pred, true)
    result.update({
        "aji": aji(true_map, pred_instances), "aji_plus": aji_plus(true_map, pred_instances),
        "aji_components": aji(true_cc, pred_cc), "aji_plus_components": aji_plus(true_cc, pred_cc),
        "hd": hd, "hd95": hd95, "hd_points": hd_points, "hd95_points": hd95_points,
        "row_hd": float(max(directed_hausdorff(rows_t, rows_p)[0], directed_hausdorff(rows_p, rows_t)[0])),
        "components": {"prediction": int(pred_count), "truth": int(true_count),
                       # Σ label · (pixel index mod 9973): checks the raster-order numbering, not just the count.
                       "prediction_checksum": int((pred_cc * weights).sum()),
                       "truth_checksum": int((true_cc * weights).sum())},
    })
    return result


def sweep(maps):
    thresholds = np.arange(0, 0.9, 0.02)
    tp = np.zeros(len(thresholds), dtype=np.int64)
    union = np.zeros(len(thresholds), dtype=np.int64)
    for true_map in maps:
        scores = window_count(shifted(true_map) > 0).astype(np.float32) / np.float32(25)
        true = (true_map > 0).ravel().astype(np.int8)
        for k, threshold in enumerate(thresholds):
            total = (scores.ravel() > np.float32(threshold)).astype(np.int8) + true
            tp[k] += np.sum(total == 2)
            union[k] += np.sum(total == 1)
    jaccard = tp / (union + tp)
    dice = 2 * tp / (union + 2 * tp)
    best = int(np.argmax(jaccard))
    return {"thresholds": thresholds.tolist(), "jaccard": jaccard.tolist(), "dice": dice.tolist(),
            "best": {"threshold": float(thresholds[best]), "jaccard": float(jaccard[best]), "dice": float(dice[best])}}


def statistics():
    runs = [0.712, 0.698, 0.731, 0.705, 0.722, 0.690, 0.715, 0.727, 0.701, 0.719]
    other = [0.702, 0.701, 0.716, 0.699, 0.713, 0.688, 0.709, 0.720, 0.703, 0.705]
    quantiles = [{"p": p, "df": df, "t": float(stats.t.ppf(p, df))}
                 for df in (1, 2, 2.5, 5, 9, 30, 100, 1000) for p in (0.005, 0.05, 0.5, 0.9, 0.95, 0.975, 0.999)]
    cdf = [{"t": t, "df": df, "p": float(stats.t.cdf(t, df))} for df in (1, 3, 9, 40) for t in (-7.5, -1.2, 0.0, 0.3, 2.1, 12.0)]
    tests = []
    for a, b in ((runs, other), (runs[:3], other[:3]), ([1.0, 2.0, 3.0, 4.0], [1.5, 1.5, 3.5, 3.0])):
        result = stats.ttest_rel(a, b)
        tests.append({"a": a, "b": b, "t": float(result.statistic), "p": float(result.pvalue)})
    n = len(runs)
    return {"runs": runs, "mean": float(np.mean(runs)), "sd": float(np.std(runs, ddof=1)),
            "ci90": float(stats.t.ppf(0.95, n - 1) * np.std(runs, ddof=1) / np.sqrt(n)),
            "quantiles": quantiles, "cdf": cdf, "paired_t_tests": tests}


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HISTODIFF_DATA", os.path.join(ROOT, "..", "shared", "data"))
    maps = {path: read_gray_png(os.path.join(data, path)) for path in INSTANCE_MAPS}
    cases = {path: {variant: case(true_map, variant) for variant in ("eroded", "shifted", "blurred")}
             for path, true_map in maps.items()}
    fixture = {"shift": list(SHIFT), "cases": cases, "sweep": sweep(list(maps.values())), "statistics": statistics()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
