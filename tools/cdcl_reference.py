#!/usr/bin/env python3
"""CDCL's unlabelled losses (SPEC §5) in PyTorch float64, written from the SPEC, on fixed small inputs. Writes
Tests/HistoMethodsTests/Fixtures/cdcl_losses.safetensors; CDCLTests computes ours on the same inputs and compares
values and gradients.

Inputs (2 unlabelled images, logits at 1/4 resolution 32x32, projections at 1/8 resolution 16x16 with D = 4, so
the 8x8 patch grid has patches of 2x2 and FS takes the values 0, 1/4, ..., 1):
- student and teacher logits [2, 2, 32, 32] whose argmax is foreground with a per-patch probability of 0.05, 0.5
  or 0.95 (so that BDPs, FDPs and MPs all occur); the teacher's argmax differs from the student's on ~10% of pixels;
- student and teacher projections [2, 4, 16, 16], l2-normalised over channels;
- the previous batch's bank: 512 entries of features [512, 4], labels and FS.

Reference definitions (SPEC §5):
- pseudo-labels at projector resolution: argmax of the 1/4 logits subsampled with stride 2 (rows and columns 0, 2, ...);
- FS of a patch = foreground pseudo-labels / pixels of the patch; BDP FS <= 0.3, FDP FS >= 0.7; anchors: student
  pixels of BDPs and FDPs (FS from the student's labels); entries of the teacher carry the teacher's labels and FS;
- bank = student entries, teacher entries (current batch, with gradients) and the previous batch (detached);
- J(q, k) = [y_q != y_k] and, paper rule, k in a patch of the opposite type (FS_k >= 0.7 for a BDP anchor,
  FS_k <= 0.3 for an FDP anchor); code rule, FS_q + FS_k <= 1;
- l(q) = -log(exp(p - m) / (exp(p - m) + sum_k J exp(n_k - m) + 1e-8) + 1e-8), p = q.k+/tau, n_k = q.k/tau,
  m = max(p, max_k n_k), tau = 0.1; L_contr = mean of l over the anchors (0 without anchors);
- L_cons = CE(student logits, argmax teacher logits), mean over pixels; with the threshold 0.6, the mean over every
  pixel of CE * [teacher max-probability > 0.6];
- L_ent = mean over pixels of -sum_c p log p, p = softmax(student logits).
Gradients are with respect to the student projections, the teacher projections and the bank's features (zero:
detached) for L_contr, and the student logits for L_cons and L_ent.

Usage: python3 tools/cdcl_reference.py      (needs torch, numpy, safetensors)
"""
import os
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "cdcl_losses.safetensors")

IMAGES, CLASSES, DIM, SIDE, GRID = 2, 2, 4, 16, 8
TAU, BACKGROUND, FOREGROUND, THRESHOLD = 0.1, 0.3, 0.7, 0.6
rng = np.random.default_rng(14)


