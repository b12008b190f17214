"""The bundle's networks: ResNet-50 with an optional report branch and its local weight loader (chest X-ray),
and a small CNN for the proof of concept.

It follows the project's network API (``features(image, report_embedding=None)`` → ``head`` →
logits; ``features`` is a pure function of parameters, buffers and inputs, so the
learning-to-vote meta step can call it through ``torch.func.functional_call``). It scripts with
``torch.jit.script`` (what MONAI's ``ckpt_export`` uses): ``report_embedding`` is typed
``Optional[torch.Tensor]`` for that reason.

ImageNet weights are never downloaded: they come from a local file or from the torch hub cache
(``torch.hub.get_dir()/checkpoints``). With one input channel, conv1's RGB kernels are summed (see
:func:`adapt_first_conv`). Needs only ``torch`` and ``torchvision``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from torchvision.models import ResNet50_Weights, resnet50

logger = logging.getLogger(__name__)

RESNET50_FEATURES = 2048
# The MONAI-style shorthand for "ImageNet weights from the local torch hub cache".
IMAGENET = "imagenet"
# ImageNet checkpoints in the order we prefer them: V1 is the classic recipe the paper's era used.
_IMAGENET_WEIGHTS = (ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2)
# Checkpoint wrappers people commonly save around a state dict.
_STATE_DICT_WRAPPERS = ("state_dict", "model", "model_state_dict", "network")


def report_branch(report_dim: int, hidden: int) -> nn.Sequential:
    """The report-embedding branch: two fully-connected layers of ``hidden`` units with ReLU (paper §3.3)."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(report_dim, hidden),
            relu1=nn.ReLU(inplace=True),
            fc2=nn.Linear(hidden, hidden),
            relu2=nn.ReLU(inplace=True),
        )
    )


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Map a ``64 × 3 × k × k`` RGB conv1 kernel to ``in_channels`` input channels.

    Each new channel gets the RGB kernels' sum divided by ``in_channels``. A gray image repeated
    over the new channels then gives exactly the response the RGB network gives to the same gray
    image repeated over R, G and B, so the ImageNet filters keep their meaning and scale. For one
    channel this is the plain sum of the RGB kernels (the usual conversion; repeating the gray image
    ×3 instead would cost 3× the conv1 memory and compute for the same numbers).
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-d conv kernel, got shape {tuple(weight.shape)}")
    if weight.shape[1] == in_channels:
        return weight
    if weight.shape[1] != 3:
        raise ValueError(f"can only adapt a 3-channel (RGB) conv1 kernel, got {weight.shape[1]} input channels")
    summed = weight.sum(dim=1, keepdim=True) / in_channels
    return summed.repeat(1, in_channels, 1, 1).contiguous()


def find_cached_imagenet_resnet50() -> Path:
    """The ResNet-50 ImageNet checkpoint in the torch hub cache; a clear error when it is not there."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for weights in _IMAGENET_WEIGHTS:
        candidate = checkpoints / Path(weights.url).name
        if candidate.is_file():
            return candidate
    others = sorted(checkpoints.glob("resnet50-*.pth"))
    if others:
        return others[0]
    wanted = Path(_IMAGENET_WEIGHTS[0].url).name
    raise FileNotFoundError(
        f"pretrained_weights='imagenet' but no ResNet-50 ImageNet checkpoint was found in {checkpoints} "
        f"(looked for resnet50-*.pth). Nothing is downloaded at run time: on a machine with internet, "
        f"download {_IMAGENET_WEIGHTS[0].url} and copy it to {checkpoints / wanted} (or set TORCH_HOME), "
        f"or pass the file's path as pretrained_weights."
    )


def _unwrap_state_dict(loaded: object, path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict inside a checkpoint file, unwrapping common wrappers and DDP's ``module.`` prefix."""
    if isinstance(loaded, Mapping):
        for key in _STATE_DICT_WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: expected a ResNet-50 state dict (name → tensor), found a {type(loaded).__name__}")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_resnet50_trunk_weights(trunk: nn.Module, pretrained_weights: str | Path, in_channels: int) -> Path:
    """Load torchvision-named ResNet-50 weights into ``trunk`` (its ``fc`` is ignored); return the file used.

    ``pretrained_weights`` is a file path or ``"imagenet"`` (look in the torch hub cache). conv1 is
    adapted to ``in_channels`` with :func:`adapt_first_conv`. Every trunk tensor must be present:
    missing or unexpected keys are an error naming the file.
    """
    if str(pretrained_weights).lower() == IMAGENET:
        path = find_cached_imagenet_resnet50()
    else:
        path = Path(pretrained_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_weights file not found: {path}")
    state = dict(_unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path))
    # The classifier is task-specific (ImageNet has 1000 classes): only the trunk is transferred.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state:
        try:
            state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], in_channels)
        except ValueError as err:
            raise ValueError(f"{path}: conv1.weight: {err}") from err
    wanted = {k for k in trunk.state_dict() if not k.startswith("fc.")}
    missing, unexpected = sorted(wanted - state.keys()), sorted(state.keys() - wanted)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a torchvision ResNet-50 state dict: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all)"
        )
    try:
        trunk.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: tensor shapes do not match a ResNet-50: {err}") from err
    logger.info("loaded ResNet-50 trunk weights from %s (conv1 adapted to %d channel(s))", path, in_channels)
    return path


