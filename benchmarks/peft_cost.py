"""Cost of each parameter-efficient fine-tuning (PEFT) method on a ViT-B/16-sized CLIP image tower: trainable
parameters, memory and images/s of a few training steps (issue 21, LIFT: Shi et al., ICML 2024).

The tower is :class:`~lt_lightning.backbones.clip.CLIPVisualBackbone` built from open_clip's own ``ViT-B-16`` model
config with **random weights** (``pretrained=None``: ``open_clip.create_model(..., pretrained=None)``, nothing is
downloaded; the weights do not change the cost). Each method of :mod:`lt_lightning.backbones.peft` wraps it with
LIFT's settings for ``--classes`` classes (shijxcs/LIFT ``models/peft_vit.py``): ``AdaptFormer`` and ``LoRA`` with
``r = 2 ** max(0, floor(log2(C / 24)))`` (32 for ImageNet-LT's 1,000 classes), ``VPT`` deep with 10 prompts per
block, ``BitFit`` on the blocks' biases, ``LinearProbe`` (the backbone frozen), ``FullFineTuning``; the head is
LIFT's cosine classifier (:class:`~lt_lightning.heads.cosine.CosineHead`, scale 25) over the 768 pre-projection
features, trained in every method.

A step is what a fit does per batch: forward of ``--batch-size`` random 224 x 224 images, cross-entropy, backward,
SGD step (lr 0.01, momentum 0.9, weight decay 5e-4, LIFT's) over the parameters that require grad. Each (device,
method) runs in a fresh process (so that memory peaks do not mix): ``--warmup`` steps, then ``--steps`` timed steps.

* CPU: float32, ``--threads`` torch threads; memory is the peak resident set size (``VmHWM``) over the timed steps
  (reset before them through ``/proc/self/clear_refs``; where that is not available, the process's peak since start,
  ``ru_maxrss``, which includes building the model), and the RSS after building the model.
* CUDA (``--devices cuda``; by default whenever ``torch.cuda.is_available()``): bf16 autocast, memory is
  ``torch.cuda.max_memory_allocated`` over the timed steps (peak reset after the warm-up) and the allocation after
  building the model.

Printed: a Markdown table per device with, per method, the backbone's trainable parameters (ours: the wrapper's
``trainable_params``; LIFT's: what LIFT's ``ViT_Tuner`` optimises for the same setting, computed from its module
definitions -- ``models/peft_vit.py`` ``ViT_Tuner`` and ``models/peft_modules.py``: full fine-tuning trains the
transformer blocks only, not the patch embedding, positional embedding and the two outer LayerNorms), their share of
the tower, the head's parameters, seconds per step, images/s and memory. ``--json PATH`` writes every figure.

    python benchmarks/peft_cost.py                                   # CPU (+ CUDA if present), batch 8, 3 timed steps
    OMP_NUM_THREADS=1 python benchmarks/peft_cost.py --threads 1 --steps 2 --warmup 1    # a busy 2-core machine
    python benchmarks/peft_cost.py --devices cuda --batch-size 64 --steps 20 --warmup 5  # one GPU, bf16
    python benchmarks/peft_cost.py --methods adaptformer lora --classes 8142             # iNaturalist 2018's r = 256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full", "linear_probe", "bitfit", "vpt", "lora", "adaptformer")
#: ViT-B/16 (open_clip ``ViT-B-16``): blocks, width, MLP width
LAYERS, WIDTH, MLP = 12, 768, 3072
VPT_LENGTH = 10


def lift_bottleneck(num_classes: int, layers: int = LAYERS) -> int:
    """LIFT's default ``adapter_dim`` (``models/peft_vit.py``): ``2 ** max(0, int(log2(C / (2 L))))``."""
    return 2 ** max(0, int(math.log2(num_classes / (2 * layers))))


def lift_trainable(method: str, num_classes: int, block_params: int) -> int:
    """The backbone parameters LIFT's ``ViT_Tuner`` optimises for ``method`` on ViT-B/16 (``block_params``: the
    parameters of the 12 transformer blocks, what its ``full_tuning`` trains)."""
    r, d, h, layers = lift_bottleneck(num_classes), WIDTH, MLP, LAYERS
    per_block = {
        "full": block_params // layers,
        "linear_probe": 0,
        "bitfit": 2 * d + 3 * d + d + h + d,  # ln_1, in_proj, out_proj, ln_2, c_fc, c_proj biases (bias_tuning)
        "vpt": VPT_LENGTH * d,  # vpt_deep: one [vpt_len, D] prompt per block
        "lora": 2 * (d * r + r * d),  # LoRA q and v: lora_A [D, r], lora_B [r, D]
        "adaptformer": 2 * d + (d * r + r) + (r * d + d) + 1,  # ln, down_proj, up_proj, scale
    }[method]
    return layers * per_block


