#!/usr/bin/env python3
"""Writes the AutoencoderKL golden fixtures into Tests/HistoDiffusionTests/Fixtures/:

- autoencoder_ldm_tiny.safetensors: the weights of a tiny LDM-style KL autoencoder (ch 4, ch_mult (1,2,2), one
  ResnetBlock per level, z 3, GroupNorm with 2 groups and eps 1e-6), under the names of an LDM `AutoencoderKL`
  state dict, plus two tensors of LDM's loss module (`loss.logvar`, `loss.discriminator.main.0.weight`) that an
  import must skip. Written with the `safetensors` package, as a converted LDM checkpoint would be.
- autoencoder_ldm_tiny_io.safetensors: an input x [2, 3, 16, 16] and, computed in float64 from the float32
  weights: the posterior `mean` and `logvar` [2, 3, 4, 4], `reconstruction` = decode(mean) [2, 3, 16, 16] and
  `kl` = LDM's KL (½·Σ_{C,H,W}(μ² + σ² − 1 − log σ²), averaged over the batch).

The forward pass below is written from the architecture description in SPEC §1 (LDM first stage): conv_in, per
level ResnetBlocks (GN, SiLU, conv3×3, GN, SiLU, conv3×3, 1×1 nin_shortcut when the width changes) and a stride-2
conv after zero padding (0,1,0,1); middle ResnetBlock, single-head attention (1×1 q/k/v/proj_out, softmax over
keys of qᵀk/√C), ResnetBlock; GN, SiLU, conv_out to 2z; quant_conv. The decoder mirrors it with num_res_blocks+1
blocks per level and nearest ×2 + conv3×3 upsampling.

Usage: python3 tools/fixtures_autoencoder.py   (needs torch, numpy and safetensors)
"""
import os
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoDiffusionTests", "Fixtures")
CH, MULT, RES_BLOCKS, Z, GROUPS, EPS, IMAGE = 4, (1, 2, 2), 1, 3, 2, 1e-6, 3

gen = torch.Generator().manual_seed(2024)
params = {}


def conv(name, cin, cout, k):
    bound = 1 / (cin * k * k) ** 0.5
    params[name + ".weight"] = (torch.rand(cout, cin, k, k, generator=gen) * 2 - 1) * bound
    params[name + ".bias"] = (torch.rand(cout, generator=gen) * 2 - 1) * bound


def norm(name, c):  # non-trivial affine so that the test sees it
    params[name + ".weight"] = 1 + 0.2 * torch.randn(c, generator=gen)
    params[name + ".bias"] = 0.2 * torch.randn(c, generator=gen)


def resnet(name, cin, cout):
    norm(name + ".norm1", cin)
    conv(name + ".conv1", cin, cout, 3)
    norm(name + ".norm2", cout)
    conv(name + ".conv2", cout, cout, 3)
    if cin != cout:
        conv(name + ".nin_shortcut", cin, cout, 1)


def attention(name, c):
    norm(name + ".norm", c)
    for part in ("q", "k", "v", "proj_out"):
        conv(f"{name}.{part}", c, c, 1)


def middle(name, c):
    resnet(name + ".block_1", c, c)
    attention(name + ".attn_1", c)
    resnet(name + ".block_2", c, c)


# ---------------------------------------------------------------- parameters with LDM names
conv("encoder.conv_in", IMAGE, CH, 3)
width = CH
for i, m in enumerate(MULT):
    for b in range(RES_BLOCKS):
        resnet(f"encoder.down.{i}.block.{b}", width, CH * m)
        width = CH * m
    if i != len(MULT) - 1:
        conv(f"encoder.down.{i}.downsample.conv", width, width, 3)
middle("encoder.mid", width)
norm("encoder.norm_out", width)
conv("encoder.conv_out", width, 2 * Z, 3)
conv("quant_conv", 2 * Z, 2 * Z, 1)
conv("post_quant_conv", Z, Z, 1)
conv("decoder.conv_in", Z, width, 3)
middle("decoder.mid", width)
for i in reversed(range(len(MULT))):
    for b in range(RES_BLOCKS + 1):
        resnet(f"decoder.up.{i}.block.{b}", width, CH * MULT[i])
        width = CH * MULT[i]
    if i != 0:
        conv(f"decoder.up.{i}.upsample.conv", width, width, 3)