def structured_logits(flip_from=None):
    """Logits [B, 2, 2*SIDE, 2*SIDE]: foreground argmax with a per-patch probability (a patch of the 1/8 grid
    covers 4x4 logit pixels); with `flip_from`, that argmax with ~10% of the pixels flipped."""
    side = 2 * SIDE
    if flip_from is None:
        shares = rng.choice([0.05, 0.5, 0.95], size=(IMAGES, GRID, GRID))
        share = np.kron(shares, np.ones((side // GRID, side // GRID)))
        foreground = rng.random((IMAGES, side, side)) < share
    else:
        foreground = flip_from ^ (rng.random(flip_from.shape) < 0.1)
    margin = np.abs(rng.normal(size=foreground.shape)) + 0.1
    logits = rng.normal(size=(IMAGES, CLASSES, side, side))
    logits[:, 1] = logits[:, 0] + np.where(foreground, margin, -margin)
    return logits, foreground


def normalised(shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


student_logits, student_foreground = structured_logits()
teacher_logits, _ = structured_logits(student_foreground)
student_projections = normalised((IMAGES, DIM, SIDE, SIDE))
teacher_projections = normalised((IMAGES, DIM, SIDE, SIDE))
previous_count = IMAGES * SIDE * SIDE
previous_features = normalised((previous_count, DIM))
previous_labels = (rng.random(previous_count) < 0.5).astype(np.float64)
previous_scores = rng.integers(0, 5, previous_count) / 4.0


def projector_labels(logits):
    return logits.argmax(1)[:, ::2, ::2]


def entries(projections, labels, grid=GRID):
    """Features [P, D], labels [P], FS [P] of each pixel's patch, row-major per image."""
    b, d, h, w = projections.shape
    patch = h // grid
    fg = (labels > 0).to(projections.dtype)
    scores = fg.reshape(b, grid, patch, grid, patch).mean(dim=(2, 4))
    scores = scores.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return projections.permute(0, 2, 3, 1).reshape(-1, d), labels.reshape(-1).to(projections.dtype), scores.reshape(-1)


def contrast_loss(student, teacher, previous, rule, tau=TAU):
    """L_contr of student and teacher entries (features, labels, FS) with the previous batch's entries (or None)."""
    s_feat, s_lab, s_fs = student
    t_feat, t_lab, t_fs = teacher
    bank = [student, teacher] + ([(previous[0].detach(), previous[1], previous[2])] if previous else [])
    bank_feat, bank_lab, bank_fs = (torch.cat([e[i] for e in bank]) for i in range(3))
    q_bdp, q_fdp = s_fs <= BACKGROUND, s_fs >= FOREGROUND
    anchors = q_bdp | q_fdp
    different = s_lab[:, None] != bank_lab[None, :]
    if rule == "paper":
        patches = ((q_bdp[:, None] & (bank_fs >= FOREGROUND)[None, :])
                   | (q_fdp[:, None] & (bank_fs <= BACKGROUND)[None, :]))
    else:
        patches = (s_fs[:, None] + bank_fs[None, :]) <= 1.0
    j = (different & patches).to(s_feat.dtype)
    pos = (s_feat * t_feat).sum(1) / tau
    neg = s_feat @ bank_feat.T / tau
    m = torch.maximum(pos, neg.max(1).values)
    e_pos = torch.exp(pos - m)
    denominator = e_pos + (j * torch.exp(neg - m[:, None])).sum(1) + 1e-8
    losses = -torch.log(e_pos / denominator + 1e-8)
    return (losses * anchors.to(losses.dtype)).sum() / max(int(anchors.sum()), 1), int(anchors.sum())


def contrast(s_proj, t_proj, prev_feat, rule):
    previous = (prev_feat, torch.from_numpy(previous_labels), torch.from_numpy(previous_scores))
    return contrast_loss(entries(s_proj, projector_labels(torch.from_numpy(student_logits))),
                         entries(t_proj, projector_labels(torch.from_numpy(teacher_logits))), previous, rule)


def consistency(student, teacher, threshold=None):
    labels = teacher.argmax(1)
    if threshold is None:
        return F.cross_entropy(student, labels)
    confident = (F.softmax(teacher, 1).max(1).values > threshold).to(student.dtype)
    return (F.cross_entropy(student, labels, reduction="none") * confident).mean()


def entropy(student):
    log_p = F.log_softmax(student, 1)
    return -(log_p.exp() * log_p).sum(1).mean()


def main():
    out = {
        "input.student_logits": student_logits, "input.teacher_logits": teacher_logits,
        "input.student_projections": student_projections, "input.teacher_projections": teacher_projections,
        "input.previous_features": previous_features, "input.previous_labels": previous_labels,
        "input.previous_scores": previous_scores,
    }
    anchors = {}
    for rule in ["paper", "code"]:
        s = torch.tensor(student_projections, requires_grad=True)
        t = torch.tensor(teacher_projections, requires_grad=True)
        p = torch.tensor(previous_features, requires_grad=True)
        value, anchors[rule] = contrast(s, t, p, rule)
        value.backward()
        out[f"contrast_{rule}.value"] = np.array([value.item()])
        out[f"contrast_{rule}.grad_student"] = s.grad.numpy()
        out[f"contrast_{rule}.grad_teacher"] = t.grad.numpy()
        # Detached: no gradient reaches the previous batch's features.
        out[f"contrast_{rule}.grad_previous"] = np.zeros_like(previous_features) if p.grad is None else p.grad.numpy()
    teacher = torch.from_numpy(teacher_logits)
    for name, loss in [("consistency", lambda x: consistency(x, teacher)),
                       ("consistency_threshold", lambda x: consistency(x, teacher, THRESHOLD)),
                       ("entropy", entropy)]:
        x = torch.tensor(student_logits, requires_grad=True)
        value = loss(x)
        value.backward()
        out[f"{name}.value"] = np.array([value.item()])
        out[f"{name}.grad"] = x.grad.numpy()
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    metadata = {"generator": "tools/cdcl_reference.py", "tau": str(TAU), "threshold": str(THRESHOLD),
                "grid": str(GRID), "anchors_paper": str(anchors["paper"])}
    save_file(out, OUT, metadata=metadata)
    print({k: float(v[0]) for k, v in out.items() if k.endswith(".value")}, "anchors", anchors["paper"],
          "of", IMAGES * SIDE * SIDE)


if __name__ == "__main__":
    main()
