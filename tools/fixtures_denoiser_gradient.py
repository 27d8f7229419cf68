#!/usr/bin/env python3
"""Writes Tests/HistoDiffusionTests/Fixtures/denoiser_gradient.safetensors: one GenSelfDiff pretraining loss of a
small Attention U-Net (tools/unet_reference.py) and its gradient with respect to every parameter, in float64.

The loss is GenSelfDiff's: Σ_b λ_b · mean_{c,h,w}(ε_θ(x_t, t) − ε)², with x_t, t, ε and the P2 weights λ given.
Stored: the state dict ("<name>", F16-representable), "test.xt", "test.t", "test.noise", "test.weights", the loss
("test.loss") and the gradients ("test.grad.<name>", F32). The Swift test loads the weights by name, computes the
same loss and `Gradients.of`, and compares: a check of the whole model's backward pass, beyond the per-op tests.

Usage: python3 tools/fixtures_denoiser_gradient.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_reference import FIXTURES, AttentionUnet, randomize  # noqa: E402


def main():
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(2024)
    model = AttentionUnet(4, (1, 2, 4), 3, groups=4, heads=2, dim_head=4).double()
    randomize(model, generator)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().double())
    xt = torch.randn([2, 3, 8, 8], generator=generator, dtype=torch.float64).half().double()
    noise = torch.randn([2, 3, 8, 8], generator=generator, dtype=torch.float64).half().double()
    t = torch.tensor([3.0, 917.0], dtype=torch.float64)
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    loss = (((model(xt, t) - noise) ** 2).mean(dim=(1, 2, 3)) * weights).sum()
    loss.backward()
    tensors = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    tensors.update({"test.xt": xt.half(), "test.noise": noise.half(), "test.t": t.float(), "test.weights": weights.float(),
                    "test.loss": loss.detach().reshape(1).float()})
    for name, p in model.named_parameters():
        tensors[f"test.grad.{name}"] = p.grad.float().contiguous()
    path = os.path.join(FIXTURES, "denoiser_gradient.safetensors")
    save_file(tensors, path)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