norm("decoder.norm_out", width)
conv("decoder.conv_out", width, IMAGE, 3)

weights = {k: v.float() for k, v in params.items()}
P = {k: v.double() for k, v in weights.items()}


# ---------------------------------------------------------------- forward pass (float64)
def gn(x, name):
    return F.group_norm(x, GROUPS, P[name + ".weight"], P[name + ".bias"], eps=EPS)


def cv(x, name, stride=1, padding=None):
    w = P[name + ".weight"]
    pad = w.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, w, P[name + ".bias"], stride=stride, padding=pad)


def res_fwd(x, name):
    h = cv(F.silu(gn(x, name + ".norm1")), name + ".conv1")
    h = cv(F.silu(gn(h, name + ".norm2")), name + ".conv2")
    skip = cv(x, name + ".nin_shortcut") if name + ".nin_shortcut.weight" in P else x
    return skip + h


def attn_fwd(x, name):
    b, c, hh, ww = x.shape
    h = gn(x, name + ".norm")
    q, k, v = (cv(h, f"{name}.{p}").reshape(b, c, hh * ww) for p in ("q", "k", "v"))
    weights_ = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / c ** 0.5, dim=2)  # [b, query, key]
    out = torch.einsum("bij,bcj->bci", weights_, v).reshape(b, c, hh, ww)
    return x + cv(out, name + ".proj_out")


def mid_fwd(x, name):
    return res_fwd(attn_fwd(res_fwd(x, name + ".block_1"), name + ".attn_1"), name + ".block_2")


def encode(x):
    h = cv(x, "encoder.conv_in")
    for i in range(len(MULT)):
        for b in range(RES_BLOCKS):
            h = res_fwd(h, f"encoder.down.{i}.block.{b}")
        if i != len(MULT) - 1:
            h = cv(F.pad(h, (0, 1, 0, 1)), f"encoder.down.{i}.downsample.conv", stride=2, padding=0)
    h = mid_fwd(h, "encoder.mid")
    h = cv(F.silu(gn(h, "encoder.norm_out")), "encoder.conv_out")
    mean, logvar = cv(h, "quant_conv").chunk(2, dim=1)
    return mean, logvar.clamp(-30, 20)


def decode(z):
    h = mid_fwd(cv(cv(z, "post_quant_conv"), "decoder.conv_in"), "decoder.mid")
    for i in reversed(range(len(MULT))):
        for b in range(RES_BLOCKS + 1):
            h = res_fwd(h, f"decoder.up.{i}.block.{b}")
        if i != 0:
            h = cv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"decoder.up.{i}.upsample.conv")
    return cv(F.silu(gn(h, "decoder.norm_out")), "decoder.conv_out")


x = (torch.rand(2, IMAGE, 16, 16, generator=gen) * 2 - 1).float()
with torch.no_grad():
    mean, logvar = encode(x.double())
    reconstruction = decode(mean)
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=[1, 2, 3]).mean()

extra = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4, generator=gen)}
os.makedirs(OUT, exist_ok=True)
save_file({k: v.numpy() for k, v in {**weights, **extra}.items()},
          os.path.join(OUT, "autoencoder_ldm_tiny.safetensors"), metadata={"format": "pt"})
save_file({"x": x.numpy(), "mean": mean.float().numpy(), "logvar": logvar.float().numpy(),
           "reconstruction": reconstruction.float().numpy(), "kl": kl.float().reshape(1).numpy()},
          os.path.join(OUT, "autoencoder_ldm_tiny_io.safetensors"))
print(f"{len(weights)} weight tensors, {sum(v.numel() for v in weights.values())} values; "
      f"mean std {mean.std():.3f}, logvar mean {logvar.mean():.3f}, kl {kl:.4f}, reconstruction std {reconstruction.std():.3f}")
