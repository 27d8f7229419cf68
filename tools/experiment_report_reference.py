#!/usr/bin/env python3
"""Writes Tests/HistoMethodsTests/Fixtures/experiment_report.json: a small fixed experiment (its runs, method and
label order, baseline) and the rows that `ExperimentReport.write` must put into results.json, computed with
numpy/scipy, so that ExperimentReportTests checks the Swift statistics against an independent implementation.

Per (method, labels), over its runs (seeds):
- mean = np.mean, sd = np.std(ddof=1), ci90 = mean -/+ scipy.stats.t.ppf(0.95, n - 1) * sd / sqrt(n);
  sd and ci90 are null for a single run.
- p_vs_baseline[metric] = scipy.stats.ttest_rel(method, baseline).pvalue over the seeds both ran at the same labels
  (two-sided); null where scipy gives NaN (identical pairs); the key is absent for the baseline's rows and when fewer
  than 2 seeds pair.

The data cover: full pairing (3 seeds), partial pairing (seeds 1, 2, 4 against 1, 2, 3: two pairs), identical pairs
(mt's HD95 equals the baseline's at 1/8: p is null), a single run (nulls, no p), and an extra metric (aji_plus) that
only the CSV carries.

Usage: python3 tools/experiment_report_reference.py      (needs numpy and scipy)
"""
import json, math, os
import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "experiment_report.json")
METRICS = ["dice", "iou", "aji", "hd95"]
METHODS = ["supervised", "mt", "genselfdiff"]
LABELS = ["1/8", "1/4"]
BASELINE = "supervised"

# (method, labels, seed, dice, iou, aji, hd95)
RUNS = [
    ("supervised", "1/8", 1, 0.7012, 0.5403, 0.4811, 14.20),
    ("supervised", "1/8", 2, 0.7155, 0.5568, 0.4957, 12.85),
    ("supervised", "1/8", 3, 0.6890, 0.5256, 0.4702, 15.10),
    ("supervised", "1/4", 1, 0.7431, 0.5913, 0.5230, 11.40),
    ("supervised", "1/4", 2, 0.7502, 0.6002, 0.5318, 10.95),
    ("supervised", "1/4", 3, 0.7388, 0.5858, 0.5177, 11.80),
    ("mt", "1/8", 1, 0.7321, 0.5775, 0.5102, 14.20),
    ("mt", "1/8", 2, 0.7398, 0.5869, 0.5190, 12.85),
    ("mt", "1/8", 3, 0.7264, 0.5704, 0.5044, 15.10),
    ("mt", "1/4", 1, 0.7650, 0.6194, 0.5461, 10.10),
    ("mt", "1/4", 2, 0.7712, 0.6276, 0.5533, 9.75),
    ("mt", "1/4", 4, 0.7599, 0.6128, 0.5402, 10.60),
    ("genselfdiff", "1/8", 1, 0.7893, 0.6519, 0.5720, 9.05),
    ("genselfdiff", "1/8", 2, 0.7761, 0.6342, 0.5598, 9.80),
    ("genselfdiff", "1/8", 3, 0.8012, 0.6683, 0.5841, 8.70),
    ("genselfdiff", "1/4", 1, 0.8105, 0.6813, 0.5967, 8.10),
]
EXTRA = {("genselfdiff", "1/8", 1): {"aji_plus": 0.5611}}


def summary(values):
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci90": None}
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.95, len(values) - 1) * sd / math.sqrt(len(values)))
    return {"mean": mean, "sd": sd, "ci90": [mean - half, mean + half]}


def main():
    runs = [{"method": m, "labels": l, "seed": s, "metrics": dict(zip(METRICS, v), **EXTRA.get((m, l, s), {}))}
            for (m, l, s, *v) in RUNS]
    rows = []
    for method in METHODS:
        for labels in LABELS:
            cell = {r["seed"]: r["metrics"] for r in runs if r["method"] == method and r["labels"] == labels}
            if not cell:
                continue
            row = {"method": method, "labels": labels, "runs": len(cell),
                   "metrics": {k: summary([m[k] for m in cell.values()]) for k in METRICS}}
            base = {r["seed"]: r["metrics"] for r in runs if r["method"] == BASELINE and r["labels"] == labels}
            seeds = sorted(set(cell) & set(base))
            if method != BASELINE and len(seeds) >= 2:
                p = {}
                for k in METRICS:
                    value = stats.ttest_rel([cell[s][k] for s in seeds], [base[s][k] for s in seeds]).pvalue
                    p[k] = None if math.isnan(value) else float(value)
                row["p_vs_baseline"] = p
            rows.append(row)
    fixture = {"methods": METHODS, "labels": LABELS, "baseline": BASELINE, "runs": runs, "expected": {"rows": rows}}
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT)}: {len(runs)} runs, {len(rows)} rows")


if __name__ == "__main__":
    main()
