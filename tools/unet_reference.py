#!/usr/bin/env python3
"""The three diffusion UNet families of Sources/HistoDiffusion, built in PyTorch with the references' module
structure, attribute names and forward passes (SPEC §0.3, §2, §3):

- guided-diffusion / LDM `UNetModel` (ResBlock, legacy-QKV AttentionBlock, LDM SpatialTransformer),
- annotated-diffusion `Unet` as used by GenSelfDiff-HIS ("Attention U-Net"),
- Ciampi et al.'s conditional `DDPM_Wrapper` (plain U-Net, time added once).

Usage:
  python3 tools/unet_reference.py             prints the parameter count of every preset
  python3 tools/unet_reference.py --names     ... and the first state-dict names of each
  python3 tools/unet_reference.py --fixtures  writes Tests/HistoDiffusionTests/Fixtures/unet_*.safetensors: small
                                              models with random float16-representable weights (state dict under
                                              the reference names, F16), an input ("test.x", "test.t",
                                              "test.context"), the float64 forward output ("test.output", F32) and
                                              a few recorded blocks ("test.block.<name>")

Counts are the references' (state_dict() names and numel); the Swift tests assert the same numbers and load the
fixtures by name, so names, shapes and forward passes are checked together.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "Tests", "HistoDiffusionTests", "Fixtures")


# ---------------------------------------------------------------- guided-diffusion / LDM UNetModel (SPEC §0.3)

def guided_timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t[:, None].to(torch.float64) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class ResBlock(nn.Module):
    def __init__(self, cin, emb, cout, scale_shift, groups):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout if scale_shift else cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, cout), nn.SiLU(), nn.Dropout(0),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Legacy QKV order: channels grouped [head][q, k, v][depth]; q and k each scaled by d^(-1/4)."""

    def __init__(self, c, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[-1]
        d = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * d, length).split(d, dim=1)
        scale = 1 / math.sqrt(math.sqrt(d))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class CrossAttention(nn.Module):
    def __init__(self, dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0))

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, h = x.shape[0], self.heads
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale).softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(b, x.shape[1], -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, c, heads, dim_head, depth, context_dim, groups):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.proj_in = nn.Conv2d(c, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, c, 1)

    def forward(self, x, context):
        b, _, h, w = x.shape
        t = self.proj_in(self.norm(x))
        inner = t.shape[1]
        t = t.reshape(b, inner, h * w).transpose(1, 2)
        for block in self.transformer_blocks:
            t = block(t, context)
        return x + self.proj_out(t.transpose(1, 2).reshape(b, inner, h, w))


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def run_block(block, h, emb, context):
    for layer in block:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, SpatialTransformer):
            h = layer(h, context)
        else:
            h = layer(h)
    return h


