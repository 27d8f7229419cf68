#!/usr/bin/env python3
"""LDM VQ first stage .ckpt → safetensors for `pretrain --autoencoder`; rerun: python3 tools/convert_ldm_vq.py --fixtures

Converting released weights (SPEC §1 step 1: DTSeg's frozen LDM vq-f4):

    python3 tools/convert_ldm_vq.py vq-f4/model.ckpt vq-f4.safetensors [--preset vq-f4] [--unsafe-pickle]

The checkpoint is a torch pickle whose `state_dict` holds either a standalone first stage (`encoder.*`,
`decoder.*`, `quantize.embedding.weight`, `quant_conv.*`, `post_quant_conv.*`, plus the training-only `loss.*`) or
a full LDM whose first stage lies under `first_stage_model.`. The first-stage tensors are kept (names as they are:
HistoDiffusion's `VQAutoencoder` uses LDM's names, so this script is the one place names are mapped), everything else
is skipped, the kept ones must load strictly into the PyTorch model below built from the preset, and the output
records the preset under the metadata key `autoencoder.preset` so that `LatentSpace.loadFirstStage` rebuilds it.
`--unsafe-pickle` unpickles arbitrary objects (PyTorch Lightning checkpoints may need it): use it on trusted files.

`--fixtures` writes into Tests/HistoDiffusionTests/Fixtures/:
- vq_f4_tiny.safetensors: a randomly initialised `vq-f4-tiny` model (non-trivial GroupNorm affines, a codebook spread
  like the latents), saved as an LDM `.ckpt` with decoy `loss.*` tensors and converted by `convert` above (a
  full-LDM `.ckpt` of the same weights is converted too and must give the same file);
- vq_f4_tiny_io.safetensors: an input x [2, 3, 16, 16] in [−1, 1] and, in float64 from the float32 weights,
  `latents` = encode(x) [2, 3, 4, 4] (not quantised), `indices` [2, 4, 4] of the nearest codebook entries and
  `reconstruction` = decode(latents) [2, 3, 16, 16] (quantised, as LDM's `decode_first_stage`).
It prints the parameter counts of `vq-f4-tiny` and of the paper's `vq-f4` (checked by VQAutoencoderTests).

The model is written from the architecture of SPEC §1 step 1 (LDM first stage): conv_in; per level ResnetBlocks (GN,
SiLU, conv3×3, GN, SiLU, conv3×3, 1×1 nin_shortcut when the width changes) and, but at the last level, a stride-2
conv3×3 after zero padding (0,1,0,1); middle ResnetBlock, single-head attention (1×1 q/k/v/proj_out, softmax over
keys of qᵀk/√C), ResnetBlock; GN, SiLU, conv_out to z channels (no `double_z`); quant_conv 1×1. The decoder mirrors
it with num_res_blocks + 1 blocks per level and nearest ×2 + conv3×3 upsampling. Quantisation replaces each latent
pixel by the codebook entry at the smallest Euclidean distance. GroupNorm eps is 1e-6.
"""
import argparse
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "Tests", "HistoDiffusionTests", "Fixtures"))
PRESET_KEY = "autoencoder.preset"
# VQAutoencoder.Configuration.presets
PRESETS = {
    "vq-f4": dict(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, n_embed=8192, groups=32),
    "vq-f4-tiny": dict(ch=4, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=3, n_embed=64, groups=2),
}
FIRST_STAGE = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
FULL_LDM_PREFIX = "first_stage_model."


# ---------------------------------------------------------------- the model, with LDM's state dict names
def norm(channels, groups):
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = norm(c, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(b, c, hh * ww) for f in (self.q, self.k, self.v))
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / c ** 0.5, dim=2)  # [b, query, key]
        return x + self.proj_out(torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, hh, ww))


class Middle(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.block_1, self.attn_1 = ResnetBlock(c, c, groups), AttnBlock(c, groups)
        self.block_2 = ResnetBlock(c, c, groups)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Resample(nn.Module):
    """`downsample` (stride-2 conv after padding right/bottom) or `upsample` (nearest ×2, conv)."""

    def __init__(self, c, down):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.down else F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    def __init__(self, blocks, resampler_name, resampler):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resampler is not None:
            setattr(self, resampler_name, resampler)
        self.resampler = resampler_name if resampler is not None else None

    def forward(self, x):
        for block in self.block:
            x = block(x)
        return getattr(self, self.resampler)(x) if self.resampler else x


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, groups, **_):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        width, levels = ch, []
        for i, m in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(width, ch * m, groups))
                width = ch * m
            last = i == len(ch_mult) - 1
            levels.append(Level(blocks, "downsample", None if last else Resample(width, down=True)))
        self.down = nn.ModuleList(levels)
        self.mid = Middle(width, groups)
        self.norm_out, self.conv_out = norm(width, groups), nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, groups, **_):
        super().__init__()
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = Middle(width, groups)
        levels = []
        for i in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(width, ch * ch_mult[i], groups))
                width = ch * ch_mult[i]
            levels.insert(0, Level(blocks, "upsample", None if i == 0 else Resample(width, down=False)))
        self.up = nn.ModuleList(levels)
        self.norm_out, self.conv_out = norm(width, groups), nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed, dim):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)

    def indices(self, z):
        pixels = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.embedding.weight
        distances = (pixels ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * pixels @ e.t()
        return distances, distances.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z):
        return self.embedding(self.indices(z)[1]).permute(0, 3, 1, 2)


