#!/usr/bin/env python3
"""Writes the HistoNN test fixtures into Tests/HistoNNTests/Fixtures/:

- nn.json: PyTorch optimizer trajectories (SGD/Adam/AdamW/RAdam on a fixed least-squares problem: the initial
  parameters, then per step the gradients torch computed and the parameters after the step), learning-rate
  schedules (StepLR, PolynomialLR, CosineAnnealingLR, LinearLR), sinusoidal timestep embeddings (guided-diffusion
  and lucidrains code, float32) and the tensors of the safetensors files below.
- python_written.safetensors: F32 tensors and metadata written with numpy by the format spec; the Swift writer
  must produce the same bytes for the same tensors, and the Swift reader must read it.
- python_dtypes.safetensors: F16/BF16/F64/I64/I32 tensors for the reader's dtype conversions.

Usage: python3 tools/fixtures_nn.py            (needs torch and numpy)
       python3 tools/fixtures_nn.py --check FILE  (parses FILE by the spec and prints its tensors)
"""
import json, math, os, struct, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoNNTests", "Fixtures")
STEPS = 10


def flat(t):
    return [float(v) for v in np.asarray(t, dtype=np.float64).reshape(-1)]


# ---------------------------------------------------------------- safetensors by the spec

def write_safetensors(path, tensors, metadata, dtypes=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors:
        dtype = (dtypes or {}).get(name, "F32")
        np_type = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}.get(dtype)
        if dtype == "BF16":  # truncate float32 bit patterns (the test values are exact in bf16)
            data = (np.asarray(arr, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            data = np.asarray(arr).astype(np_type).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.asarray(arr).shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", e
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtype="<f4").reshape(e["shape"])
    return header.get("__metadata__", {}), out


SAFETENSORS_TENSORS = [
    ("encoder.conv.weight", np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1) * 0.5 - 1),
    ("b", np.array([1.5, -2.25, 3e-8], dtype=np.float32)),
    ("scalar", np.array(7.0, dtype=np.float32)),
    ("empty", np.zeros((0, 4), dtype=np.float32)),
    ("Zeta/with slash", np.array([[1, 2], [3, 4]], dtype=np.float32)),
]
SAFETENSORS_METADATA = {"format": "pt", "note": "h\u00e9llo \"quoted\" \\ tab\t", "step": "12"}
DTYPE_TENSORS = [("half", np.array([1.0, -0.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08], dtype=np.float32)),
                 ("bf", np.array([1.0, -2.5, 3.140625], dtype=np.float32)),
                 ("double", np.array([0.1, -1e10], dtype=np.float64)),
                 ("long", np.array([[3, -4]], dtype=np.int64)),
                 ("int", np.array([2147483647], dtype=np.int32))]
DTYPES = {"half": "F16", "bf": "BF16", "double": "F64", "long": "I64", "int": "I32"}


# ---------------------------------------------------------------- optimizers

def problem():
    rng = np.random.default_rng(2024)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.standard_normal((6, 3)).astype(np.float32)
    return w, b, x, y


OPTIMIZER_CASES = {
    "sgd": dict(type="SGD", lr=0.1, groups=[(["w", "b"], 0.0, 1.0)]),
    "sgd_momentum": dict(type="SGD", lr=0.05, momentum=0.9, dampening=0.1, groups=[(["w", "b"], 0.01, 1.0)]),
    "sgd_nesterov": dict(type="SGD", lr=0.05, momentum=0.9, nesterov=True, groups=[(["w", "b"], 0.001, 1.0)]),
    "adam": dict(type="Adam", lr=0.01, groups=[(["w", "b"], 0.01, 1.0)]),
    "adamw": dict(type="AdamW", lr=0.01, betas=(0.85, 0.99), eps=1e-6, groups=[(["w", "b"], 0.1, 1.0)]),
    "adamw_groups": dict(type="AdamW", lr=0.01, groups=[(["w"], 0.05, 1.0), (["b"], 0.0, 2.0)]),
    "radam": dict(type="RAdam", lr=0.01, groups=[(["w", "b"], 0.0, 1.0)]),
    "radam_decoupled": dict(type="RAdam", lr=0.01, decoupled=True, groups=[(["w"], 0.1, 1.0), (["b"], 0.0, 1.0)]),
}