class UNetModel(nn.Module):
    """`mirrored`: the decoder takes skips from the encoder ResBlocks only, num_res_blocks blocks per level."""

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult, num_heads=1, num_head_channels=-1, scale_shift=False, context_dim=None,
                 transformer_depth=1, mirrored=False, groups=32):
        super().__init__()
        self.model_channels = model_channels
        emb = 4 * model_channels

        def attention(ch):
            if num_head_channels == -1:
                heads, dim_head = num_heads, ch // num_heads
            else:
                heads, dim_head = ch // num_head_channels, num_head_channels
            if context_dim is None:
                return AttentionBlock(ch, heads, groups)
            return SpatialTransformer(ch, heads, dim_head, transformer_depth, context_dim, groups)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = channel_mult[0] * model_channels
        self.input_blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, ds = ([] if mirrored else [ch]), 1
        self.skip_sources = set() if mirrored else {0}
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels, scale_shift, groups)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                self.skip_sources.add(len(self.input_blocks))
                self.input_blocks.append(nn.Sequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                if not mirrored:
                    self.skip_sources.add(len(self.input_blocks))
                    chans.append(ch)
                self.input_blocks.append(nn.Sequential(Downsample(ch)))
                ds *= 2
        self.middle_block = nn.Sequential(ResBlock(ch, emb, ch, scale_shift, groups), attention(ch),
                                          ResBlock(ch, emb, ch, scale_shift, groups))
        self.output_blocks = nn.ModuleList()
        per_level = num_res_blocks if mirrored else num_res_blocks + 1
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(per_level):
                layers = [ResBlock(ch + chans.pop(), emb, model_channels * mult, scale_shift, groups)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                if level and i == per_level - 1:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(nn.Sequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, t, context=None, record=None):
        emb = self.time_embed(guided_timestep_embedding(t, self.model_channels).to(x.dtype))
        hs, h = [], x
        for i, block in enumerate(self.input_blocks):
            h = run_block(block, h, emb, context)
            record and record(f"input_blocks.{i}", h)
            if i in self.skip_sources:
                hs.append(h)
        h = run_block(self.middle_block, h, emb, context)
        record and record("middle_block", h)
        for i, block in enumerate(self.output_blocks):
            h = run_block(block, torch.cat([h, hs.pop()], dim=1), emb, context)
            record and record(f"output_blocks.{i}", h)
        return self.out(h)


# ---------------------------------------------------------------- annotated-diffusion Unet (GenSelfDiff, SPEC §2)

class SinusoidalPositionEmbeddings(nn.Module):
    """lucidrains convention: f_i = exp(-ln(10000)·i/(half-1)), [sin, cos]; computed in float64 and returned in the
    dtype of t (the models pass t in their input's dtype, so float32 runs get float32 embeddings)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float64, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t[:, None].to(torch.float64) * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1).to(t.dtype)


class Block(nn.Module):
    def __init__(self, din, dout, groups):
        super().__init__()
        self.proj = nn.Conv2d(din, dout, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dout)

    def forward(self, x):
        return F.silu(self.norm(self.proj(x)))


class ResnetBlock(nn.Module):
    def __init__(self, din, dout, time_dim=None, groups=8):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dout)) if time_dim else None
        self.block1, self.block2 = Block(din, dout, groups), Block(dout, dout, groups)
        self.res_conv = nn.Conv2d(din, dout, 1) if din != dout else nn.Identity()

    def forward(self, x, t=None):
        h = self.block1(x)
        if self.mlp is not None and t is not None:
            h = self.mlp(t)[:, :, None, None] + h
        return self.block2(h) + self.res_conv(x)


class LinearAttention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(heads * dim_head, dim, 1), nn.GroupNorm(1, dim))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Attention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        sim = torch.einsum("bhdi,bhdj->bhij", q * self.scale, k)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        out = torch.einsum("bhij,bhdj->bhid", sim.softmax(dim=-1), v)
        return self.to_out(out.transpose(2, 3).reshape(b, -1, h, w))


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn, self.norm = fn, nn.GroupNorm(1, dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class AttentionUnet(nn.Module):
    def __init__(self, dim=64, dim_mults=(1, 2, 4, 8), channels=3, out_dim=None, softmax=False, groups=8, heads=4,
                 dim_head=32):
        super().__init__()
        self.softmax = softmax
        init_dim = dim // 3 * 2
        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3)
        dims = [init_dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        t = 4 * dim
        self.time_mlp = nn.Sequential(SinusoidalPositionEmbeddings(dim), nn.Linear(dim, t), nn.GELU(), nn.Linear(t, t))
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (din, dout) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(din, dout, t, groups), ResnetBlock(dout, dout, t, groups),
                Residual(PreNorm(dout, LinearAttention(dout, heads, dim_head))),
                nn.Identity() if last else nn.Conv2d(dout, dout, 4, 2, 1)]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, t, groups)
        self.mid_attn = Residual(PreNorm(mid, Attention(mid, heads, dim_head)))
        self.mid_block2 = ResnetBlock(mid, mid, t, groups)
        for din, dout in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(2 * dout, din, t, groups), ResnetBlock(din, din, t, groups),
                Residual(PreNorm(din, LinearAttention(din, heads, dim_head))), nn.ConvTranspose2d(din, din, 4, 2, 1)]))
        self.final_conv = nn.Sequential(ResnetBlock(dim, dim, groups=groups), nn.Conv2d(dim, out_dim or channels, 1))

    def forward(self, x, time, context=None, record=None):
        x = self.init_conv(x)
        t = self.time_mlp(time.to(x.dtype))
        h = []
        for i, (block1, block2, attn, downsample) in enumerate(self.downs):
            x = attn(block2(block1(x, t), t))
            record and record(f"downs.{i}.2", x)
            h.append(x)
            x = downsample(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t)), t)
        record and record("mid_block2", x)
        for i, (block1, block2, attn, upsample) in enumerate(self.ups):
            x = upsample(attn(block2(block1(torch.cat((x, h.pop()), dim=1), t), t)))
            record and record(f"ups.{i}.3", x)
        x = self.final_conv(x)
        return x.softmax(dim=1) if self.softmax else x


# ---------------------------------------------------------------- Ciampi et al. conditional UNet (SPEC §3)

class ConvBlockLeakyRelu(nn.Module):
    def __init__(self, cin, cout, p):
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(), nn.Dropout(p),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU())

    def forward(self, x):
        return self.conv_conv(x)


class DownBlock(nn.Module):
    def __init__(self, cin, cout, p):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), ConvBlockLeakyRelu(cin, cout, p))

    def forward(self, x):
        return self.maxpool_conv(x)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        return self.conv(x)


class UpBlock(nn.Module):
    def __init__(self, c1, c2, cout):
        super().__init__()
        self.conv1x1 = nn.Conv2d(c1, c2, 1)
        self.conv = ConvBlock(2 * c2, cout)

    def forward(self, x1, x2):
        x1 = F.interpolate(self.conv1x1(x1), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([x2, x1], dim=1))


class ConditionalUnet(nn.Module):
    def __init__(self, target_channels, condition_channels, dim=64, dim_mults=(1, 2, 4, 8),
                 dropout=(0.05, 0.1, 0.2, 0.3, 0.4)):
        super().__init__()
        self.init_conv = ConvBlockLeakyRelu(target_channels + condition_channels, dim, dropout[0])
        dims = [dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.time_mlp = nn.Sequential(SinusoidalPositionEmbeddings(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                                      nn.Linear(4 * dim, dim))
        self.downs = nn.ModuleList([nn.ModuleList([DownBlock(a, b, dropout[i + 1])]) for i, (a, b) in enumerate(in_out)])
        self.ups = nn.ModuleList([nn.ModuleList([UpBlock(b, a, a)]) for a, b in reversed(in_out)])
        self.final_conv = nn.Conv2d(dim, target_channels, 3, padding=1)

    def forward(self, x, time, context=None, record=None):
        x = self.init_conv(torch.cat([x, context], dim=1))
        x = x + self.time_mlp(time.to(x.dtype))[:, :, None, None]
        h = []
        for i, (down,) in enumerate(self.downs):
            h.append(x)
            x = down(x)
            record and record(f"downs.{i}.0", x)
        for i, (up,) in enumerate(self.ups):
            x = up(x, h.pop())
            record and record(f"ups.{i}.0", x)
        return self.final_conv(x)


# ---------------------------------------------------------------- presets (the Swift presets' reference counts)

def presets():
    return {
        "guided.dtsegLDM": lambda: UNetModel(3, 224, 3, 2, {2, 4, 8}, (1, 2, 3, 4), num_head_channels=32),
        "guided.pathSegDiffLDM": lambda: UNetModel(3, 192, 3, 2, {2, 4, 8}, (1, 2, 3, 5), num_heads=1, context_dim=512),
        # P2 / guided-diffusion defaults at 256²: attention_resolutions "16,8" → ds {16, 32}.
        "guided.guidedDiffusion(256)": lambda: UNetModel(3, 128, 3, 2, {16, 32}, (1, 1, 2, 2, 4, 4), num_heads=4, scale_shift=True),
        "guided.bench828k": lambda: UNetModel(3, 32, 3, 1, {4}, (1, 2, 2), num_heads=4, mirrored=True),
        "guided.cpu": lambda: UNetModel(3, 32, 3, 2, {4, 8}, (1, 1, 1, 1), num_head_channels=32),
        "attention.genSelfDiff": lambda: AttentionUnet(64, (1, 2, 4, 8), 3),
        "attention.genSelfDiffSegmentation(2)": lambda: AttentionUnet(64, (1, 2, 4, 8), 3, out_dim=2, softmax=True),
        "attention.cpu": lambda: AttentionUnet(16, (1, 2, 4), 3),
        "conditional.ciampiMask(2, 3)": lambda: ConditionalUnet(2, 3),
        "conditional.ciampiImage(3, 2)": lambda: ConditionalUnet(3, 2),
        "conditional.cpuMask(2, 3)": lambda: ConditionalUnet(2, 3, dim=16),
        "conditional.cpuImage(3, 2)": lambda: ConditionalUnet(3, 2, dim=16),
    }


# ---------------------------------------------------------------- forward fixtures (small models, random weights)

def fixture_cases():
    """name → (model, input shape, context shape or None, recorded blocks). The Swift test builds the same
    configurations (HistoDiffusionTests/UNetReferenceTests.swift)."""
    return {
        # scale-shift, heads from num_head_channels, reference layout, 3 levels
        "guided_scale_shift": (UNetModel(3, 8, 3, 1, {2}, (1, 2, 2), num_head_channels=4, scale_shift=True, groups=4),
                               [2, 3, 8, 8], None, ["middle_block", "output_blocks.1", "output_blocks.5"]),
        # LDM spatial transformer with cross-attention, mirrored decoder, 2 ResBlocks per level
        "guided_cross_attention": (UNetModel(4, 8, 2, 2, {1, 2}, (1, 2), num_heads=2, context_dim=6, mirrored=True, groups=4),
                                   [2, 4, 8, 8], [2, 3, 6], ["input_blocks.2", "output_blocks.3"]),
        # GenSelfDiff's segmentation head (softmax) on a 3-level body
        "attention_segmentation": (AttentionUnet(4, (1, 2, 4), 3, out_dim=3, softmax=True, groups=4, heads=2, dim_head=4),
                                   [2, 3, 8, 8], None, ["downs.1.2", "mid_block2", "ups.1.3"]),
        # Ciampi's mask pathway (eval mode: running statistics, no dropout)
        "conditional_mask": (ConditionalUnet(2, 3, dim=8, dim_mults=(1, 2), dropout=(0.05, 0.1, 0.2)),
                             [2, 2, 8, 8], [2, 3, 8, 8], ["downs.1.0", "ups.0.0"]),
    }


def randomize(model, generator):
    """Random weights of a useful scale (the reference's zero-initialised convolutions would hide the blocks
    behind them), random BatchNorm running statistics."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) / math.sqrt(p[0].numel()))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=generator, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator, dtype=torch.float64))


def write_fixtures():
    from safetensors.torch import save_file
    for name, (model, x_shape, context_shape, blocks) in fixture_cases().items():
        generator = torch.Generator().manual_seed(1234)
        model = model.double().eval()
        randomize(model, generator)
        # float16-representable weights and inputs (stored as F16 to keep the files small), so both sides compute
        # from the same numbers; the outputs are float64 results stored as F32
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(t.half().double())
        x = torch.randn(x_shape, generator=generator, dtype=torch.float64).half().double()
        t = torch.tensor([3.0, 917.0], dtype=torch.float64)
        context = None if context_shape is None else \
            torch.randn(context_shape, generator=generator, dtype=torch.float64).half().double()
        recorded = {}
        with torch.no_grad():
            out = model(x, t, context, record=lambda key, value: recorded.__setitem__(key, value) if key in blocks else None)
        tensors = {k: v.half().contiguous() for k, v in model.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        tensors["test.x"] = x.half()
        tensors["test.t"] = t.float()
        if context is not None:
            tensors["test.context"] = context.half()
        tensors["test.output"] = out.float()
        for key in blocks:
            tensors[f"test.block.{key}"] = recorded[key].float().contiguous()
        path = os.path.join(FIXTURES, f"unet_{name}.safetensors")
        save_file(tensors, path, metadata={"parameters": str(sum(p.numel() for p in model.parameters()))})
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def main():
    if "--fixtures" in sys.argv:
        write_fixtures()
        return
    show_names = "--names" in sys.argv
    for name, build in presets().items():
        model = build()
        print(f"{name}: {sum(p.numel() for p in model.parameters())}")
        if show_names:
            for key, p in list(model.state_dict().items())[:12]:
                print(f"    {key} {list(p.shape)}")


if __name__ == "__main__":
    main()
