#!/usr/bin/env python3
"""HIPT ViT-256/16 (DINO ViT-S/16) → safetensors for `pretrain --hipt`; rerun: python3 tools/hipt_export.py --fixtures

Converting the released weights (SPEC §4: PathSegDiff's conditioning, HIPT's `vit256_small_dino.pth`):

    python3 tools/hipt_export.py vit256_small_dino.pth hipt256.safetensors [--heads 6] [--unsafe-pickle]

The checkpoint is a torch pickle holding the ViT's state dict, possibly under `teacher` (DINO's; taken first),
`state_dict` or `model`, and with `teacher.`, `backbone.` or `module.` prefixes on the names; the prefixes are
stripped, DINO's projection head (`head.*`) is skipped, and what remains must load strictly into the model below.
DINO's checkpoints also hold their training arguments (an argparse Namespace), which torch refuses to load as weights
only: add `--unsafe-pickle` for such a trusted file. The output records the architecture under the metadata keys
`hipt.embed_dim`, `hipt.depth`, `hipt.num_heads`, `hipt.patch_size` (read by HistoDiffusion's
`VisionTransformer.load`).

    python3 tools/hipt_export.py --random OUT.safetensors [--embed-dim 384 --depth 12 --heads 6 --seed 0]

writes a randomly initialised export of the same format (weights cannot be downloaded here).

`--fixtures` writes into Tests/HistoDiffusionTests/Fixtures/:
- hipt_vit_tiny.safetensors: a random ViT of DINO's structure (embed 32, 2 heads, depth 2, patch 16, positions for
  224²) in the export format, its weights stored as float16 (the reference computes with the rounded values);
- hipt_vit_tiny_io.safetensors: `input64` [2, 3, 64, 64] and `input56` [1, 3, 56, 56] pixels in [0, 1] (the 224²
  input is `input56` repeated ×4 along both axes, nearest neighbour, to keep the file small), their CLS outputs
  `cls64` [2, 32] (positions interpolated to 4×4) and `cls224` [1, 32] (native 14×14), and `pos4x6` [1, 25, 32],
  the positional embedding interpolated to a 4×6 grid (a 64×96 input).
It prints the parameter counts of the tiny ViT and of DINO's ViT-S/16 (checked by HIPTTests).

The model is written from DINO's ViT-S/16 as SPEC §4 and the brief of issue 17 describe it: patch embedding conv
16×16 stride 16, a CLS token and a learned positional embedding for 1 + 14² tokens, bicubically interpolated
(align_corners False, scale factor (grid + 0.1)/14 as DINO's `interpolate_pos_encoding`) for other grids; 12
pre-norm blocks (LayerNorm eps 1e-6 → multi-head attention with a biased qkv → residual; LayerNorm → MLP 4× with
exact GELU → residual); a final LayerNorm, whose CLS row is the output. Inputs are ImageNet-normalised [0, 1] pixels.
"""
import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "Tests", "HistoDiffusionTests", "Fixtures"))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREFIXES = ("module.", "teacher.", "backbone.")


