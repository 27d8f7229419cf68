#!/usr/bin/env python3
"""PyTorch peer for `bench`: the same workloads, timed the same way.

Usage: python3 benchmarks/torch_peer.py [--device cpu|cuda] [--threads 2] [--filter unet] [--json out.json]
                                        [--compare bench.json] [--pairs 5 --bench .build/release/bench]
Each workload gets --warmups calls, then at least --samples timed calls and --seconds of them; min and median are
printed. With --compare, prints HistoDiff/PyTorch time ratios for the workloads both files have. With --pairs N,
each workload alternates N times between `bench --filter NAME` (our binary, same --seconds) and PyTorch, prints
each pair's ratio and their median: one command gives the ratio figures, with both sides measured under the same
machine load.
The UNet training step uses the PyTorch re-implementation in tools/unet_reference.py; the MT and CPS steps the
U-Net of tools/ssl_cps_family_reference.py (made the `cpu` preset's Ciampi variant) and the losses of
tools/ssl_step_reference.py; the CDCL step the `cpu` DenseUNet built on tools/densenet_to_safetensors.py's
torchvision-layout DenseNet and the losses of tools/cdcl_reference.py.
Install the CPU build with `pip install torch==2.13.0+cpu`; torch is not a dependency of the package.
"""
import argparse, json, os, statistics, subprocess, tempfile, time, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


