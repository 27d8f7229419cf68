#!/usr/bin/env python3
"""DTSeg's transformer decoder ("UNetFormer", SPEC §1 step 2b) and collaborative head ("AggregrateWSA", SPEC §1
step 3) in PyTorch float64, written from the SPEC. Prints the parameter counts of the paper presets and writes
Tests/HistoMethodsTests/Fixtures/unetformer_step.safetensors; UNetFormerTests loads the weights into our modules,
runs the same inputs and compares f_D, the logits and the gradients of sum(logits * R).

Module and attribute names are the Swift modules' parameter names (state_dict style):
  pre_convs.i.{0,1}            ConvBN 1x1 per input (parallel, w/o SA) or one over the concatenated inputs (serial)
  blocks.i.{norm1,attn,norm2,mlp.fc1,mlp.fc2}
  blocks.i.attn.{qkv, relative_position_bias_table, local1.{0,1}, local2.{0,1}, proj.{0,1,2}}
  segmentation_head.{0.0, 0.1, 2}  ConvBNReLU6 3x3 -> Dropout2d -> Conv1x1 (no bias)
  collaborative head: fc1, fc2 (1x1 convs with bias), segmentation_head as above.
Fixture groups: "decoder.*" (parallel, train mode: BN batch statistics, Dropout2d p = 0; then "decoder.eval.logits",
one eval-mode forward with the running statistics that step left), "serial.*" and "plain.*" (the serial and w/o SA
layouts, a train-mode forward's logits), "collab.*" (the collaborative head, train mode, with gradients), "train.*"
(dtseg's training step, SPEC §1 step 2b, from the "decoder" weights, repeated STEPS times on fixed features and labels: toolbelt multiclass
Dice, Lookahead(k 6, α 0.5, slow weights from the first sync as timm) around RAdam with decoupled weight decay on
parameters of rank > 1; the loss of every step and the weights after the last).

Usage: python3 tools/unetformer_reference.py      (needs torch, numpy, safetensors)
"""
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoMethodsTests", "Fixtures", "unetformer_step.safetensors")

# The tiny configuration: a 10x10 map is not a multiple of the window 4, so the window padding and the cropping run.
BATCH, SIZE, INPUTS, DECODE, HEADS, WINDOW, CLASSES = 2, 10, (6, 4), 16, 2, 4, 3
SERIAL_DECODE = 8
COLLAB_DTSEG, COLLAB_SUPERVISED, COLLAB_HIDDEN = 8, 6, 8
# Twelve steps reach RAdam's rectified updates (ρ_t > 5 from step 6) and Lookahead's second sync (step 12), the
# first that moves the weights. lr and weight decay are larger than DTSeg's so that both show in float32.
STEPS, LR, WEIGHT_DECAY, BETAS, EPS = 12, 1e-2, 1e-1, (0.9, 0.999), 1e-8