def optimizer_case(spec):
    import torch
    w0, b0, x, y = problem()
    params = {"w": torch.tensor(w0, requires_grad=True), "b": torch.tensor(b0, requires_grad=True)}
    groups = [{"params": [params[n] for n in names], "weight_decay": wd, "lr": spec["lr"] * scale}
              for names, wd, scale in spec["groups"]]
    betas, eps = spec.get("betas", (0.9, 0.999)), spec.get("eps", 1e-8)
    kind = spec["type"]
    if kind == "SGD":
        opt = torch.optim.SGD(groups, lr=spec["lr"], momentum=spec.get("momentum", 0.0),
                              dampening=spec.get("dampening", 0.0), nesterov=spec.get("nesterov", False))
    elif kind == "Adam":
        opt = torch.optim.Adam(groups, lr=spec["lr"], betas=betas, eps=eps)
    elif kind == "AdamW":
        opt = torch.optim.AdamW(groups, lr=spec["lr"], betas=betas, eps=eps)
    else:
        opt = torch.optim.RAdam(groups, lr=spec["lr"], betas=betas, eps=eps,
                                decoupled_weight_decay=spec.get("decoupled", False))
    xt, yt = torch.tensor(x), torch.tensor(y)
    steps = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((xt @ params["w"].T + params["b"] - yt) ** 2).mean()
        loss.backward()
        grads = {n: flat(p.grad) for n, p in params.items()}
        opt.step()
        steps.append({"grads": grads, "after": {n: flat(p.detach()) for n, p in params.items()}})
    return {
        "type": kind, "lr": spec["lr"], "momentum": spec.get("momentum", 0.0), "dampening": spec.get("dampening", 0.0),
        "nesterov": spec.get("nesterov", False), "beta1": betas[0], "beta2": betas[1], "eps": eps,
        "decoupled": spec.get("decoupled", False),
        "groups": [{"params": names, "weight_decay": wd, "lr_scale": scale} for names, wd, scale in spec["groups"]],
        "initial": {"w": {"shape": [3, 4], "values": flat(w0)}, "b": {"shape": [3], "values": flat(b0)}},
        "steps": steps,
    }


def schedules():
    import torch
    def run(make, n):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out
    S = torch.optim.lr_scheduler
    return {
        "step": run(lambda o: S.StepLR(o, step_size=3, gamma=0.5), 12),
        "poly": run(lambda o: S.PolynomialLR(o, total_iters=10, power=0.9), 12),
        "cosine": run(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 11),
        "linear_warmup": run(lambda o: S.LinearLR(o, start_factor=0.25, total_iters=4), 8),
    }


def timestep_embeddings():
    import torch
    t = torch.tensor([0.0, 1.0, 50.0, 999.0])

    def guided(dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def lucidrains(dim):
        half = dim // 2
        e = math.log(10000) / (half - 1)
        e = torch.exp(torch.arange(half) * -e)
        e = t[:, None] * e[None, :]
        return torch.cat((e.sin(), e.cos()), dim=-1)

    return {"timesteps": flat(t),
            "guided_8": flat(guided(8)), "guided_7": flat(guided(7)), "lucidrains_8": flat(lucidrains(8))}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        metadata, tensors = read_safetensors(sys.argv[2])
        print("metadata:", metadata)
        for name, arr in tensors.items():
            print(name, list(arr.shape), arr.reshape(-1)[:8])
        return
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "python_written.safetensors"), SAFETENSORS_TENSORS, SAFETENSORS_METADATA)
    write_safetensors(os.path.join(OUT, "python_dtypes.safetensors"), DTYPE_TENSORS, {}, DTYPES)
    metadata, back = read_safetensors(os.path.join(OUT, "python_written.safetensors"))
    assert metadata == SAFETENSORS_METADATA and all(np.array_equal(back[n], a) for n, a in SAFETENSORS_TENSORS)
    _, _, x, y = problem()
    fixture = {
        "problem": {"x": flat(x), "y": flat(y), "loss": "mean((x @ w.T + b - y)^2), x [6, 4], y [6, 3]"},
        "optimizers": {name: optimizer_case(spec) for name, spec in OPTIMIZER_CASES.items()},
        "schedules": schedules(),
        "timestep_embedding": timestep_embeddings(),
        "safetensors": {
            "tensors": [{"name": n, "shape": list(a.shape), "values": flat(a)} for n, a in SAFETENSORS_TENSORS],
            "metadata": SAFETENSORS_METADATA,
            "dtypes": {n: {"shape": list(a.shape), "values": flat(a.astype(np.float32))} for n, a in DTYPE_TENSORS},
        },
    }
    with open(os.path.join(OUT, "nn.json"), "w") as f:
        json.dump(fixture, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
