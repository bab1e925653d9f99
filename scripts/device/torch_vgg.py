#!/usr/bin/env python3
"""PyTorch's VGG16 conv base with the same weights as the Candle one, for the GPU check (issue 18).

Reads PAYLOAD/vgg16.f16.safetensors (the conv weights and, in its metadata, the layer list written
by `accel::vgg::Vgg::save`), builds the network from torch.nn.functional (conv2d + relu, max_pool2d),
and prints:
  * its features on the photos the Rust check preprocessed (WORK/torch_input.safetensors) against
    the CPU reference carried in the payload (max rel. diff, cosine), f32 and bf16;
  * img/s at 224 px, batch 64: f32 (TF32 off), f32 with TF32, bf16, bf16 channels_last, with
    cudnn.benchmark on — the same run, the same GPU, the same weights as Candle's numbers.
Writes WORK/torch_summary.json. `--cpu` runs it on the CPU with small counts.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--payload", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"torch: not available here ({e}); PyTorch comparison skipped")
        return 0

    dev = torch.device("cpu" if a.cpu else "cuda")
    if not a.cpu and not torch.cuda.is_available():
        print("torch: CUDA not available to PyTorch; comparison skipped")
        return 1
    path = os.path.join(a.payload, "vgg16.f16.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    layers = [item.split(":") for item in meta["layers"].split(";")]
    weights = load_file(path)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if not a.cpu else 'cpu'}; "
          f"{len(layers)} layers up to {meta.get('output')}")

    def params(dtype, channels_last=False):
        out = {}
        for k, v in weights.items():
            t = v.to(device=dev, dtype=dtype)
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            out[k] = t
        return out

    def forward(x, w):
        for layer in layers:
            if layer[0] == "conv":
                node, act = layer[1], layer[2]
                x = F.conv2d(x, w[node + ".weight"], w[node + ".bias"], padding=1)
                if act == "relu":
                    x = F.relu(x)
            elif layer[0] == "pool":
                x = F.max_pool2d(x, 2)
            elif layer[0] == "relu":
                x = F.relu(x)
            else:
                raise ValueError(f"unknown layer {layer}")
        return x

    summary = {"torch": torch.__version__}
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        ref_path = os.path.join(a.work, "torch_input.safetensors")
        if os.path.exists(ref_path):
            ref = load_file(ref_path)
            x0, r = ref["input"].to(dev), ref["features"].double().flatten()
            for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
                y = forward(x0.to(dtype), params(dtype)).double().cpu().flatten()
                cos = float(torch.dot(y, r) / (y.norm() * r.norm()))
                rel = float((y - r).abs().max() / r.abs().max())
                print(f"   torch {name} vs the CPU reference ({x0.shape[0]} photos): max rel. diff {rel:.2e}, cosine {cos:.6f}")
                summary[f"cosine_{name}"] = round(cos, 6)
            base = x0
        else:
            print(f"   no {ref_path} (the Rust check writes it): speed on random input only")
            base = torch.randn(8, 3, a.size, a.size, device=dev) * 60
        reps = -(-a.batch // base.shape[0])
        x = base.repeat(reps, 1, 1, 1)[: a.batch].contiguous()
        runs = [("f32", torch.float32, False, False), ("f32+tf32", torch.float32, True, False),
                ("bf16", torch.bfloat16, False, False), ("bf16 channels_last", torch.bfloat16, False, True)]
        if a.cpu:
            runs = [r for r in runs if not r[2] and not r[3] and r[1] == torch.float32]
        for label, dtype, tf32, cl in runs:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            w = params(dtype, cl)
            xi = x.to(dtype)
            if cl:
                xi = xi.contiguous(memory_format=torch.channels_last)
            for _ in range(3):
                forward(xi, w)
            if not a.cpu:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(a.iters):
                forward(xi, w)
            if not a.cpu:
                torch.cuda.synchronize()
            s = time.perf_counter() - t
            rate = a.iters * a.batch / s
            print(f"   torch {label}: batch {a.batch} at {a.size} px: {rate:.0f} img/s ({1e3 * s / a.iters:.2f} ms/batch)")
            summary[f"extract_img_s_{label.replace(' ', '_')}"] = round(rate)
    with open(os.path.join(a.work, "torch_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
