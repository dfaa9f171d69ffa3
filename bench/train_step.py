"""The daemon's training step written in PyTorch (eager), used only to compare speed with
`novelstream bench train` on the same machine, device and thread count. Same model (a ResNet
per frame averaged over the window's frames, a ResNet over the log-mel spectrogram with input
batch norm and a stride-2 stem, MLP projections with l2 norm, labelled and unlabelled heads), the
same augmentations (affine warp with crop, brightness/contrast, noise; spectrogram shift, gain
and masks), and the same losses in one step (instance and category contrast against per-modality
memory banks filled by a momentum encoder, within- and cross-modal pairs, WTA pairwise pseudo
labels with BCE, cross-entropy, MSE consistency), with Adam. Defaults are the daemon's.

    python bench/train_step.py [--device cpu|cuda] [--threads 2] [--batch 64] [--steps 20]
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    def __init__(self, cin, channels, stem_stride):
        super().__init__()
        self.stem = nn.Conv2d(cin, channels[0], 3, stem_stride, 1, bias=False)
        self.stem_norm = nn.BatchNorm2d(channels[0])
        blocks, c = [], channels[0]
        for out in channels:
            blocks.append(Block(c, out, 2))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.dim = c

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem(x)))
        return F.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1)


class Projection(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.hidden, self.out = nn.Linear(dim, dim), nn.Linear(dim, out)

    def forward(self, z):
        return F.normalize(self.out(F.relu(self.hidden(z))), dim=-1, eps=1e-12)


class JointModel(nn.Module):
    def __init__(self, channels, audio_channels, projection, known, novel):
        super().__init__()
        self.visual = ResNet(3, channels, 1)
        self.audio_norm = nn.BatchNorm2d(1)
        self.audio = ResNet(1, audio_channels, 2)
        self.proj_v = Projection(self.visual.dim, projection)
        self.proj_a = Projection(self.audio.dim, projection)
        dim = self.visual.dim + self.audio.dim
        self.known = nn.Linear(dim, known)
        self.novel = nn.Linear(dim, novel)

    def forward(self, frames, mel):
        b, t = frames.shape[:2]
        z_v = self.visual(frames.flatten(0, 1) - 0.5).view(b, t, -1).mean(1)
        z_a = self.audio(self.audio_norm(mel))
        z = torch.cat([z_v, z_a], 1)
        return z, [self.proj_v(z_v), self.proj_a(z_a)], self.known(z), self.novel(z)


@torch.no_grad()
def augment(frames, min_scale=0.75, degrees=12.0, translate=0.1, brightness=0.1, contrast=0.2, noise=0.03):
    b, t, c, h, w = frames.shape
    u = lambda lo, hi: torch.rand(b, device=frames.device) * (hi - lo) + lo
    scale = u(min_scale, 1.0)
    angle = u(-degrees, degrees) * math.pi / 180
    shift = (1 - scale) + translate
    tx, ty = (torch.rand(b, device=frames.device) * 2 - 1) * shift, (torch.rand(b, device=frames.device) * 2 - 1) * shift
    cos, sin = angle.cos() * scale, angle.sin() * scale
    theta = torch.stack([cos, -sin, tx, sin, cos, ty], 1).view(b, 1, 2, 3).expand(b, t, 2, 3).reshape(b * t, 2, 3)
    grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    warped = F.grid_sample(frames.flatten(0, 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped.view(b, t, c, h, w)
    mean = warped.mean(dim=(1, 2, 3, 4), keepdim=True)
    jittered = (warped - mean) * u(1 - contrast, 1 + contrast).view(b, 1, 1, 1, 1) + mean
    jittered = jittered + u(-brightness, brightness).view(b, 1, 1, 1, 1)
    return (jittered + torch.randn_like(jittered) * noise).clamp(0, 1)


@torch.no_grad()
def augment_mel(mel, shift=10, gain_db=6.0, mask=8):
    b, _, m, f = mel.shape
    s = torch.randint(-shift, shift + 1, (b, 1, 1, 1), device=mel.device)
    index = (torch.arange(f, device=mel.device).view(1, 1, 1, f) - s).remainder(f)
    out = mel.gather(3, index.expand(b, 1, m, f))
    out = out + (torch.rand(b, 1, 1, 1, device=mel.device) * 2 - 1) * gain_db * (math.log(10) / 10)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)

    def band(length, shape):
        width = torch.randint(0, min(mask, length) + 1, (b, 1, 1, 1), device=mel.device)
        start = (torch.rand(b, 1, 1, 1, device=mel.device) * length).long()
        position = torch.arange(length, device=mel.device).view(shape)
        return (position >= start) & (position < start + width)

    masked = band(m, (1, 1, m, 1)) | band(f, (1, 1, 1, f))
    return torch.where(~masked, out, mean)


def instance_nce(q, k, negatives, tau):
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.t()], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def category_nce(q, labels, keys, key_labels, tau):
    log_p = F.log_softmax(q @ keys.t() / tau, 1)
    positives = (labels[:, None] == key_labels[None, :]).float()
    return (-(log_p * positives).sum(1) / positives.sum(1).clamp_min(1)).mean()


def pairwise_bce(p, targets):
    s = (p @ p.t()).clamp(1e-7, 1 - 1e-7)
    return -(targets * s.log() + (1 - targets) * (1 - s).log()).mean()


def rampup(step, steps=400):
    t = min(step / steps, 1.0)
    return math.exp(-5 * (1 - t) ** 2)


class Learner:
    def __init__(self, device, known=5, novel=5, projection=64, bank=4096, wta_h=64, wta_k=4, mu=0.6):
        self.model = JointModel([16, 32, 64], [16, 32, 64], projection, known, novel).to(device)
        self.ema = JointModel([16, 32, 64], [16, 32, 64], projection, known, novel).to(device)
        self.ema.load_state_dict(self.model.state_dict())
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-5)
        # Per-modality queues of momentum keys, used as they fill up (as the daemon's).
        self.banks = [torch.zeros(bank, projection, device=device) for _ in range(2)]
        self.bank_labels = [torch.full((bank,), -1, dtype=torch.long, device=device) for _ in range(2)]
        self.position = 0
        self.filled = 0
        dim = 128
        g = torch.Generator().manual_seed(0)
        self.wta = torch.stack([torch.randperm(dim, generator=g)[:wta_k] for _ in range(wta_h)]).flatten().to(device)
        self.wta_shape = (wta_h, wta_k)
        self.mu = mu
        self.step_count = 0
        self.pairs = [(0, 0), (1, 1), (0, 1), (1, 0)]

    def step(self, frames_l, mel_l, labels, frames_u, mel_u, tau=0.1, momentum=0.99):
        nl, nu = frames_l.shape[0], frames_u.shape[0]
        frames, mel = torch.cat([frames_l, frames_u]), torch.cat([mel_l, mel_u])
        v1, v2 = (augment(frames), augment_mel(mel)), (augment(frames), augment_mel(mel))
        z1, proj1, k1, n1 = self.model(*v1)
        z2, proj2, k2, n2 = self.model(*v2)
        with torch.no_grad():
            zm, projm, _, _ = self.ema(*v2)
        key_labels = torch.cat([labels, torch.full((nu,), -1, dtype=torch.long, device=labels.device)])
        loss = 0.0
        for q, k in self.pairs:
            queries, keys = proj1[q], projm[k]
            bank, bank_labels = self.banks[k][: self.filled], self.bank_labels[k][: self.filled]
            if self.filled:
                term = instance_nce(queries, keys, bank, tau)
            else:
                term = F.cross_entropy(queries @ keys.t() / tau, torch.arange(queries.shape[0], device=queries.device))
            all_keys = torch.cat([keys, bank])
            all_labels = torch.cat([key_labels, bank_labels])
            term = term + category_nce(queries[:nl], labels, all_keys, all_labels, tau)
            loss = loss + term / len(self.pairs)
        loss = loss + (F.cross_entropy(k1[:nl], labels) + F.cross_entropy(k2[:nl], labels)) / 2
        with torch.no_grad():
            codes = zm[nl:].index_select(1, self.wta).view(nu, *self.wta_shape).argmax(-1)
            similarity = (codes[:, None, :] == codes[None, :, :]).float().mean(-1)
            targets = (similarity >= self.mu).float()
        p1, p2 = F.softmax(n1[nl:], 1), F.softmax(n2[nl:], 1)
        bce = (pairwise_bce(p1, targets) + pairwise_bce(p2, targets)) / 2
        loss = loss + bce * rampup(self.step_count)
        consistency = F.mse_loss(F.softmax(n1, 1), F.softmax(n2, 1)) + F.mse_loss(F.softmax(k1, 1), F.softmax(k2, 1))
        loss = loss + consistency * 5.0 * rampup(self.step_count)
        # The reports the daemon keeps of every term are read back, as it does.
        _ = (float(loss.detach()), float(bce.detach()), float(targets.mean()))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for e, o in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(momentum).add_(o, alpha=1 - momentum)
                else:
                    e.copy_(o)
            n = nl + nu
            rows = (torch.arange(n, device=frames.device) + self.position) % self.banks[0].shape[0]
            for slot in range(2):
                self.banks[slot][rows] = projm[slot]
                self.bank_labels[slot][rows] = key_labels
            self.position = (self.position + n) % self.banks[0].shape[0]
            self.filled = min(self.filled + n, self.banks[0].shape[0])
        self.step_count += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--mel-frames", type=int, default=98)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    learner = Learner(device)
    b = args.batch
    frames_l = torch.rand(b, args.frames, 3, args.size, args.size, device=device)
    frames_u = torch.rand(b, args.frames, 3, args.size, args.size, device=device)
    mel_l = torch.randn(b, 1, 64, args.mel_frames, device=device)
    mel_u = torch.randn(b, 1, 64, args.mel_frames, device=device)
    labels = torch.randint(0, 5, (b,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        learner.step(frames_l, mel_l, labels, frames_u, mel_u)
    sync()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        learner.step(frames_l, mel_l, labels, frames_u, mel_u)
        sync()
        times.append(time.perf_counter() - started)
    mean = sum(times) / len(times)
    times.sort()
    p50, p90 = times[len(times) // 2], times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    print(f"train step on {device} ({torch.get_num_threads()} torch threads), torch {torch.__version__}: "
          f"{b} + {b} windows of {args.frames} frames {args.size}x{args.size} + 1 s audio")
    print(f"pytorch eager: {2 * b / mean:.1f} windows/s, {1e3 * mean:.1f} ms per step "
          f"(p50 {1e3 * p50:.1f}, p90 {1e3 * p90:.1f}) over {len(times)} steps")


if __name__ == "__main__":
    main()
