#!/usr/bin/env python3
"""One stage-1 step (teacher pretraining) and one stage-2 step (teacher-student co-training with multi-round
diffusion) of Ciampi et al. (paper 002) in PyTorch float64, written from SPEC §3 and the paper's Eq. 1-16, on a
tiny fixed configuration. Writes Tests/HistoMethodsTests/Fixtures/diffusion_ts_step.safetensors: the inputs, the
draws (t and noise, generated here and fed to ours), the initial weights, and per stage the loss terms and the
weights and BatchNorm statistics after the step; DiffusionTeacherStudentTests runs our methods on the same state.

The configuration (metadata holds the numbers the test reads):
- each pathway is DDPM_Wrapper (SPEC §3) at dim 4, multipliers (1, 2), dropouts 0 (so that no draw is hidden in
  the networks), in training mode: stem ConvBlockLeakyReLU, lucidrains time embedding (sin first, GELU) added
  once, per level MaxPool + ConvBlockLeakyReLU, per level UpBlock (conv1x1, bilinear x2 align_corners, cat(skip,
  up), 2 x conv-BN-ReLU), conv3x3 head; the teacher's final_conv (3x3, C -> C) reads class logits from
  m = (x0 + 1)/2; the student is a mask pathway with its own final_conv;
- 2 labelled + 2 unlabelled 8x8 images in [-1, 1] seen as one batch [labelled; unlabelled], 2 classes;
- linear beta 1e-4 -> 0.02 over T = 1000; v_m = q_sample(-1, t, eps);
- stage 1: L_teacher = mean (eps - eps_hat)^2 (reconstruction noise) and, as a separate check, the image form
  mean (i - i_hat)^2 with i_hat = sqrt(1/a) x_t - sqrt(1/a - 1) eps_hat; the readout's XNet Dice loss on
  final_conv(m_hat.detach()) of the labelled images (per sample and class, smooth 1);
- stage 2: R = 2 rounds, lambda = 5 (0 + 1)/2 = 2.5 (epoch 0 of 2); L = L_sup + lambda (L_semi + mean L_align +
  mean L_recon), L_semi and the rounds over all four images (Eq. 16), targets l on labelled images and argmax of
  the student elsewhere;
- plain SGD, lr 0.1, no momentum or weight decay, so that the weights after the step carry the gradients.

Usage: python3 tools/diffusion_ts_reference.py      (needs torch, numpy, safetensors)
"""
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file
from unet_reference import ConditionalUnet

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "diffusion_ts_step.safetensors")

CLASSES, LABELLED, UNLABELLED, SIZE, DIM, MULTS = 2, 2, 2, 8, 4, (1, 2)
STEPS, LR, ROUNDS, LAMBDA = 1000, 0.1, 2, 2.5
torch.set_default_dtype(torch.float64)
torch.manual_seed(15)
rng = np.random.default_rng(15)
BETAS = torch.linspace(1e-4, 0.02, STEPS)
ALPHA_BARS = torch.cumprod(1 - BETAS, 0)


def pathway(target, condition):
    """A DDPM_Wrapper pathway: tools/unet_reference.py's ConditionalUnet without dropout, BatchNorm affine drawn
    away from (1, 0) so that the step moves every tensor."""
    network = ConditionalUnet(target, condition, dim=DIM, dim_mults=MULTS, dropout=(0,) * (len(MULTS) + 1))
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1, 0.2)
            nn.init.normal_(m.bias, 0, 0.1)
    return network


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.net_seg = pathway(CLASSES, 3)
        self.final_conv = nn.Conv2d(CLASSES, CLASSES, 3, padding=1)

    def mask(self, images, t, noise):
        a = ALPHA_BARS[t.long()][:, None, None, None]
        pure_noise = a.sqrt() * -1 + (1 - a).sqrt() * noise
        return self.net_seg(pure_noise, t, images)

    def logits(self, mask):
        return self.final_conv((mask + 1) / 2)


class Teacher(Segmenter):
    def __init__(self):
        super().__init__()
        self.net = pathway(3, CLASSES)

    def reconstruct(self, images, mask, t, noise):
        """eps_hat and i_hat = sqrt(1/a) x_t - sqrt(1/a - 1) eps_hat (SPEC §3: the paper's Eq. 3 prints '+')."""
        a = ALPHA_BARS[t.long()][:, None, None, None]
        noisy = a.sqrt() * images + (1 - a).sqrt() * noise
        epsilon = self.net(noisy, t, mask)
        return epsilon, (1 / a).sqrt() * noisy - (1 / a - 1).sqrt() * epsilon


def xnet_dice(logits, labels):
    """XNet DiceLoss: per sample and class 1 - (2 sum py + 1)/(sum p^2 + sum y^2 + 1), mean."""
    p = F.softmax(logits, 1)
    y = F.one_hot(labels, CLASSES).permute(0, 3, 1, 2).to(p.dtype)
    ratio = (2 * (p * y).sum((2, 3)) + 1) / ((p * p).sum((2, 3)) + (y * y).sum((2, 3)) + 1)
    return (1 - ratio).mean()


def state(prefix, model):
    return {prefix + k: v.detach().numpy().copy() for k, v in model.state_dict().items() if "num_batches" not in k}