def measure(fn, min_seconds=1.0, warmups=5, min_samples=20, max_samples=1000, synchronize=lambda: None):
    """(min, median) seconds of fn over at least min_samples calls and min_seconds, after warmups calls."""
    for _ in range(warmups):
        fn()
    synchronize()
    samples, start = [], time.perf_counter()
    while len(samples) < max_samples and (len(samples) < min_samples or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        synchronize()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def bench_median_ms(bench, name, seconds, backend):
    """Our binary's median for one workload: `bench --filter NAME` (a substring match) and the row named exactly."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "bench.json")
        subprocess.run([bench, "--filter", name, "--seconds", str(seconds), "--backend", backend, "--json", out],
                       check=True, stdout=subprocess.DEVNULL)
        rows = [r for r in json.load(open(out))["results"] if r.get("name") == name]
    if not rows:
        raise SystemExit(f"bench has no workload named '{name}'")
    return rows[0]["median_ms"]


def ciampi_unet(width, classes=2):
    """The `cpu` preset's SegmentationUNet (Ciampi variant, width 8): tools/ssl_cps_family_reference.py's SSL4MIS U-Net
    with the encoder dropout by level, ReLU decoder blocks and the three-conv head (parameter names as ours)."""
    import torch.nn as nn
    import ssl_cps_family_reference as reference
    reference.WIDTH, reference.CLASSES = width, classes  # the reference's module constants size its U-Net
    model = reference.UNet()
    encoder = model.encoder
    blocks = [encoder.in_conv] + [getattr(encoder, f"down{level}").maxpool_conv[1] for level in range(1, 5)]
    for block, p in zip(blocks, (0.05, 0.1, 0.2, 0.3, 0.5)):
        block.conv_conv[3].p = p
    for sequential in [m for m in model.main_decoder.modules() if isinstance(m, nn.Sequential)]:
        for index, layer in enumerate(sequential):
            if isinstance(layer, nn.LeakyReLU):
                sequential[index] = nn.ReLU()
    w = width
    model.out_conv = nn.Sequential(nn.Conv2d(w, 4 * w, 3, padding=1), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Conv2d(2 * w, classes, 3, padding=1))
    count = sum(p.numel() for p in model.parameters())
    assert width != 8 or count == 461_890, f"the cpu U-Net has 461890 parameters in HistoDiff, {count} here"
    return model.train()


def dense_unet(classes=2):
    """The `cpu` preset's DenseUNet with CDCL's projector (SPEC §5): DenseNet 16/8/(2,3,4,3)/bn 4 with dropout 0.2 after
    each dense layer, decoder 64, classifier 16 with Dropout2d(0.3), projector 64 -> 32; 111_988 parameters as ours."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from densenet_to_safetensors import DenseNet

    class Dropped(nn.Module):  # torchvision's _DenseLayer with drop_rate
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            out = self.layer(x)
            c = x.shape[1]
            return torch.cat([x, F.dropout(out[:, c:], 0.2, self.training)], 1)

    class Up(nn.Module):
        def __init__(self, cin, cout, skip=None):
            super().__init__()
            self.skip = nn.Conv2d(skip, cin, 1) if skip else None
            self.conv, self.norm = nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)

        def forward(self, x, s):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            return F.relu(self.norm(self.conv(x + (self.skip(s) if self.skip else s))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            net = DenseNet(16, 8, (2, 3, 4, 3), 4)
            for block in [m for n, m in net.features.named_children() if n.startswith("denseblock")]:
                for name, layer in list(block.named_children()):
                    setattr(block, name, Dropped(layer))
            self.features = net.features
            c = [32, 40, 52, 50]
            self.up1, self.up2, self.up3 = Up(c[3], c[1], c[2]), Up(c[1], c[0]), Up(c[0], 64)
            self.classifier = nn.Sequential(nn.Conv2d(64, 16, 3, padding=1), nn.Dropout2d(0.3), nn.BatchNorm2d(16),
                                            nn.ReLU(), nn.Conv2d(16, classes, 1))
            self.projector = nn.Sequential(nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 32, 1))

        def forward(self, x):
            skips = []
            for name, module in self.features.named_children():
                x = module(x)
                if name in ("denseblock1", "denseblock2", "denseblock3"):
                    skips.append(x)
            f = self.up3(self.up2(self.up1(F.relu(x), skips[2]), skips[1]), skips[0])
            return self.classifier(f), F.normalize(self.projector(F.avg_pool2d(f, 2)), dim=1)

    model = Net().train()
    count = sum(p.numel() for p in model.parameters())
    assert count == 111_988, f"the cpu DenseUNet with projector has 111988 parameters in HistoDiff, {count} here"
    return model


def workloads(torch, device):
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)

    def training(f, *shapes):
        xs = [r(*s).requires_grad_() for s in shapes]
        out = f(*xs)
        dy = (torch.rand(out.shape, generator=g) * 2 - 1).to(device)

        def run():
            y = f(*xs)
            torch.autograd.grad(y, xs, dy)
        return run

    def unet_step(preset, parameters, batch, channels, size):
        """model(x_t, t) against fixed noise by MSE, backward, Adam: bench's `unet step` workloads."""
        model = unet_reference.presets()[preset]().train().to(device)
        count = sum(p.numel() for p in model.parameters())
        assert count == parameters, f"{preset} has {count} parameters in PyTorch, not {parameters}"
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        x, noise = r(batch, channels, size, size), r(batch, channels, size, size)
        t = torch.randint(0, 1000, (batch,), generator=g).float().to(device)

        def run():
            optimizer.zero_grad()
            F.mse_loss(model(x, t), noise).backward()
            optimizer.step()
        return run

    def method_step(method, batch, size):
        """bench's `mt|cps step cpu unet B+B S`: one step of the `cpu` preset (Adam 1e-3, ½(CE + Dice), λ at step 100
        of 1000) on one joint batch of B labelled and B unlabelled images, as the Swift methods take it."""
        import ssl_step_reference as losses
        images = (torch.rand(2 * batch, 3, size, size, generator=g) * 2 - 1).to(device)  # labelled, then unlabelled
        labels = torch.randint(0, 2, (batch, size, size), generator=g).to(device)
        weight = 0.1 * losses.sigmoid_ramp(100 * 200 // 1000, 200)  # λ_max 0.1, stair ⌊200·step/total⌋
        nets = [ciampi_unet(8).to(device) for _ in range(2 if method == "cps" else 1)]
        optimizers = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

        class Noise:
            """The teacher's input noise clamp(N(0, 0.1²), ±0.2), drawn by torch."""
            def noise(self, shape):
                return (0.1 * torch.randn(shape, device=device)).clamp(-0.2, 0.2)

        if method == "mt":
            teacher = ciampi_unet(8).to(device)
            teacher.load_state_dict(nets[0].state_dict())

        def unlabelled_loss(logits):
            if method == "mt":
                p_student = torch.softmax(logits[0][batch:], 1)
                return losses.mt_consistency(p_student, images[batch:], teacher, Noise(), 100)[0]
            pseudo = [l[batch:].detach().argmax(1) for l in logits]
            return F.cross_entropy(logits[0][batch:], pseudo[1]) + F.cross_entropy(logits[1][batch:], pseudo[0])

        def run():
            logits = [net(images) for net in nets]
            supervised = sum(losses.supervised_loss(l[:batch], labels) for l in logits)
            for optimizer in optimizers:
                optimizer.zero_grad()
            (supervised + weight * unlabelled_loss(logits)).backward()
            for optimizer in optimizers:
                optimizer.step()
            if method == "mt":  # the EMA step toward the student, decay 0.99 (SPEC §0.6)
                with torch.no_grad():
                    for t, s in zip(teacher.parameters(), nets[0].parameters()):
                        t.mul_(0.99).add_(s, alpha=0.01)
        return run

    def cdcl_step(batch, size):
        """bench's `cdcl step cpu denseunet B+B S`: one CDCL step of the `cpu` preset (Adam poly, unlabelled terms on,
        the paper's negative rule, a one-batch bank) on B labelled + B strong views through the student and the B weak
        views through the teacher, then the EMA (α 0.999)."""
        import cdcl_reference as losses
        images = (torch.rand(3 * batch, 3, size, size, generator=g) * 2 - 1).to(device)  # labelled, strong, weak
        labels = torch.randint(0, 2, (batch, size, size), generator=g).to(device)
        student, teacher = dense_unet().to(device), dense_unet().to(device)
        teacher.load_state_dict(student.state_dict())
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        bank = []

        def run():
            logits, projections = student(images[:2 * batch])
            with torch.no_grad():
                t_logits, t_projections = teacher(images[2 * batch:])
            s_logits = logits[batch:]
            supervised = F.cross_entropy(F.interpolate(logits[:batch], size=(size, size), mode="bilinear",
                                                       align_corners=True), labels)
            s_entries = losses.entries(projections[batch:], losses.projector_labels(s_logits))
            t_entries = losses.entries(t_projections, losses.projector_labels(t_logits))
            # All anchors against the bank in one block (ours takes one image's anchors at a time).
            contrast = losses.contrast_loss(s_entries, t_entries, bank[0] if bank else None, "paper")[0]
            loss = (supervised + 0.1 * contrast + 0.5 * losses.consistency(s_logits, t_logits)
                    + 0.01 * losses.entropy(s_logits))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bank[:] = [tuple(torch.cat([s, t]).detach() for s, t in zip(s_entries, t_entries))]
            with torch.no_grad():
                for t, s in zip(teacher.parameters(), student.parameters()):
                    t.mul_(0.999).add_(s, alpha=0.001)
        return run

    def segmentation(network, tile, logits=lambda network, x: network(x), side=1000):
        """bench's `segment SIDE² ARCH cpu tile T`: one side² image through the network in eval mode without autograd,
        as `histodiff segment` does it: reflect-padded T² tiles every ⌊0.75·T⌋ pixels, the last moved back to the
        edge, batches of 4, softmax of `logits(network, tiles)`, Gaussian blending (σ = T/8, weights ≥ 1e-3)."""
        model = network.eval().to(device)
        image = (torch.rand(1, 3, side, side, generator=g) * 2 - 1).to(device)
        step = int(tile * 0.75)
        starts = sorted({min(i * step, side - tile) for i in range((side - tile + step - 1) // step + 1)})
        origins = [(y, x) for y in starts for x in starts]
        profile = torch.exp(-((torch.arange(tile) - (tile - 1) / 2) ** 2) / (2 * (tile / 8) ** 2))
        weights = (profile[:, None] * profile[None, :]).clamp_min(1e-3).to(device)

        def run():
            with torch.inference_mode():
                blended = torch.zeros(2, side, side, device=device)
                totals = torch.zeros(side, side, device=device)
                for first in range(0, len(origins), 4):
                    batch = origins[first:first + 4]
                    tiles = torch.cat([image[:, :, y:y + tile, x:x + tile] for y, x in batch])
                    probabilities = logits(model, tiles).softmax(dim=1)
                    for (y, x), p in zip(batch, probabilities):
                        blended[:, y:y + tile, x:x + tile] += p * weights
                        totals[y:y + tile, x:x + tile] += weights
                return blended / totals
        return run

    import unet_reference

    def genselfdiff_logits(network, x):
        """The GenSelfDiff segmenter runs its network at t = 0."""
        return network(x, torch.zeros(x.shape[0], device=x.device))

    def dense_unet_logits(network, x):
        """DenseUNet's classifier works at half resolution; its logits are upsampled as ours are."""
        return F.interpolate(network(x)[0], size=x.shape[2:], mode="bilinear", align_corners=True)

    a, b = r(1024, 1024), r(1024, 1024)
    x, w, bias = r(8, 64, 64, 64), r(64, 64, 3, 3), r(64)
    gx, gw, gb = r(8, 128, 64, 64), r(128), r(128)
    q, k, v = r(8, 4, 1024, 32), r(8, 4, 1024, 32), r(8, 4, 1024, 32)
    return {
        "sgemm 1024³": lambda: torch.mm(a, b),
        "conv2d 3x3 8x64x64x64 fwd": lambda: F.conv2d(x, w, bias, padding=1),
        "conv2d 3x3 8x64x64x64 fwd+bwd": training(lambda x, w, b: F.conv2d(x, w, b, padding=1), (8, 64, 64, 64), (64, 64, 3, 3), (64,)),
        "group_norm 32g 8x128x64x64 fwd": lambda: F.group_norm(gx, 32, gw, gb),
        "group_norm 32g 8x128x64x64 fwd+bwd": training(lambda x, w, b: F.group_norm(x, 32, w, b), (8, 128, 64, 64), (128,), (128,)),
        # Our fused group_norm+silu against PyTorch's two ops.
        "group_norm+silu 32g 8x128x64x64 fwd": lambda: F.silu(F.group_norm(gx, 32, gw, gb)),
        "group_norm+silu 32g 8x128x64x64 fwd+bwd": training(lambda x, w, b: F.silu(F.group_norm(x, 32, w, b)),
                                                             (8, 128, 64, 64), (128,), (128,)),
        "attention 8x4x1024x32 fwd": lambda: F.scaled_dot_product_attention(q, k, v),
        "attention 8x4x1024x32 fwd+bwd": training(F.scaled_dot_product_attention, (8, 4, 1024, 32), (8, 4, 1024, 32), (8, 4, 1024, 32)),
        "unet step guided.bench828k 8x3x64x64": unet_step("guided.bench828k", 828_387, 8, 3, 64),
        "unet step guided.bench828k 8x3x128x128": unet_step("guided.bench828k", 828_387, 8, 3, 128),
        "mt step cpu unet 8+8 128": method_step("mt", 8, 128),
        "cps step cpu unet 8+8 128": method_step("cps", 8, 128),
        "cdcl step cpu denseunet 8+8 128": cdcl_step(8, 128),
        "segment 1000x1000 unet cpu tile 128": segmentation(ciampi_unet(8), 128),
        "segment 1000x1000 denseunet cpu tile 128": segmentation(dense_unet(), 128, dense_unet_logits),
        "segment 1000x1000 genselfdiff cpu tile 64": segmentation(
            unet_reference.AttentionUnet(16, (1, 2, 4), 3, out_dim=2), 64, genselfdiff_logits),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check's peer)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--compare")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--warmups", type=int, default=5)
    p.add_argument("--samples", type=int, default=20, help="at least this many timed calls")
    p.add_argument("--filter", help="only workloads whose name contains this")
    p.add_argument("--pairs", type=int, default=0, help="alternate with --bench this many times per workload")
    p.add_argument("--bench", help="our bench binary, for --pairs")
    p.add_argument("--backend", default="cpu", help="our backend in --pairs (cpu, opencl, opencl:N)")
    args = p.parse_args()
    if args.pairs and not args.bench:
        p.error("--pairs needs --bench PATH (e.g. .build/release/bench)")
    try:
        import torch
    except ImportError:
        print("torch is not importable; install the CPU build: pip install torch==2.13.0+cpu", file=sys.stderr)
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    where = f"{args.device}" + (f", {args.threads} threads" if args.device == "cpu" else "")
    results, ratios = {}, {}
    for name, fn in workloads(torch, args.device).items():
        if args.filter and args.filter not in name:
            continue
        for pair in range(max(args.pairs, 1)):
            ours = bench_median_ms(args.bench, name, args.seconds, args.backend) if args.pairs else None
            low, median = measure(fn, args.seconds, args.warmups, args.samples, synchronize=synchronize)
            results[name] = {"median_ms": median * 1e3, "min_ms": low * 1e3}
            line = f"{name:42s} {median * 1e3:9.3f} ms (min {low * 1e3:9.3f})  (PyTorch {torch.__version__}, {where})"
            if ours is not None:
                ratios.setdefault(name, []).append(ours / (median * 1e3))
                line += f"  pair {pair + 1}: HistoDiff {ours:9.3f} ms, ×{ratios[name][-1]:.2f}"
            print(line, flush=True)
    if ratios:
        print("\nHistoDiff / PyTorch, median of the alternating pairs (lower is better):")
        for name, values in ratios.items():
            print(f"{name:42s} ×{statistics.median(values):.2f}  (pairs: {', '.join(f'{v:.2f}' for v in values)})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": args.device, "threads": args.threads,
                       "median_ms": {k: v["median_ms"] for k, v in results.items()},
                       "min_ms": {k: v["min_ms"] for k, v in results.items()},
                       "pair_ratios": ratios}, f, indent=1)
    if args.compare:
        ours = {r["name"]: r["median_ms"] for r in json.load(open(args.compare))["results"] if "median_ms" in r}
        print("\nHistoDiff / PyTorch time ratio (lower is better):")
        for name, t in results.items():
            if name in ours:
                print(f"{name:42s} {ours[name]:9.3f} ms vs {t['median_ms']:9.3f} ms  ×{ours[name] / t['median_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