class VQModel(nn.Module):
    def __init__(self, **config):
        super().__init__()
        z = config["z_channels"]
        self.encoder, self.decoder = Encoder(**config), Decoder(**config)
        self.quantize = VectorQuantizer(config["n_embed"], z)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(z, z, 1), nn.Conv2d(z, z, 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, latents):
        return self.decoder(self.post_quant_conv(self.quantize(latents)))


# ---------------------------------------------------------------- conversion
def read_checkpoint(path, unsafe_pickle):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except Exception as error:  # the pickle names a class weights_only refuses, or the file is not a checkpoint
        hint = "" if unsafe_pickle else "; if you trust the file, rerun with --unsafe-pickle"
        raise SystemExit(f"{path}: cannot be read as a torch checkpoint ({error}){hint}")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(f"{path}: holds no state_dict")
    return state


def first_stage_tensors(state):
    """The first-stage tensors under our (= LDM's VQModel) names and the names of the skipped ones."""
    prefix = FULL_LDM_PREFIX if any(k.startswith(FULL_LDM_PREFIX) for k in state) else ""
    kept, skipped = {}, []
    for name, tensor in state.items():
        inner = name[len(prefix):] if name.startswith(prefix) else ""
        if inner.startswith(FIRST_STAGE):
            kept[inner] = tensor
        else:
            skipped.append(name)
    return kept, skipped


def convert(checkpoint_path, out_path, preset, unsafe_pickle=False):
    kept, skipped = first_stage_tensors(read_checkpoint(checkpoint_path, unsafe_pickle))
    model = VQModel(**PRESETS[preset])
    try:
        model.load_state_dict({k: v.float() for k, v in kept.items()}, strict=True)
    except RuntimeError as error:
        raise SystemExit(f"{checkpoint_path}: its first stage is not a {preset} VQ model: {error}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_path,
              metadata={PRESET_KEY: preset, "format": "pt"})
    print(f"{out_path}: {len(kept)} first-stage tensors ({parameter_count(model):,} parameters) of preset {preset}; "
          f"skipped {len(skipped)} others ({', '.join(sorted({n.split('.')[0] for n in skipped})) or 'none'})")


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- fixtures
def write_fixtures():
    torch.manual_seed(2025)
    model = VQModel(**PRESETS["vq-f4-tiny"])
    with torch.no_grad():
        for module in model.modules():  # non-trivial affines, so that the test sees them
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn_like(module.weight))
                module.bias.copy_(0.2 * torch.randn_like(module.bias))
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        latents = model.encode(x)
        # LDM's codebook is trained towards the latents; spread this one like them so every entry can be chosen.
        e = model.quantize.embedding.weight
        e.copy_(latents.mean() + latents.std() * torch.randn_like(e))
    weights = model.state_dict()

    os.makedirs(FIXTURES, exist_ok=True)
    out = os.path.join(FIXTURES, "vq_f4_tiny.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        decoys = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4)}
        torch.save({"state_dict": {**weights, **decoys}, "global_step": 0}, os.path.join(tmp, "model.ckpt"))
        full = {FULL_LDM_PREFIX + k: v for k, v in weights.items()}
        full.update({"model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 3, 3, 3),
                     "model_ema.decay": torch.tensor(0.9999), "betas": torch.linspace(1e-4, 2e-2, 10)})
        torch.save({"state_dict": full}, os.path.join(tmp, "ldm.ckpt"))
        convert(os.path.join(tmp, "model.ckpt"), out, "vq-f4-tiny")
        convert(os.path.join(tmp, "ldm.ckpt"), os.path.join(tmp, "ldm.safetensors"), "vq-f4-tiny")
        a, b = load_file(out), load_file(os.path.join(tmp, "ldm.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "standalone and full LDM differ"

    reference = VQModel(**PRESETS["vq-f4-tiny"]).double()
    reference.load_state_dict({k: v.double() for k, v in load_file(out).items()})
    with torch.no_grad():
        latents = reference.encode(x.double())
        distances, indices = reference.quantize.indices(latents)
        reconstruction = reference.decode(latents)
    nearest = distances.sort(dim=1).values
    margin = (nearest[:, 1] - nearest[:, 0]).min().item()
    assert margin > 1e-3, f"a latent pixel lies {margin} from two codebook entries: choose another seed"
    io = {"x": x, "latents": latents, "indices": indices, "reconstruction": reconstruction}
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(FIXTURES, "vq_f4_tiny_io.safetensors"))
    print(f"vq-f4-tiny: {parameter_count(reference):,} parameters, {indices.unique().numel()} distinct codes in "
          f"{indices.numel()} pixels, smallest gap between the two nearest entries {margin:.4f}, latent std "
          f"{latents.std():.3f}, reconstruction std {reconstruction.std():.3f}")
    print(f"vq-f4: {parameter_count(VQModel(**PRESETS['vq-f4'])):,} parameters")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="LDM .ckpt (standalone first stage or full LDM)")
    parser.add_argument("out", nargs="?", help="the .safetensors file to write")
    parser.add_argument("--preset", default="vq-f4", choices=sorted(PRESETS))
    parser.add_argument("--unsafe-pickle", action="store_true", help="unpickle arbitrary objects (trusted files only)")
    parser.add_argument("--fixtures", action="store_true", help="write the test fixtures instead")
    args = parser.parse_args()
    if args.fixtures:
        write_fixtures()
    elif args.checkpoint and args.out:
        convert(args.checkpoint, args.out, args.preset, args.unsafe_pickle)
    else:
        parser.error("give a checkpoint and an output file, or --fixtures")


if __name__ == "__main__":
    main()
