#!/usr/bin/env python3
"""Writes Tests/HistoMetricsTests/Fixtures/multiclass_eval.json: small synthetic class-id masks (K = 4, ground truth
with 255 = ignore) and their per-class IoU and F1 pooled over all pixels of all images, ignored pixels skipped, with
the macro means over the K classes, background included (SPEC §1 metrics, smp get_stats(mode='multiclass'),
reduction 'macro'; a class with TP + FP + FN = 0 scores 1). Usage: python3 tools/make_multiclass_eval_fixture.py
"""
import json, os
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMetricsTests", "Fixtures", "multiclass_eval.json")
K = 4


def main():
    rng = np.random.default_rng(16)
    images = []
    for name, (h, w) in zip("abc", [(5, 7), (6, 4), (3, 9)]):
        truth = rng.choice([0, 1, 2, 3, 255], size=(h, w), p=[0.35, 0.25, 0.2, 0.1, 0.1])
        # Predictions agree with the truth on about 60 % of the pixels.
        prediction = np.where(rng.uniform(size=(h, w)) < 0.6, np.where(truth == 255, 0, truth),
                              rng.integers(0, K, size=(h, w)))
        images.append((name, prediction, truth))
    tp, fp, fn = np.zeros(K), np.zeros(K), np.zeros(K)
    for _, prediction, truth in images:
        kept = truth != 255
        for c in range(K):
            tp[c] += np.sum((prediction == c) & (truth == c) & kept)
            fp[c] += np.sum((prediction == c) & (truth != c) & kept)
            fn[c] += np.sum((prediction != c) & (truth == c) & kept)
    iou = np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), 1.0)
    f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    fixture = {"generator": "tools/make_multiclass_eval_fixture.py", "classes": K,
               "images": [{"name": n, "height": int(p.shape[0]), "width": int(p.shape[1]),
                           "prediction": p.ravel().tolist(), "truth": t.ravel().tolist()} for n, p, t in images],
               "iou": iou.tolist(), "f1": f1.tolist(), "miou": float(iou.mean()), "mean_f1": float(f1.mean())}
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print(f"{OUT}: mIoU {iou.mean():.6f}, F1 {f1.mean():.6f}")


if __name__ == "__main__":
    main()