# ---------------------------------------------------------------- the model, with DINO's state dict names
class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, embed_dim=384, depth=12, heads=6, patch=16, image=224):
        super().__init__()
        self.heads = heads
        self.patch_embed = PatchEmbed(patch, embed_dim)
        grid = image // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def interpolate_pos_encoding(self, rows, columns):
        """Positions for a rows × columns patch grid (DINO: bicubic, scale factor (grid + 0.1)/√N)."""
        stored = self.pos_embed.shape[1] - 1
        if rows * columns == stored and rows == columns:
            return self.pos_embed
        side, dim = int(math.sqrt(stored)), self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (columns + 0.1) / side), mode="bicubic")
        assert grid.shape[-2:] == (rows, columns)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)

    def forward(self, pixels):
        """pixels [N, 3, H, W] in [0, 1] → the CLS token [N, embed_dim]."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype).view(1, 3, 1, 1)
        x = self.patch_embed((pixels - mean) / std)
        p = self.patch_embed.patch
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(pixels.shape[2] // p, pixels.shape[3] // p)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def metadata(model):
    return {"hipt.embed_dim": str(model.pos_embed.shape[-1]), "hipt.depth": str(len(model.blocks)),
            "hipt.num_heads": str(model.heads), "hipt.patch_size": str(model.patch_embed.patch)}


def save(model, path, dtype=torch.float32):
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata=metadata(model))


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- commands
def convert(checkpoint, out, heads, unsafe_pickle=False):
    state = torch.load(checkpoint, map_location="cpu", weights_only=not unsafe_pickle)
    for key in ("teacher", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    renamed = {}
    for name, tensor in state.items():
        while name.startswith(PREFIXES):
            name = name[next(len(p) for p in PREFIXES if name.startswith(p)):]
        if not name.startswith("head."):
            renamed[name] = tensor.float()
    depth = len({n.split(".")[1] for n in renamed if n.startswith("blocks.")})
    embed_dim = renamed["cls_token"].shape[-1]
    patch = renamed["patch_embed.proj.weight"].shape[-1]
    side = int(math.sqrt(renamed["pos_embed"].shape[1] - 1))
    model = VisionTransformer(embed_dim, depth, heads, patch, side * patch)
    model.load_state_dict(renamed, strict=True)
    save(model, out)
    print(f"{out}: ViT embed {embed_dim}, depth {depth}, heads {model.heads}, patch {patch}, "
          f"{parameter_count(model):,} parameters")


def random_export(out, embed_dim, depth, heads, seed):
    torch.manual_seed(seed)
    model = VisionTransformer(embed_dim, depth, heads)
    save(model, out)
    print(f"{out}: random ViT embed {embed_dim}, depth {depth}, heads {heads}, {parameter_count(model):,} parameters")


def fixtures():
    torch.manual_seed(17)
    model = VisionTransformer(embed_dim=32, depth=2, heads=2)
    with torch.no_grad():  # non-trivial LayerNorm affines, rounded to float16 as stored
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            p.copy_(p.half().float())
    os.makedirs(FIXTURES, exist_ok=True)
    save(model, os.path.join(FIXTURES, "hipt_vit_tiny.safetensors"), dtype=torch.float16)
    input64, input56 = torch.rand(2, 3, 64, 64), torch.rand(1, 3, 56, 56)
    input224 = input56.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    with torch.no_grad():
        io = {"input64": input64, "input56": input56, "cls64": model(input64), "cls224": model(input224),
              "pos4x6": model.interpolate_pos_encoding(4, 6)}
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(FIXTURES, "hipt_vit_tiny_io.safetensors"))
    print(f"tiny ViT: {parameter_count(model):,} parameters; "
          f"DINO ViT-S/16 (HIPT-256): {parameter_count(VisionTransformer()):,} parameters")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", metavar="CHECKPOINT OUT", help="convert CHECKPOINT to OUT")
    parser.add_argument("--random", metavar="OUT", help="write a randomly initialised export to OUT")
    parser.add_argument("--embed-dim", type=int, default=384, help="--random: embedding width")
    parser.add_argument("--depth", type=int, default=12, help="--random: blocks")
    parser.add_argument("--heads", type=int, default=6, help="attention heads (the weights do not say; HIPT-256 has 6)")
    parser.add_argument("--seed", type=int, default=0, help="--random: torch seed")
    parser.add_argument("--fixtures", action="store_true", help="write the test fixtures")
    parser.add_argument("--unsafe-pickle", action="store_true", help="unpickle arbitrary objects (trusted files only)")
    args = parser.parse_args()
    if args.fixtures:
        fixtures()
    elif args.random:
        random_export(args.random, args.embed_dim, args.depth, args.heads, args.seed)
    elif len(args.paths) == 2:
        convert(*args.paths, heads=args.heads, unsafe_pickle=args.unsafe_pickle)
    else:
        parser.error("give CHECKPOINT OUT, --random OUT or --fixtures")


if __name__ == "__main__":
    main()