class ResNet50Classifier(nn.Module):
    """ResNet-50 (Conv1 to Res5c), global average pooling, then one fully-connected layer.

    With ``report_dim`` set, a precomputed report embedding goes through two 512-unit layers and is
    concatenated with the 2048-d image feature before the classifier (the paper's image + report
    model); ``features`` then returns the 2560-d concatenation.

    Args:
        num_outputs: number of logits (findings or classes).
        in_channels: image channels; ImageNet weights are adapted by summing conv1's RGB kernels.
        pretrained_weights: ``None`` (random init, the offline default), a local file with a
            torchvision ResNet-50 state dict, or ``"imagenet"`` for the torch hub cache.
        report_dim: size of the report embedding, or ``None`` for an image-only network.
        report_hidden: width of the two report layers.
    """

    def __init__(
        self,
        num_outputs: int = 14,
        in_channels: int = 1,
        pretrained_weights: str | Path | None = None,
        report_dim: int | None = None,
        report_hidden: int = 512,
    ) -> None:
        super().__init__()
        if num_outputs < 1 or in_channels < 1:
            raise ValueError(f"num_outputs and in_channels must be positive, got {num_outputs}, {in_channels}")
        trunk = resnet50(weights=None)
        if in_channels != 3:
            trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained_weights is not None:
            load_resnet50_trunk_weights(trunk, pretrained_weights, in_channels)
        # torchvision's names are kept so that state dicts map one to one (minus the fc layer).
        self.encoder = nn.Sequential(
            OrderedDict(
                (name, getattr(trunk, name))
                for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.report_dim = report_dim
        self.report = report_branch(report_dim, report_hidden) if report_dim is not None else None
        self.in_channels = in_channels
        self.num_features = RESNET50_FEATURES + (report_hidden if report_dim is not None else 0)
        self.num_outputs = num_outputs
        self.head = nn.Linear(self.num_features, num_outputs)

    def features(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``B × C × H × W`` image (and ``B × report_dim`` embedding) → ``B × num_features``."""
        feature = torch.flatten(self.pool(self.encoder(image)), 1)
        if self.report is None:
            if report_embedding is not None:
                raise ValueError(
                    "this network has no report branch (report_dim=None) but was given a report_embedding; "
                    "set report_dim to use it, or do not attach report embeddings"
                )
            return feature
        if report_embedding is None:
            raise ValueError("this network has a report branch (report_dim set) and needs a report_embedding")
        if report_embedding.dim() != 2 or report_embedding.shape[1] != self.report[0].in_features:
            raise ValueError(
                f"report_embedding must be B x {self.report[0].in_features}, got shape {list(report_embedding.shape)}"
            )
        return torch.cat([feature, self.report(report_embedding)], dim=1)

    def forward(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``B × num_outputs``."""
        return self.head(self.features(image, report_embedding))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Four 3×3 conv + BN + ReLU layers, two 2×2 max-pools, global average pooling, one linear head.

    For the CPU proof of concept: 8×8 digits, 28×28 Fashion-MNIST, 32×32 CIFAR-10. The pools use
    ``ceil_mode`` so odd sizes (7×7 after one pool of 14) never shrink to zero; 8×8 ends at 2×2.
    ``num_features`` is ``2 * width``. There is no report branch.
    """

    def __init__(self, num_outputs: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if num_outputs < 1 or in_channels < 1 or width < 1:
            raise ValueError(f"num_outputs, in_channels and width must be positive, got {num_outputs}, {in_channels}, {width}")
        self.encoder = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, width),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels
        self.num_features = 2 * width
        self.num_outputs = num_outputs
        self.head = nn.Linear(self.num_features, num_outputs)

    def features(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``B × C × H × W`` → ``B × 2·width``; a report embedding is an error (no report branch)."""
        if report_embedding is not None:
            raise ValueError("SmallCNN has no report branch but was given a report_embedding")
        return torch.flatten(self.pool(self.encoder(image)), 1)

    def forward(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``B × num_outputs``."""
        return self.head(self.features(image, report_embedding))


#: The networks by the names configs and benchmarks use; each takes ``num_outputs`` and ``in_channels``.
NETWORKS: dict[str, type[nn.Module]] = {"resnet50": ResNet50Classifier, "small_cnn": SmallCNN}


__all__ = [
    "IMAGENET",
    "NETWORKS",
    "RESNET50_FEATURES",
    "ResNet50Classifier",
    "SmallCNN",
    "adapt_first_conv",
    "find_cached_imagenet_resnet50",
    "load_resnet50_trunk_weights",
    "report_branch",
]
