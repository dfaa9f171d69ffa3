"""What bf16 autocast and channels-last memory would buy the training step, measured on
bench/train_step.py's PyTorch eager step (same model, batch and losses): `novelstream bench
train` has neither yet, so this says whether adding them is worth it. Timing only: under bf16
the pairwise BCE's `log(1 - s)` can overflow, which changes no kernel's cost.

    python scripts/gpu/train_step_variants.py [--device cuda] [--steps 20] [--warmup 3]
"""
import argparse
import contextlib
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from train_step import Learner  # noqa: E402


def run(device, bf16, channels_last, steps, warmup, batch=64, frames=4, size=64, mel_frames=98):
    torch.manual_seed(0)
    learner = Learner(device)
    if channels_last:
        # Convolutions take the weights' layout when the input has none of its own.
        learner.model.to(memory_format=torch.channels_last)
        learner.ema.to(memory_format=torch.channels_last)
    frames_l = torch.rand(batch, frames, 3, size, size, device=device)
    frames_u = torch.rand(batch, frames, 3, size, size, device=device)
    mel_l = torch.randn(batch, 1, 64, mel_frames, device=device)
    mel_u = torch.randn(batch, 1, 64, mel_frames, device=device)
    labels = torch.randint(0, 5, (batch,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        started = time.perf_counter()
        with autocast():
            learner.step(frames_l, mel_l, labels, frames_u, mel_u)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    mean = sum(times) / len(times)
    return 2 * batch / mean, 1e3 * mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"train step variants on {device}, torch {torch.__version__}: 64 + 64 windows of 4 frames 64x64 + 1 s audio")
    print("| variant | windows/s | ms per step | vs fp32 |\n|---|---|---|---|")
    base = None
    for name, bf16, channels_last in [
        ("fp32", False, False),
        ("channels-last", False, True),
        ("bf16 autocast", True, False),
        ("bf16 autocast + channels-last", True, True),
    ]:
        windows_per_s, ms = run(device, bf16, channels_last, args.steps, args.warmup)
        base = base or windows_per_s
        print(f"| {name} | {windows_per_s:.1f} | {ms:.1f} | {windows_per_s / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
