#!/usr/bin/env python3
"""One training step of each SSL4MIS-family method of HistoDiff (mt, uamt, em) in PyTorch, written from SPEC §0.5,
§0.6 and §8 (and the SSL4MIS scripts they summarise), on a tiny fixed configuration. Writes
Tests/HistoMethodsTests/Fixtures/mean_teacher_family_step.safetensors: the inputs, the initial student and teacher
weights, and per method the loss terms and the weights after the step; MeanTeacherFamilyTests runs our methods on the
same state and compares.

The configuration (recorded in the file's metadata, which the test reads):
- network: conv3x3 (3 -> 4) -> BatchNorm -> ReLU -> conv1x1 (4 -> 2), in training mode (student and teacher alike:
  SSL4MIS never switches its EMA model to eval, so the teacher's BatchNorm uses batch statistics and its running
  statistics move with each of its passes);
- a batch of 2 labelled and 2 unlabelled 8x8 images; the student sees them as one batch [labelled; unlabelled];
- supervised loss 1/2 (CE + Dice), Dice as SSL4MIS's DiceLoss (per class over batch and pixels, smooth 1e-5);
- iteration 15000 of 30000 (the ramps' position), a fresh SGD (lr 0.01 at its first step, momentum 0.9, weight decay
  1e-4), lambda_max 1 with the ramp over 30000 iterations: lambda = r(floor(it / 150), 200) = exp(-1.25);
- the teacher's EMA: decay 0.99 after 100 earlier updates (alpha = min(1 - 1/101, 0.99) = 0.99), parameters only;
- teacher input noise clamp(0.1 z, -0.2, 0.2) with z the consecutive normal draws of the Philox stream of seed
  NOISE_SEED (tools/fixtures/random.py: our RandomGenerator's draws): the MT/UAMT target pass first, then UAMT's
  T = 8 copies as one batch (copy t of image i at t*N + i).

Usage: python3 tools/ssl_step_reference.py      (needs torch, numpy, safetensors)
"""
import math, os, sys
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fixtures.random import draw  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "mean_teacher_family_step.safetensors")

CLASSES, LABELLED, UNLABELLED, SIZE = 2, 2, 2, 8
STEP, TOTAL = 15000, 30000
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
LAMBDA, RAMP = 1.0, 30000
EMA_DECAY, EMA_UPDATES = 0.99, 100
NOISE_SEED, PASSES = 5, 8


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Conv2d(4, CLASSES, 1)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x))))


def state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if "num_batches" not in k}


