#!/usr/bin/env python3
"""PathSegDiff's FCN head and weighted cross-entropy (SPEC §4) in PyTorch float64, written from the SPEC, on a tiny
input. Writes Tests/HistoMethodsTests/Fixtures/pathsegdiff_head.safetensors; PathSegDiffTests loads the initial
weights into our head, runs the same features and labels, and compares the loss, the logits and the gradients.

Head: Conv2d(F->w0, 3, p1) -> BN -> ReLU -> ConvTranspose2d(w0->w1, 4, s2, p1) -> BN -> ReLU ->
ConvTranspose2d(w1->w2, 4, s2, p1) -> BN -> ReLU -> Conv2d(w2->K, 3, p1), training mode (batch statistics).
Loss: F.cross_entropy(logits, labels, weight=W, ignore_index=255), W_c = 1 - N_c/N over the labelled pixels.

Usage: python3 tools/pathsegdiff_reference.py      (needs torch, numpy, safetensors)
"""
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "pathsegdiff_head.safetensors")

IMAGES, FEATURES, WIDTHS, CLASSES, GRID, DONT_CARE = 2, 12, (8, 6, 4), 3, 4, 255


class Head(nn.Module):
    """Attribute names are the Swift PathSegDiffHead's."""

    def __init__(self, features, widths, classes):
        super().__init__()
        self.convIn = nn.Conv2d(features, widths[0], 3, padding=1)
        self.normIn = nn.BatchNorm2d(widths[0])
        self.up1 = nn.ConvTranspose2d(widths[0], widths[1], 4, stride=2, padding=1)
        self.normUp1 = nn.BatchNorm2d(widths[1])
        self.up2 = nn.ConvTranspose2d(widths[1], widths[2], 4, stride=2, padding=1)
        self.normUp2 = nn.BatchNorm2d(widths[2])
        self.convOut = nn.Conv2d(widths[2], classes, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.normIn(self.convIn(x)))
        h = F.relu(self.normUp1(self.up1(h)))
        return self.convOut(F.relu(self.normUp2(self.up2(h))))


def class_weights(labels, classes):
    valid = labels[labels != DONT_CARE]
    counts = np.array([(valid == c).sum() for c in range(classes)], dtype=np.float64)
    return 1 - counts / counts.sum()


def main():
    torch.manual_seed(17)
    rng = np.random.default_rng(17)
    head = Head(FEATURES, WIDTHS, CLASSES).double()
    for norm in (head.normIn, head.normUp1, head.normUp2):  # non-trivial affine parameters
        norm.weight.data = torch.from_numpy(rng.uniform(0.5, 1.5, norm.weight.shape))
        norm.bias.data = torch.from_numpy(rng.normal(0, 0.1, norm.bias.shape))
    initial = {f"initial.{k}": v.detach().numpy().astype(np.float32).astype(np.float64)
               for k, v in head.state_dict().items() if v.dtype.is_floating_point}
    head.load_state_dict({k[len("initial."):]: torch.from_numpy(v) for k, v in initial.items()}, strict=False)
    features = rng.normal(size=(IMAGES, FEATURES, GRID, GRID)).astype(np.float32).astype(np.float64)
    side = 4 * GRID
    labels = rng.choice(CLASSES, size=(IMAGES, side, side), p=[0.6, 0.3, 0.1])
    labels[rng.random(labels.shape) < 0.15] = DONT_CARE
    weights = class_weights(labels, CLASSES)
    x = torch.from_numpy(features).requires_grad_(True)
    head.train()
    logits = head(x)
    loss = F.cross_entropy(logits, torch.from_numpy(labels), weight=torch.from_numpy(weights),
                           ignore_index=DONT_CARE)
    loss.backward()
    out = dict(initial)
    out["input.features"] = features
    out["input.labels"] = labels.astype(np.float64)
    out["class_weights"] = weights
    out["logits"] = logits.detach().numpy()
    out["loss"] = np.array([loss.item()])
    out["grad.features"] = x.grad.numpy()
    for name, p in head.named_parameters():
        out[f"grad.{name}"] = p.grad.numpy()
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    metadata = {"generator": "tools/pathsegdiff_reference.py", "widths": ",".join(map(str, WIDTHS)),
                "classes": str(CLASSES)}
    save_file(out, OUT, metadata=metadata)
    print(f"wrote {OUT}: loss {loss.item():.6f}, weights {weights.round(4).tolist()}")


if __name__ == "__main__":
    main()
