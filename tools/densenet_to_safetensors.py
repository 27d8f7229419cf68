#!/usr/bin/env python3
"""torchvision DenseNet weights for HistoDiff's DenseUNet encoder (`--option weights=FILE`, docs/methods/cdcl.md).

Convert a torchvision DenseNet state dict (e.g. densenet161-8d451a50.pth, downloaded elsewhere) to safetensors:

    python3 tools/densenet_to_safetensors.py convert densenet161.pth densenet161.safetensors

The old torchvision checkpoints name dense-layer tensors `norm.1`, `conv.2`, ...; they are renamed `norm1`, `conv2`
as torchvision's own loader does. The file keeps torchvision's names (`features.conv0.weight`,
`features.denseblock1.denselayer1.norm1.weight`, `features.transition1.conv.weight`, `features.norm5.*`,
`classifier.*`); the DenseUNet loads every `features.*` tensor but `num_batches_tracked`.

Without torchvision (not installed here), the module below rebuilds torchvision's DenseNet `features` with the same
names. `random` exports a randomly initialised one (BatchNorm statistics randomised too) and, with --reference, the
encoder outputs of a fixed input in eval mode, which CDCLTests compares with ours:

    python3 tools/densenet_to_safetensors.py random OUT.safetensors [--init 8 --growth 4 --blocks 1,2,2,1 \
        --bn-size 2 --reference]
"""
import argparse
import re
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file


class DenseLayer(nn.Module):
    def __init__(self, channels, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    def __init__(self, channels, out):
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(channels), relu=nn.ReLU(),
                                     conv=nn.Conv2d(channels, out, 1, bias=False), pool=nn.AvgPool2d(2, 2)))


class DenseNet(nn.Module):
    """torchvision.models.DenseNet's names and forward (features, then the classifier on the pooled map)."""

    def __init__(self, init=96, growth=48, blocks=(6, 12, 36, 24), bn_size=4, classes=1000):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv0=nn.Conv2d(3, init, 7, stride=2, padding=3, bias=False), norm0=nn.BatchNorm2d(init),
            relu0=nn.ReLU(), pool0=nn.MaxPool2d(3, stride=2, padding=1)))
        channels = init
        for i, count in enumerate(blocks):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", DenseLayer(channels + j * growth, growth, bn_size)) for j in range(count)))
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += count * growth
            if i < len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def encoder_outputs(self, x):
        """What the DenseUNet decoder takes: blocks 1-3 (before their transitions) and relu(norm5)."""
        outputs = []
        for name, module in self.features.named_children():
            x = module(x)
            if name in ("denseblock1", "denseblock2", "denseblock3"):
                outputs.append(x)
        return outputs + [F.relu(x)]


def renamed(state):
    """torchvision's rename of old checkpoints: `denselayer1.norm.1.weight` -> `denselayer1.norm1.weight`."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for key, value in state.items():
        match = pattern.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def to_numpy(state):
    return {k: np.ascontiguousarray(v.detach().float().numpy()) for k, v in state.items()
            if not k.endswith("num_batches_tracked")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert")
    convert.add_argument("source")
    convert.add_argument("destination")
    random = sub.add_parser("random")
    random.add_argument("destination")
    random.add_argument("--init", type=int, default=96)
    random.add_argument("--growth", type=int, default=48)
    random.add_argument("--blocks", default="6,12,36,24")
    random.add_argument("--bn-size", type=int, default=4)
    random.add_argument("--seed", type=int, default=0)
    random.add_argument("--reference", action="store_true",
                        help="add reference.input [1, 3, 64, 64] and reference.output{0..3} (eval mode)")
    args = parser.parse_args()
    if args.command == "convert":
        state = torch.load(args.source, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        tensors = to_numpy(renamed(state))
        save_file(tensors, args.destination, metadata={"source": args.source})
        print(f"{len(tensors)} tensors -> {args.destination}")
        return
    torch.manual_seed(args.seed)
    blocks = tuple(int(b) for b in args.blocks.split(","))
    net = DenseNet(args.init, args.growth, blocks, args.bn_size).double()
    for m in net.modules():  # statistics off their initial values, so that eval mode uses them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    tensors = to_numpy(net.state_dict())
    metadata = {"init": str(args.init), "growth": str(args.growth), "blocks": args.blocks,
                "bn_size": str(args.bn_size)}
    if args.reference:
        net.eval()
        x = torch.rand(1, 3, 64, 64, dtype=torch.float64) * 2 - 1
        tensors["reference.input"] = x.float().numpy()
        with torch.no_grad():
            for i, y in enumerate(net.encoder_outputs(x)):
                tensors[f"reference.output{i}"] = np.ascontiguousarray(y.float().numpy())
    save_file(tensors, args.destination, metadata=metadata)
    print(f"{len(tensors)} tensors, {sum(v.size for v in tensors.values())} values -> {args.destination}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
