#!/usr/bin/env python3
"""Writes Tests/HistoMethodsTests/Fixtures/cps_family_step.safetensors: one training step of CPS, CCT and URPC in
PyTorch (float64), written from SPEC §8 and SSL4MIS's training scripts, for CPSFamilyTests.

The networks are the SSL4MIS variant of our U-Net (`SegmentationUNet`, variant .ssl4mis: LeakyReLU decoder,
conv1x1 + bilinear up blocks, one-conv head) at width 1 with no encoder dropout, 2 classes, with our parameter names;
CCT adds `aux_decoder1..3` (decoder + head each) and URPC the heads `out_conv_dp1..3`. The feature perturbations
(noise, dropout, feature-dropout thresholds) are drawn from the Philox stream of `RandomGenerator(seed: PERTURB_SEED)`
in the order the Swift code records them (tools/fixtures/random.py reproduces its draws). One joint batch (2
labelled + 2 unlabelled 32² images) goes through each network; the step is SGD (lr 0.01, momentum 0.9, weight decay
1e-4; CPS's second network lr 0.02), λ = λ_max·exp(−5(1 − ⌊200·step/total⌋/200)²).

Stored: "input.*" (images, labels), "setting.*" (step, total steps, λ_max, learning rates, perturbation seed),
and per method "<m>.init.<name>" (parameters and BatchNorm buffers before the step, float16-representable, stored as
F16), "<m>.updated.<name>" (after, F32),
"<m>.term.<name>" (the loss terms the method reports). CPS's names are prefixed "net1." / "net2.".

Usage: python3 tools/ssl_cps_family_reference.py     (needs torch, numpy, safetensors)
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fixtures.random import draw  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "cps_family_step.safetensors")
WIDTH, CLASSES, SIZE, LABELLED, UNLABELLED = 1, 2, 32, 2, 2
STEP, TOTAL, LAMBDA_MAX = 600, 1000, 2.0
LR, LR2, MOMENTUM, WEIGHT_DECAY = 0.01, 0.02, 0.9, 1e-4
PERTURB_SEED = 77


class Philox:
    """Draws of a `RandomGenerator(seed)`: each draw takes the next positions, block-aligned to 4."""

    def __init__(self, seed):
        self.seed, self.offset = seed, 0

    def take(self, shape, kind, a=0.0, b=1.0):
        n = int(np.prod(shape))
        values = draw(self.seed, self.offset, n, kind, a, b)
        self.offset += (n + 3) // 4 * 4
        return torch.tensor(values, dtype=torch.float64).reshape(shape)

    def uniform(self, shape, lo, hi):
        # The Swift formula in float32: lo + (hi − lo)·u, u a multiple of 2⁻²⁴.
        lo, hi = np.float32(lo), np.float32(hi)
        u = self.take(shape, "uniform").numpy().astype(np.float32)
        return torch.tensor(lo + np.float32(hi - lo) * u, dtype=torch.float64)


# SSL4MIS's perturbations (networks/unet.py), drawing from `generator`.
def feature_noise(x, generator, magnitude=0.3):
    return x.mul(generator.uniform(x.shape[1:], -magnitude, magnitude).unsqueeze(0)) + x


def dropout(x, generator, p):
    keep_probability = float(np.float32(1) - np.float32(p))
    keep = generator.take(x.shape, "bernoulli", keep_probability)
    return x * (keep / keep_probability)


def feature_dropout(x, generator):
    attention = torch.mean(x, dim=1, keepdim=True)
    max_val, _ = torch.max(attention.view(x.size(0), -1), dim=1, keepdim=True)
    threshold = max_val * generator.uniform([1], 0.7, 0.9)
    threshold = threshold.view(x.size(0), 1, 1, 1).expand_as(attention)
    return x.mul((attention < threshold).double())


CCT_PERTURBATIONS = [feature_noise, lambda x, g: dropout(x, g, 0.3), feature_dropout]


def conv_block(cin, cout, encoder):
    layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01)]
    if encoder:
        layers.append(nn.Dropout(0.0))
    layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers)


class EncoderBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_conv = conv_block(cin, cout, encoder=True)

    def forward(self, x):
        return self.conv_conv(x)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.in_conv = EncoderBlock(3, c[0])
        for level in range(1, 5):
            setattr(self, f"down{level}", nn.Module())
            down = nn.Module()
            down.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), EncoderBlock(c[level - 1], c[level]))
            setattr(self, f"down{level}", down)

    def forward(self, x):
        features = [self.in_conv(x)]
        for level in range(1, 5):
            features.append(getattr(self, f"down{level}").maxpool_conv(features[-1]))
        return features


class UpBlock(nn.Module):
    def __init__(self, deep, skip, out):
        super().__init__()
        self.conv1x1 = nn.Conv2d(deep, skip, 1)
        self.conv = nn.Module()
        self.conv.conv = conv_block(2 * skip, out, encoder=False)

    def forward(self, deep, skip):
        up = F.interpolate(self.conv1x1(deep), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv.conv(torch.cat([skip, up], dim=1))


class Decoder(nn.Module):
    """Up blocks up1..up4 (deepest first), with a head `out_conv` when `head` (CCT's auxiliary decoders)."""

    def __init__(self, c, head):
        super().__init__()
        for i in range(4):
            setattr(self, f"up{i + 1}", UpBlock(c[4 - i], c[3 - i], c[3 - i]))
        if head:
            self.out_conv = nn.Conv2d(c[0], CLASSES, 3, padding=1)

    def levels(self, features):
        x, outputs = features[4], []
        for i in range(4):
            x = getattr(self, f"up{i + 1}")(x, features[3 - i])
            outputs.append(x)
        return outputs


class UNet(nn.Module):
    """`SegmentationUNet` (.ssl4mis, dropout 0) with CCT's auxiliary decoders or URPC's heads as `extras`."""

    def __init__(self, extras=None):
        super().__init__()
        c = [WIDTH * m for m in (1, 2, 4, 8, 16)]
        self.encoder = Encoder(c)
        self.main_decoder = Decoder(c, head=False)
        self.out_conv = nn.Conv2d(c[0], CLASSES, 3, padding=1)
        if extras == "cct":
            for k in range(3):
                setattr(self, f"aux_decoder{k + 1}", Decoder(c, head=True))
        elif extras == "urpc":
            for k in range(1, 4):
                setattr(self, f"out_conv_dp{k}", nn.Conv2d(c[k], CLASSES, 3, padding=1))

    def forward(self, x):
        return self.out_conv(self.main_decoder.levels(self.encoder(x))[-1])

    def cct(self, x, generator):
        features = self.encoder(x)
        main = self.out_conv(self.main_decoder.levels(features)[-1])
        auxiliary = []
        for k, perturb in enumerate(CCT_PERTURBATIONS):
            decoder = getattr(self, f"aux_decoder{k + 1}")
            auxiliary.append(decoder.out_conv(decoder.levels([perturb(f, generator) for f in features])[-1]))
        return main, auxiliary

    def urpc(self, x, generator):
        # SSL4MIS Decoder_URPC in training mode: dropout 0.5 before dp3, feature dropout before dp2, noise before dp1.
        levels = self.main_decoder.levels(self.encoder(x))
        shape = x.shape[2:]
        dp3 = F.interpolate(self.out_conv_dp3(dropout(levels[0], generator, 0.5)), shape)
        dp2 = F.interpolate(self.out_conv_dp2(feature_dropout(levels[1], generator)), shape)
        dp1 = F.interpolate(self.out_conv_dp1(feature_noise(levels[2], generator)), shape)
        return [self.out_conv(levels[3]), dp1, dp2, dp3]


def randomize(model, generator):
    """Weights of a spread that gives logits of order 1, rounded to float16 (stored so, loaded exactly)."""
    def normal(shape, scale, mean=0.0):
        return mean + scale * torch.randn(shape, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(normal(module.weight.shape, 1.5 / math.sqrt(module.weight[0].numel())))
                module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(normal(module.weight.shape, 0.1, mean=1.0))
                module.bias.copy_(normal(module.bias.shape, 0.1))
        for p in model.parameters():
            p.copy_(p.half().double())
    return model


def dice_loss(probabilities, labels):
    """SSL4MIS DiceLoss on softmax outputs: per class over the batch, 1 − (2Σpy + 1e-5)/(Σp² + Σy + 1e-5), mean."""
    target = F.one_hot(labels, CLASSES).permute(0, 3, 1, 2).double()
    intersection = (probabilities * target).sum(dim=(0, 2, 3))
    ratio = (2 * intersection + 1e-5) / ((probabilities ** 2).sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3)) + 1e-5)
    return (1 - ratio).mean()