def conv_bn(cin, cout, k):
    """ConvBN: conv k x k (padding (k-1)//2, no bias) -> BN."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, bias=False), nn.BatchNorm2d(cout))


def conv_bn_relu6(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


def separable_conv_bn(c, k):
    """Depthwise k x k (padding (k-1)//2, no bias) -> BN -> pointwise 1x1 (no bias)."""
    return nn.Sequential(nn.Conv2d(c, c, k, padding=(k - 1) // 2, groups=c, bias=False), nn.BatchNorm2d(c),
                         nn.Conv2d(c, c, 1, bias=False))


def segmentation_head(cin, hidden, classes, dropout):
    return nn.Sequential(conv_bn_relu6(cin, hidden, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(hidden, classes, 1, bias=False))


def relative_position_index(w):
    """Swin's index: for tokens i, j of a w x w window (row-major), (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    ys, xs = np.divmod(np.arange(w * w), w)
    dy = ys[:, None] - ys[None, :] + w - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    return torch.from_numpy(dy * (2 * w - 1) + dx)


class GlobalLocalAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.local1 = conv_bn(dim, dim, 3)
        self.local2 = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, window)
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def window_attention(self, x):
        b, c, h, w = x.shape
        ws, heads, d = self.window, self.heads, c // self.heads
        x = F.pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws), mode="reflect")
        hp, wp = x.shape[2:]
        qkv = self.qkv(x)  # channels (qkv, head, depth)
        qkv = qkv.reshape(b, 3, heads, d, hp // ws, ws, wp // ws, ws)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b * (hp // ws) * (wp // ws), heads, ws * ws, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1) * d ** -0.5
        bias = self.relative_position_bias_table[self.index.reshape(-1)].reshape(ws * ws, ws * ws, heads)
        logits = logits + bias.permute(2, 0, 1).unsqueeze(0)
        out = logits.softmax(dim=-1) @ v  # [windows, heads, tokens, d]
        out = out.reshape(b, hp // ws, wp // ws, heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5)
        return out.reshape(b, c, hp, wp)[:, :, :h, :w]

    def forward(self, x):
        h, w = x.shape[2:]
        local = self.local2(x) + self.local1(x)
        attended = self.window_attention(x)
        half = self.window // 2 - 1
        vertical = F.avg_pool2d(F.pad(attended, (0, 0, 0, 1), mode="reflect"), (self.window, 1), stride=1,
                                padding=(half, 0), count_include_pad=True)
        horizontal = F.avg_pool2d(F.pad(attended, (0, 1, 0, 0), mode="reflect"), (1, self.window), stride=1,
                                  padding=(0, half), count_include_pad=True)
        out = F.pad(vertical + horizontal + local, (0, 1, 0, 1), mode="reflect")
        return self.proj(out)[:, :, :h, :w]


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(F.relu6(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, window, mlp_ratio):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, heads, window)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    """layout: "parallel" (Block(ConvBN(F_i)) per input, concatenated), "serial" (one ConvBN over the concatenated
    inputs, one Block) or "plain" (w/o SA: ConvBN(F_i) concatenated)."""

    def __init__(self, inputs, decode, heads, window, mlp_ratio, classes, layout, dropout):
        super().__init__()
        self.layout = layout
        projected = [sum(inputs)] if layout == "serial" else list(inputs)
        self.pre_convs = nn.ModuleList(conv_bn(c, decode, 1) for c in projected)
        blocks = 0 if layout == "plain" else len(projected)
        self.blocks = nn.ModuleList(Block(decode, heads, window, mlp_ratio) for _ in range(blocks))
        self.segmentation_head = segmentation_head(decode * len(projected), decode, classes, dropout)

    def features(self, inputs):
        if self.layout == "serial":
            inputs = [torch.cat(inputs, dim=1)]
        maps = [conv(x) for conv, x in zip(self.pre_convs, inputs)]
        if self.blocks:
            maps = [block(x) for block, x in zip(self.blocks, maps)]
        return torch.cat(maps, dim=1)

    def forward(self, inputs):
        return self.segmentation_head(self.features(inputs))


class CollaborativeHead(nn.Module):
    def __init__(self, dtseg, supervised, hidden, classes, dropout):
        super().__init__()
        self.fc1 = nn.Conv2d(dtseg, hidden, 1)
        self.fc2 = nn.Conv2d(supervised, hidden, 1)
        self.segmentation_head = segmentation_head(2 * hidden, hidden, classes, dropout)

    def forward(self, dtseg, supervised):
        return self.segmentation_head(torch.cat([F.relu(self.fc1(dtseg)), F.relu(self.fc2(supervised))], dim=1))


def count(module):
    return sum(p.numel() for p in module.parameters())


def print_counts():
    for layout in ("parallel", "serial", "plain"):
        decoder = Decoder((1344, 1344, 672), 128, 8, 8, 4, 5, layout, 0.1)
        channels = decoder.segmentation_head[0][0].in_channels
        print(f"paper decoder, K = 5, {layout}: {count(decoder)} parameters, f_D {channels} channels")
    print(f"paper collaborative head, K = 5: {count(CollaborativeHead(384, 128, 128, 5, 0.1))} parameters")
    # The cpu preset on the `cpu` guided LDM's output blocks 7, 8, 9 (32 channels x 3 timesteps each).
    cpu = Decoder((96, 96, 96), 32, 2, 8, 4, 2, "parallel", 0.1)
    print(f"cpu decoder on (96, 96, 96), K = 2: {count(cpu)} parameters")


def randomize(module, rng):
    """Non-trivial BatchNorm affine parameters and a position-bias table large enough to matter, float32-exact."""
    for name, p in module.named_parameters():
        if name.endswith("relative_position_bias_table"):
            p.data = torch.from_numpy(rng.normal(0, 0.5, p.shape))
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.from_numpy(rng.uniform(0.5, 1.5, m.weight.shape))
            m.bias.data = torch.from_numpy(rng.normal(0, 0.1, m.bias.shape))
    for p in module.parameters():
        p.data = p.data.float().double()


def toolbelt_dice(logits, labels, classes):
    """pytorch_toolbelt DiceLoss('multiclass'), SPEC §1: sums over batch and pixels per class, smooth 0, denominator
    clamped at 1e-7, classes absent from the labels count 0 but stay in the mean."""
    p = logits.softmax(1)
    y = F.one_hot(labels, classes).permute(0, 3, 1, 2).double()
    dims = (0, 2, 3)
    dice = 2 * (p * y).sum(dims) / (p.sum(dims) + y.sum(dims)).clamp_min(1e-7)
    present = (y.sum(dims) > 0).double()
    return ((1 - dice) * present).mean()


def train_steps(model, inputs, labels):
    """STEPS steps of Lookahead(RAdam) (SPEC §1 step 2b) written out; returns the loss of every step."""
    params = list(model.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    slow = None
    rho_inf = 2 / (1 - BETAS[1]) - 1
    losses = []
    for t in range(1, STEPS + 1):
        model.zero_grad()
        loss = toolbelt_dice(model(inputs), labels, CLASSES)
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            for i, p in enumerate(params):
                if p.dim() > 1:
                    p.mul_(1 - LR * WEIGHT_DECAY)
                m[i].mul_(BETAS[0]).add_(p.grad, alpha=1 - BETAS[0])
                v[i].mul_(BETAS[1]).addcmul_(p.grad, p.grad, value=1 - BETAS[1])
                m_hat = m[i] / (1 - BETAS[0] ** t)
                rho = rho_inf - 2 * t * BETAS[1] ** t / (1 - BETAS[1] ** t)
                if rho > 5:
                    rect = ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5
                    p.sub_(LR * rect * m_hat * (1 - BETAS[1] ** t) ** 0.5 / (v[i].sqrt() + EPS))
                else:
                    p.sub_(LR * m_hat)
            if t % 6 == 0:
                if slow is None:
                    slow = [p.detach().clone() for p in params]
                for s_, p in zip(slow, params):
                    s_.add_(p - s_, alpha=0.5)
                    p.copy_(s_)
    return losses


def f32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


def state(prefix, module):
    return {f"{prefix}.initial.{k}": f32(v.detach().numpy()) for k, v in module.state_dict().items()
            if v.dtype.is_floating_point}


def tensor(rng, *shape):
    return torch.from_numpy(rng.normal(size=shape).astype(np.float32).astype(np.float64))


def main():
    print_counts()
    torch.manual_seed(23)
    rng = np.random.default_rng(23)
    out = {}

    decoder = Decoder(INPUTS, DECODE, HEADS, WINDOW, 4, CLASSES, "parallel", 0.0).double()
    randomize(decoder, rng)
    out.update(state("decoder", decoder))
    initial = {k: v.clone() for k, v in decoder.state_dict().items()}
    inputs = [tensor(rng, BATCH, c, SIZE, SIZE).requires_grad_() for c in INPUTS]
    r = tensor(rng, BATCH, CLASSES, SIZE, SIZE)
    decoder.train()
    features = decoder.features(inputs)
    logits = decoder.segmentation_head(features)
    (logits * r).sum().backward()
    for i, x in enumerate(inputs):
        out[f"decoder.input.{i}"] = f32(x.detach().numpy())
        out[f"decoder.grad.input.{i}"] = f32(x.grad.numpy())
    out["decoder.r"] = f32(r.numpy())
    out["decoder.features"] = f32(features.detach().numpy())
    out["decoder.logits"] = f32(logits.detach().numpy())
    for name, p in decoder.named_parameters():
        out[f"decoder.grad.{name}"] = f32(p.grad.numpy())
    decoder.eval()
    with torch.no_grad():
        out["decoder.eval.logits"] = f32(decoder(inputs).numpy())

    for layout, decode in (("serial", SERIAL_DECODE), ("plain", DECODE)):
        model = Decoder(INPUTS, decode, HEADS, WINDOW, 4, CLASSES, layout, 0.0).double()
        randomize(model, rng)
        out.update(state(layout, model))
        model.train()
        with torch.no_grad():
            out[f"{layout}.logits"] = f32(model(inputs).numpy())

    collab = CollaborativeHead(COLLAB_DTSEG, COLLAB_SUPERVISED, COLLAB_HIDDEN, CLASSES, 0.0).double()
    randomize(collab, rng)
    out.update(state("collab", collab))
    dtseg = tensor(rng, BATCH, COLLAB_DTSEG, SIZE, SIZE).requires_grad_()
    supervised = tensor(rng, BATCH, COLLAB_SUPERVISED, SIZE, SIZE).requires_grad_()
    r = tensor(rng, BATCH, CLASSES, SIZE, SIZE)
    collab.train()
    logits = collab(dtseg, supervised)
    (logits * r).sum().backward()
    out.update({"collab.input.dtseg": f32(dtseg.detach().numpy()),
                "collab.input.supervised": f32(supervised.detach().numpy()),
                "collab.grad.input.dtseg": f32(dtseg.grad.numpy()),
                "collab.grad.input.supervised": f32(supervised.grad.numpy()),
                "collab.r": f32(r.numpy()), "collab.logits": f32(logits.detach().numpy())})
    for name, p in collab.named_parameters():
        out[f"collab.grad.{name}"] = f32(p.grad.numpy())

    trained = Decoder(INPUTS, DECODE, HEADS, WINDOW, 4, CLASSES, "parallel", 0.0).double()
    trained.load_state_dict(initial)  # starts from "decoder.initial.*"
    features = [tensor(rng, BATCH, c, SIZE, SIZE) for c in INPUTS]
    labels = torch.from_numpy(rng.integers(0, CLASSES - 1, size=(BATCH, SIZE, SIZE)))  # the last class is absent
    trained.train()
    losses = train_steps(trained, features, labels)
    out.update({f"train.input.{i}": f32(x.numpy()) for i, x in enumerate(features)})
    out["train.labels"] = f32(labels.numpy())
    out["train.losses"] = f32(np.array(losses))
    out.update({f"train.final.{k}": f32(v.detach().numpy()) for k, v in trained.named_parameters()})

    metadata = {"inputs": ",".join(map(str, INPUTS)), "decode": str(DECODE), "serial_decode": str(SERIAL_DECODE),
                "heads": str(HEADS), "window": str(WINDOW), "classes": str(CLASSES),
                "collab": f"{COLLAB_DTSEG},{COLLAB_SUPERVISED},{COLLAB_HIDDEN}",
                "train": f"{STEPS},{LR},{WEIGHT_DECAY}"}
    save_file(out, OUT, metadata=metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