def sgd(models, loss):
    parameters = [p for m in models for p in m.parameters()]
    for p in parameters:
        p.grad = None
    loss.backward()
    with torch.no_grad():
        for p in parameters:
            if p.grad is not None:
                p -= LR * p.grad


def mask_draws(n):
    return torch.from_numpy(rng.integers(0, STEPS, n).astype(np.float64)), torch.randn(n, CLASSES, SIZE, SIZE)


def image_draws(n):
    return torch.from_numpy(rng.integers(0, STEPS, n).astype(np.float64)), torch.randn(n, 3, SIZE, SIZE)


def main():
    n = LABELLED + UNLABELLED
    images = torch.rand(n, 3, SIZE, SIZE) * 2 - 1
    labels = torch.from_numpy(rng.integers(0, CLASSES, (LABELLED, SIZE, SIZE)))
    teacher, student = Teacher(), Segmenter()
    out = {"input.images": images.numpy(), "input.labels": labels.numpy().astype(np.float64)}
    out.update(state("initial.teacher.", teacher))
    out.update(state("initial.student.", student))

    # Stage 1.
    (mt, mn), (it, inoise) = mask_draws(n), image_draws(n)
    out.update({"stage1.draw.mask_t": mt.numpy(), "stage1.draw.mask_noise": mn.numpy(),
                "stage1.draw.image_t": it.numpy(), "stage1.draw.image_noise": inoise.numpy()})
    with torch.no_grad():
        # The image form of the reconstruction loss, from the initial weights (BatchNorm statistics restored).
        snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
        mask = teacher.mask(images, mt, mn)
        _, image = teacher.reconstruct(images, mask, it, inoise)
        out["stage1.image_reconstruction"] = np.array([((images - image) ** 2).mean().item()])
        teacher.load_state_dict(snapshot)
    mask = teacher.mask(images, mt, mn)
    epsilon, _ = teacher.reconstruct(images, mask, it, inoise)
    reconstruction = ((inoise - epsilon) ** 2).mean()
    readout = xnet_dice(teacher.logits(mask[:LABELLED].detach()), labels)
    sgd([teacher], reconstruction + readout)
    out["stage1.reconstruction"] = np.array([reconstruction.item()])
    out["stage1.readout_dice"] = np.array([readout.item()])
    out.update(state("stage1.after.teacher.", teacher))

    # Stage 2, from the initial weights again.
    teacher.load_state_dict({k[len("initial.teacher."):]: torch.from_numpy(v) for k, v in out.items()
                             if k.startswith("initial.teacher.")}, strict=False)
    (t0, n0) = mask_draws(n)
    out.update({"stage2.draw.t": t0.numpy(), "stage2.draw.noise": n0.numpy()})
    teacher_mask = teacher.mask(images, t0, n0)
    teacher_logits = teacher.logits(teacher_mask)
    student_logits = student.logits(student.mask(images, t0, n0))
    student_labels = student_logits.argmax(1)
    targets = torch.cat([labels, student_labels[LABELLED:]], 0)
    previous, alignment, reconstructions = teacher_mask, [], []
    for r in range(ROUNDS):
        (it, inoise), (mt, mn) = image_draws(n), mask_draws(n)
        out.update({f"stage2.round{r}.image_t": it.numpy(), f"stage2.round{r}.image_noise": inoise.numpy(),
                    f"stage2.round{r}.mask_t": mt.numpy(), f"stage2.round{r}.mask_noise": mn.numpy()})
        epsilon, image = teacher.reconstruct(images, previous, it, inoise)
        reconstructions.append(((inoise - epsilon) ** 2).mean())
        previous = teacher.mask(image, mt, mn)
        alignment.append(F.cross_entropy(teacher.logits(previous), targets))
    terms = {
        "supervised_teacher": F.cross_entropy(teacher_logits[:LABELLED], labels),
        "supervised_student": F.cross_entropy(student_logits[:LABELLED], labels),
        "pseudo_teacher": F.cross_entropy(teacher_logits, student_labels),
        "pseudo_student": F.cross_entropy(student_logits, teacher_logits.argmax(1)),
        "alignment": sum(alignment) / ROUNDS, "reconstruction": sum(reconstructions) / ROUNDS,
    }
    total = terms["supervised_teacher"] + terms["supervised_student"] + LAMBDA * (
        terms["pseudo_teacher"] + terms["pseudo_student"] + terms["alignment"] + terms["reconstruction"])
    sgd([teacher, student], total)
    out["stage2.loss"] = np.array([total.item()])
    for name, value in terms.items():
        out["stage2." + name] = np.array([value.item()])
    out.update(state("stage2.after.teacher.", teacher))
    out.update(state("stage2.after.student.", student))

    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    metadata = {"generator": "tools/diffusion_ts_reference.py", "dim": str(DIM), "size": str(SIZE),
                "labelled": str(LABELLED), "lr": str(LR), "rounds": str(ROUNDS), "lambda": str(LAMBDA)}
    save_file(out, OUT, metadata=metadata)
    print({k: round(float(v[0]), 6) for k, v in out.items() if v.size == 1})


if __name__ == "__main__":
    main()
