#!/usr/bin/env python3
"""Writes golden fixtures for the op harness: Tests/HistoCoreTests/Fixtures/<family>.json.

Each module in tools/fixtures/ defines `cases()`, returning {case name: Case}. The name must match a
HarnessCase in Sources/HistoCore (the Swift test fails on a golden without a case). Values come from PyTorch
(float64, so the fixture is the exact answer rounded once) or, where PyTorch has no such op, from numpy.

Usage: python3 tools/make_fixtures.py [family ...]      (needs numpy; torch for most families)
"""
import importlib, json, os, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoCoreTests", "Fixtures")


class Case:
    """inputs: list of numpy arrays; fn: torch function of the inputs (as float64 tensors);
    integer: indices of inputs that are labels/indices (not differentiated);
    atol/rtol: optional overrides of the Swift case's tolerance."""

    def __init__(self, inputs, fn=None, integer=(), atol=None, rtol=None, output=None):
        self.inputs = [np.asarray(x, dtype=np.float32) for x in inputs]
        self.fn, self.integer, self.atol, self.rtol, self.output = fn, set(integer), atol, rtol, output


def rng(name):
    return np.random.default_rng(abs(hash_name(name)) % (2**32))


def hash_name(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) % 2**64
    return h


def normal(name, *shape):
    return rng(name).standard_normal(shape).astype(np.float32)


def uniform(name, lo, hi, *shape):
    return rng(name).uniform(lo, hi, shape).astype(np.float32)


def integers(name, lo, hi, *shape):
    return rng(name).integers(lo, hi, shape).astype(np.float32)


def flat(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def evaluate(name, case):
    entry = {"inputs": [flat(x) for x in case.inputs]}
    if case.fn is None:  # numpy-computed, forward only
        out = np.asarray(case.output, dtype=np.float64)
        entry.update(output=flat(out), output_shape=list(out.shape))
    else:
        import torch
        ts = []
        for i, x in enumerate(case.inputs):
            t = torch.tensor(x, dtype=torch.float64)
            if i not in case.integer:
                t.requires_grad_(True)
            ts.append(t)
        out = case.fn(*ts)
        entry.update(output=flat(out.detach().numpy()), output_shape=list(out.shape))
        if out.requires_grad:
            dy = rng(name + "/dy").uniform(-1, 1, tuple(out.shape)).astype(np.float32)
            grads = torch.autograd.grad(out, [t for t in ts if t.requires_grad],
                                        torch.tensor(dy, dtype=torch.float64), allow_unused=True)
            it = iter(grads)
            entry["cotangent"] = flat(dy)
            entry["grads"] = [None if (i in case.integer) else (lambda g: None if g is None else flat(g.numpy()))(next(it))
                              for i in range(len(ts))]
    if case.atol is not None:
        entry["atol"] = case.atol
    if case.rtol is not None:
        entry["rtol"] = case.rtol
    return entry


def main(families):
    sys.path.insert(0, HERE)
    names = families or sorted(f[:-3] for f in os.listdir(os.path.join(HERE, "fixtures"))
                               if f.endswith(".py") and not f.startswith("_"))
    os.makedirs(OUT, exist_ok=True)
    for family in names:
        module = importlib.import_module("fixtures." + family)
        cases = {name: evaluate(name, c) for name, c in module.cases().items()}
        path = os.path.join(OUT, family + ".json")
        with open(path, "w") as f:
            json.dump({"generator": "tools/make_fixtures.py", "family": family, "cases": cases}, f,
                      separators=(",", ":"))
        print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    main(sys.argv[1:])
