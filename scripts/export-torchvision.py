"""Exports a pretrained backbone as the TorchScript module novelstream loads as an encoder
(`model.visual_encoder = "torchscript:PATH"`): one [N, 3, H, W] float tensor in, the features
[N, D] out. Needs the full PyTorch wheel (`NOVELSTREAM_TORCH=cuda make setup` installs it in
~/.cache/novelstream/torch-2.11.0-venv) and torchvision, and downloads the weights, so it is not
part of the tests (no weights can be downloaded where they run).

    python scripts/export-torchvision.py resnet18 OUT.pt    torchvision ResNet-18 (ImageNet), D = 512
    python scripts/export-torchvision.py dinov2-vits14 OUT.pt    DINOv2 ViT-S/14 (torch.hub), D = 384

Prints the [model] lines that use the module. Traced in Python, the module keeps its weights as
parameters (`layer4.0.conv1.weight`, `blocks.11.attn.qkv.weight`, ...), so each of
`encoder_training = "frozen" | "last-block" | "full"` applies to it.
"""
import sys

import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def resnet18():
    import torchvision

    model = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    model.fc = torch.nn.Identity()  # the pooled 512 features are z
    return model, 224, "layer4."


def dinov2_vits14():
    model = torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")  # forward gives the CLS feature
    return model, 224, "blocks.11."


BACKBONES = {"resnet18": resnet18, "dinov2-vits14": dinov2_vits14}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in BACKBONES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(BACKBONES)}}} OUT.pt")
    name, out = sys.argv[1], sys.argv[2]
    model, size, last_block = BACKBONES[name]()
    model.eval()
    example = torch.rand(2, 3, size, size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        z = traced(torch.rand(3, 3, size, size))
    if z.dim() != 2 or z.shape[0] != 3:
        sys.exit(f"{name}: the traced module returns {tuple(z.shape)}, not [N, D]")
    traced.save(out)
    print(f"wrote {out}: [N, 3, {size}, {size}] -> [N, {z.shape[1]}]")
    print(
        f'[model]\nvisual_encoder = "torchscript:{out}"\nencoder_training = "frozen"   # or "last-block", "full"\n'
        f'fine_tune_prefix = ["{last_block}"]   # what last-block trains\n'
        f"[model.visual_input]\nsize = [{size}, {size}]\nmean = {IMAGENET_MEAN}\nstd = {IMAGENET_STD}"
    )


if __name__ == "__main__":
    main()