def supervised(logits, labels):
    return 0.5 * (F.cross_entropy(logits[:LABELLED], labels) + dice_loss(torch.softmax(logits[:LABELLED], 1), labels))


def consistency_weight():
    stair = min(STEP * 200 // TOTAL, 200)
    return LAMBDA_MAX * math.exp(-5 * (1 - stair / 200) ** 2)


def state(model, prefix="", dtype=torch.float32):
    return {prefix + k: v.detach().to(dtype).contiguous().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def sgd_step(loss, groups):
    optimizer = torch.optim.SGD([{"params": m.parameters(), "lr": lr} for m, lr in groups], lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def cps(images, labels):
    generator = torch.Generator().manual_seed(1)
    net1, net2 = randomize(UNet().double(), generator), randomize(UNet().double(), generator)
    init = {**state(net1, "net1.", torch.float16), **state(net2, "net2.", torch.float16)}
    logits1, logits2 = net1(images), net2(images)
    supervised1, supervised2 = supervised(logits1, labels), supervised(logits2, labels)
    pseudo1 = torch.argmax(torch.softmax(logits1[LABELLED:], 1).detach(), dim=1)
    pseudo2 = torch.argmax(torch.softmax(logits2[LABELLED:], 1).detach(), dim=1)
    cps1 = F.cross_entropy(logits1[LABELLED:], pseudo2)
    cps2 = F.cross_entropy(logits2[LABELLED:], pseudo1)
    loss = supervised1 + supervised2 + consistency_weight() * (cps1 + cps2)
    sgd_step(loss, [(net1, LR), (net2, LR2)])
    terms = {"loss": loss, "supervised_1": supervised1, "supervised_2": supervised2, "pseudo_supervision_1": cps1,
             "pseudo_supervision_2": cps2}
    return init, {**state(net1, "net1."), **state(net2, "net2.")}, terms


def cct(images, labels):
    model = randomize(UNet("cct").double(), torch.Generator().manual_seed(2))
    init = state(model, dtype=torch.float16)
    main, auxiliary = model.cct(images, Philox(PERTURB_SEED))
    outputs = [main] + auxiliary
    supervised_loss = sum(supervised(o, labels) for o in outputs) / len(outputs)
    main_soft = torch.softmax(main, 1)[LABELLED:]  # not detached, as in SSL4MIS
    consistency = sum(torch.mean((main_soft - torch.softmax(a, 1)[LABELLED:]) ** 2) for a in auxiliary) / 3
    loss = supervised_loss + consistency_weight() * consistency
    sgd_step(loss, [(model, LR)])
    return init, state(model), {"loss": loss, "supervised": supervised_loss, "consistency": consistency}


def urpc(images, labels):
    model = randomize(UNet("urpc").double(), torch.Generator().manual_seed(3))
    init = state(model, dtype=torch.float16)
    outputs = model.urpc(images, Philox(PERTURB_SEED))
    supervised_loss = sum(supervised(o, labels) for o in outputs) / 4
    soft = [torch.softmax(o, 1) for o in outputs]
    preds = sum(soft) / 4
    kl_distance = nn.KLDivLoss(reduction="none")
    consistency = 0
    for s in soft:
        variance = torch.sum(kl_distance(torch.log(s[LABELLED:]), preds[LABELLED:]), dim=1, keepdim=True)
        exp_variance = torch.exp(-variance)
        distance = (preds[LABELLED:] - s[LABELLED:]) ** 2
        consistency = consistency + torch.mean(distance * exp_variance) / (torch.mean(exp_variance) + 1e-8) \
            + torch.mean(variance)
    consistency = consistency / 4
    loss = supervised_loss + consistency_weight() * consistency
    sgd_step(loss, [(model, LR)])
    return init, state(model), {"loss": loss, "supervised": supervised_loss, "consistency": consistency}


def main():
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand([LABELLED + UNLABELLED, 3, SIZE, SIZE], generator=generator, dtype=torch.float64) * 2 - 1)
    images = images.float().double()
    labels = (torch.rand([LABELLED, SIZE, SIZE], generator=generator) < 0.4).long()
    tensors = {"input.labelled": images[:LABELLED].float(), "input.unlabelled": images[LABELLED:].float(),
               "input.labels": labels.float()}
    for name, value in {"step": STEP, "total_steps": TOTAL, "lambda_max": LAMBDA_MAX, "learning_rate": LR,
                        "second_learning_rate": LR2, "perturbation_seed": PERTURB_SEED}.items():
        tensors[f"setting.{name}"] = torch.tensor([value], dtype=torch.float32)
    for method, step in [("cps", cps), ("cct", cct), ("urpc", urpc)]:
        init, updated, terms = step(images, labels)
        terms["consistency_weight"] = torch.tensor(consistency_weight())
        tensors.update({f"{method}.init.{k}": v for k, v in init.items()})
        tensors.update({f"{method}.updated.{k}": v for k, v in updated.items()})
        tensors.update({f"{method}.term.{k}": v.detach().reshape(1).float() for k, v in terms.items()})
        print(method, {k: round(float(v.detach()), 6) for k, v in terms.items()})
    save_file(tensors, OUT)
    print(f"{OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