def sigmoid_ramp(current, length):
    """SPEC §0.5: exp(-5 (1 - clip(c, 0, L)/L)^2), 1 for L = 0."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def consistency_weight(it):
    """SPEC §8: lambda_max r(it // 150, 200) for SSL4MIS's 30000 iterations."""
    assert RAMP == 30000
    return LAMBDA * sigmoid_ramp(it // 150, 200)


def dice_loss(p, labels):
    """SSL4MIS DiceLoss on softmax probabilities: mean over classes of 1 - (2 sum p y + s)/(sum p^2 + sum y^2 + s)."""
    y = F.one_hot(labels.long(), CLASSES).permute(0, 3, 1, 2).float()
    smooth = 1e-5
    per_class = [1 - (2 * (p[:, c] * y[:, c]).sum() + smooth) / ((p[:, c] ** 2).sum() + (y[:, c] ** 2).sum() + smooth)
                 for c in range(CLASSES)]
    return sum(per_class) / CLASSES


def supervised_loss(logits, labels):
    return 0.5 * (F.cross_entropy(logits, labels.long()) + dice_loss(torch.softmax(logits, 1), labels))


class NoiseStream:
    """Consecutive normal draws of one Philox stream (each draw block-aligned, as RandomGenerator hands them out)."""

    def __init__(self, seed):
        self.seed, self.offset = seed, 0

    def noise(self, shape):
        n = int(np.prod(shape))
        z = draw(self.seed, self.offset, n, "normal").astype(np.float32).reshape(shape)
        self.offset += (n + 3) // 4 * 4
        return torch.from_numpy(np.clip(np.float32(0.1) * z, -0.2, 0.2))


def teacher_probabilities(teacher, images, stream):
    with torch.no_grad():
        return torch.softmax(teacher(images + stream.noise(tuple(images.shape))), 1)


def mt_consistency(p_student, unlabelled, teacher, stream, it):
    """SPEC §8 MT: MSE between softmax(student) and softmax(teacher) on noised unlabelled inputs."""
    return ((p_student - teacher_probabilities(teacher, unlabelled, stream)) ** 2).mean(), {}


def uamt_consistency(p_student, unlabelled, teacher, stream, it):
    """SPEC §8 UAMT: T noised teacher passes, U = entropy of their mean, mask = 1{U < (0.75 + 0.25 r(it, max)) ln 2},
    consistency = sum mask (p_s - p_t)^2 / (2 sum mask + 1e-16)."""
    p_target = teacher_probabilities(teacher, unlabelled, stream)
    copies = teacher_probabilities(teacher, unlabelled.repeat(PASSES, 1, 1, 1), stream)
    mean = copies.reshape(PASSES, *p_target.shape).mean(0)
    uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
    threshold = (0.75 + 0.25 * sigmoid_ramp(it, TOTAL)) * math.log(2)
    margin = (uncertainty - threshold).abs().min().item()
    assert margin > 1e-4, f"an uncertainty lies {margin} from the threshold: float32 rounding could flip its mask"
    mask = (uncertainty < threshold).float()
    fraction = mask.mean().item()
    assert 0.2 < fraction < 0.8, f"the mask keeps {fraction:.2f} of the pixels; pick a state that tests it"
    loss = (mask * (p_student - p_target) ** 2).sum() / (2 * mask.sum() + 1e-16)
    return loss, {"uamt.certain_fraction": f"{fraction:.4f}"}


def step(method, initial_student, initial_teacher, labelled, labels, unlabelled):
    """One optimizer step from the initial state; returns the terms, the weights after it and metadata."""
    student, teacher = Tiny(), Tiny()
    student.load_state_dict({k: torch.from_numpy(v) for k, v in initial_student.items()}, strict=False)
    teacher.load_state_dict({k: torch.from_numpy(v) for k, v in initial_teacher.items()}, strict=False)
    student.train()
    teacher.train()
    stream = NoiseStream(NOISE_SEED)
    logits = student(torch.cat([labelled, unlabelled]))
    supervised = supervised_loss(logits[:LABELLED], labels)
    p_unlabelled = torch.softmax(logits[LABELLED:], 1)
    notes = {}
    if method == "em":
        # SPEC §8 EM: mean(-sum p log p)/log C on the unlabelled predictions (SSL4MIS's log(p + 1e-6)).
        unlabelled_term = (-(p_unlabelled * torch.log(p_unlabelled + 1e-6)).sum(1) / math.log(CLASSES)).mean()
        names = ["supervised", "entropy"]
    else:
        consistency = mt_consistency if method == "mt" else uamt_consistency
        unlabelled_term, notes = consistency(p_unlabelled, unlabelled, teacher, stream, STEP)
        names = ["supervised", "consistency"]
    total = supervised + consistency_weight(STEP) * unlabelled_term
    optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    if method != "em":
        # SPEC §0.6: theta_t <- alpha theta_t + (1 - alpha) theta_s, alpha = min(1 - 1/(n + 1), decay).
        alpha = min(1 - 1 / (EMA_UPDATES + 1), EMA_DECAY)
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.mul_(alpha).add_(s, alpha=1 - alpha)
    terms = {"loss": total.item(), names[0]: supervised.item(), names[1]: unlabelled_term.item()}
    return terms, state(student), state(teacher), notes


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    labelled = torch.randn(LABELLED, 3, SIZE, SIZE, generator=g)
    unlabelled = torch.randn(UNLABELLED, 3, SIZE, SIZE, generator=g)
    labels = (labelled[:, 0] + 0.5 * labelled[:, 1] > 0).float()
    student = Tiny()
    with torch.no_grad():
        # Larger weights than PyTorch's default init, so that predictions are confident enough for UAMT's mask to
        # keep some pixels and drop others.
        student.conv.weight.mul_(3)
        student.head.weight.mul_(3)
        student.norm.weight.uniform_(0.5, 1.5, generator=g)
        student.norm.bias.normal_(0, 0.2, generator=g)
        student.norm.running_mean.normal_(0, 0.3, generator=g)
        student.norm.running_var.uniform_(0.5, 2, generator=g)
    teacher = Tiny()
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        teacher.norm.running_mean.normal_(0, 0.3, generator=g)
        teacher.norm.running_var.uniform_(0.5, 2, generator=g)
    initial_student, initial_teacher = state(student), state(teacher)

    tensors = {"input.labelled": labelled.numpy(), "input.labels": labels.numpy(),
               "input.unlabelled": unlabelled.numpy()}
    tensors.update({f"initial.student.{k}": v for k, v in initial_student.items()})
    tensors.update({f"initial.teacher.{k}": v for k, v in initial_teacher.items()})
    metadata = {"step": str(STEP), "total_steps": str(TOTAL), "learning_rate": str(LR), "lambda": str(LAMBDA),
                "ramp": str(RAMP), "ema_decay": str(EMA_DECAY), "ema_updates": str(EMA_UPDATES),
                "noise_seed": str(NOISE_SEED), "passes": str(PASSES)}
    for method in ["mt", "uamt", "em"]:
        terms, after_student, after_teacher, notes = step(method, initial_student, initial_teacher, labelled, labels,
                                                          unlabelled)
        metadata.update(notes)
        tensors.update({f"{method}.term.{k}": np.array(v, dtype=np.float32) for k, v in terms.items()})
        tensors.update({f"{method}.student.{k}": v for k, v in after_student.items()})
        if method != "em":
            tensors.update({f"{method}.teacher.{k}": v for k, v in after_teacher.items()})
        print(method, {k: round(v, 6) for k, v in terms.items()}, notes)
    from safetensors.numpy import save_file  # only writing the fixture needs it (torch_peer.py imports this file)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, OUT, metadata=metadata)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