def build(method: str, num_classes: int):
    """``(backbone, head, block_params)``: the PEFT-wrapped random ViT-B/16 tower and LIFT's cosine head."""
    import torch

    from lt_lightning.backbones.clip import CLIPVisualBackbone
    from lt_lightning.backbones.peft import VPT, AdaptFormer, BitFit, FullFineTuning, LinearProbe, LoRA
    from lt_lightning.heads.cosine import CosineHead

    torch.manual_seed(0)
    tower = CLIPVisualBackbone("ViT-B-16", pretrained=None)  # open_clip's config, random weights: no download
    block_params = sum(p.numel() for p in tower.visual.transformer.resblocks.parameters())
    r = lift_bottleneck(num_classes)
    wrappers = {
        "full": lambda b: FullFineTuning(b),
        "linear_probe": lambda b: LinearProbe(b),
        "bitfit": lambda b: BitFit(b),
        "vpt": lambda b: VPT(b, length=VPT_LENGTH, deep=True),
        "lora": lambda b: LoRA(b, rank=r),
        "adaptformer": lambda b: AdaptFormer(b, bottleneck=r),
    }
    backbone = wrappers[method](tower)
    head = CosineHead(backbone.num_features, num_classes, scale=25.0)
    return backbone, head, block_params


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(args: argparse.Namespace) -> dict:
    """One (device, method): build, warm up, time ``args.steps`` steps; the figures as a dict."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backbone, head, block_params = build(args.method, args.classes)
    backbone.to(device).train()
    head.to(device).train()
    params = [p for p in (*backbone.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224, generator=generator).to(device)
    y = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    cuda = device.type == "cuda"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(head(backbone(x)), y)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    built_mib = (torch.cuda.memory_allocated(device) if cuda else (_rss_kib("VmRSS") or 0) * 1024) / 2**20
    for _ in range(args.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        peak_how = "torch.cuda.max_memory_allocated over the timed steps"
    else:
        peak_how = "VmHWM over the timed steps" if _reset_peak_rss() else "ru_maxrss since the start"
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        hwm = _rss_kib("VmHWM") if peak_how.startswith("VmHWM") else None
        peak_mib = (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    step_s = statistics.median(times)
    return {
        "method": args.method,
        "device": args.device,
        "precision": "bf16 autocast" if cuda else "float32",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "classes": args.classes,
        "bottleneck": lift_bottleneck(args.classes),
        "trainable_params": backbone.trainable_params,
        "lift_trainable_params": lift_trainable(args.method, args.classes, block_params),
        "backbone_params": backbone.total_params,
        "head_params": sum(p.numel() for p in head.parameters()),
        "step_seconds": times,
        "median_step_s": step_s,
        "images_per_s": args.batch_size / step_s,
        "built_mib": built_mib,
        "peak_mib": peak_mib,
        "peak_memory": peak_how,
    }


def run_child(method: str, device: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--device", device]
    for name in ("batch_size", "steps", "warmup", "threads", "classes"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    first = rows[0]
    memory = "peak CUDA alloc MiB (after build)" if first["device"].startswith("cuda") else "peak RSS MiB (after build)"
    lines = [
        f"device {first['device']}, {first['precision']}, batch {first['batch_size']}, {first['threads']} thread(s), "
        f"C = {first['classes']} (r = {first['bottleneck']}), median of the timed steps; "
        f"memory: {first['peak_memory']}",
        "",
        f"| method | trainable (ours) | LIFT's code | share of the tower | head | s/step | images/s | {memory} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        share = 100.0 * row["trainable_params"] / row["backbone_params"]
        lines.append(
            f"| {row['method']} | {row['trainable_params']:,} | {row['lift_trainable_params']:,} | {share:.3f}% "
            f"| {row['head_params']:,} | {row['median_step_s']:.2f} | {row['images_per_s']:.2f} "
            f"| {row['peak_mib']:,.0f} ({row['built_mib']:,.0f}) |"
        )
    return "\n".join(lines)


def torch_threads_default() -> int:
    """``OMP_NUM_THREADS`` when set, else 1 (a shared machine)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda if any)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocate the optimizer state)")
    parser.add_argument("--threads", type=int, default=torch_threads_default())
    parser.add_argument("--classes", type=int, default=1000, help="C: the head's size and LIFT's r (ImageNet-LT)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    parser.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "threads", "classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.child is not None:
        args.method = args.child
        print(json.dumps(child(args)))
        return

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {machine}, {os.cpu_count()} CPUs, load average before {load}")
    results = []
    for device in devices:
        rows = []
        for method in args.methods:
            rows.append(run_child(method, device, args))
            print(f"  {device} {method}: {rows[-1]['images_per_s']:.2f} images/s", file=sys.stderr, flush=True)
        results += rows
        print(table(rows), end="\n\n", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"torch": torch.__version__, "load_before": load, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
