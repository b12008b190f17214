"""Networks: shapes, the features/head API, functional_call in train mode, ImageNet conv1 adaptation, TorchScript."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call
from torchvision.models import resnet50

from l2v_monai.bundle_scripts.networks import ResNet50Classifier, SmallCNN, adapt_first_conv

REPORT_DIM = 24


class _Features(nn.Module):
    """``forward`` = the wrapped network's ``features`` (how the meta step calls it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, report: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.features(image, report)


@pytest.fixture(scope="module")
def resnet() -> ResNet50Classifier:
    torch.manual_seed(0)
    return ResNet50Classifier(num_outputs=14)


@pytest.fixture(scope="module")
def resnet_report() -> ResNet50Classifier:
    torch.manual_seed(1)
    return ResNet50Classifier(num_outputs=14, report_dim=REPORT_DIM)


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, str]:
    """A torchvision ResNet-50 with random weights (non-trivial BN stats), saved like an ImageNet checkpoint."""
    torch.manual_seed(2)
    rgb = resnet50(weights=None)
    with torch.no_grad():
        for module in rgb.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet50-fake.pth"
    torch.save(rgb.state_dict(), path)
    return rgb.eval(), str(path)


def _rgb_features(rgb: nn.Module, image: torch.Tensor) -> torch.Tensor:
    x = rgb.maxpool(rgb.relu(rgb.bn1(rgb.conv1(image))))
    x = rgb.layer4(rgb.layer3(rgb.layer2(rgb.layer1(x))))
    return torch.flatten(rgb.avgpool(x), 1)


def test_resnet_shapes_and_head_of_features(resnet: ResNet50Classifier, resnet_report: ResNet50Classifier) -> None:
    torch.manual_seed(3)
    image, report = torch.rand(2, 1, 64, 64), torch.randn(2, REPORT_DIM)
    resnet.eval(), resnet_report.eval()
    with torch.no_grad():
        feats = resnet.features(image)
        assert feats.shape == (2, 2048) and resnet.num_features == 2048 and resnet.num_outputs == 14
        assert torch.allclose(resnet(image), resnet.head(feats))
        joint = resnet_report.features(image, report)
        assert joint.shape == (2, 2560) and resnet_report.num_features == 2560
        assert torch.allclose(resnet_report(image, report), resnet_report.head(joint))
        # The report part changes with the report only; the image part with the image only.
        other = resnet_report.features(image, report + 1.0)
        assert torch.equal(other[:, :2048], joint[:, :2048]) and not torch.allclose(other[:, 2048:], joint[:, 2048:])


def test_report_embedding_errors(resnet: ResNet50Classifier, resnet_report: ResNet50Classifier) -> None:
    image = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="needs a report_embedding"):
        resnet_report(image)
    with pytest.raises(ValueError, match=f"B x {REPORT_DIM}"):
        resnet_report(image, torch.zeros(1, REPORT_DIM + 1))
    with pytest.raises(ValueError, match="no report branch"):
        resnet(image, torch.zeros(1, REPORT_DIM))
    with pytest.raises(ValueError, match="no report branch"):
        SmallCNN()(torch.rand(1, 1, 8, 8), torch.zeros(1, 4))


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_small_cnn_shapes(channels: int, size: int) -> None:
    net = SmallCNN(num_outputs=10, in_channels=channels, width=8)
    image = torch.rand(4, channels, size, size)
    feats = net.features(image)
    assert feats.shape == (4, 16) and net.num_features == 16 and net.num_outputs == 10
    assert torch.allclose(net(image), net.head(feats))


@pytest.mark.parametrize("which", ["small", "resnet_report"])
def test_functional_call_features_train_mode(which: str, resnet_report: ResNet50Classifier) -> None:
    """Stepped parameters through functional_call, BN in train mode on cloned buffers, real stats untouched."""
    torch.manual_seed(4)
    net = SmallCNN(num_outputs=3, width=8) if which == "small" else resnet_report
    report = None if which == "small" else torch.randn(4, REPORT_DIM)
    image = torch.rand(4, 1, 16, 16)
    net.train()
    buffers_before = {n: b.clone() for n, b in net.named_buffers()}
    params = {f"net.{n}": p.detach() for n, p in net.named_parameters()}
    buffers = {f"net.{n}": b.clone() for n, b in net.named_buffers()}
    view = _Features(net)
    same = functional_call(view, {**params, **buffers}, (image, report), strict=False)
    buffers = {f"net.{n}": b.clone() for n, b in net.named_buffers()}
    stepped = {n: p - 0.1 * torch.randn_like(p) for n, p in params.items()}
    moved = functional_call(view, {**stepped, **buffers}, (image, report), strict=False)
    assert same.shape == moved.shape == (4, net.num_features)
    with torch.no_grad():
        assert torch.allclose(same, net.features(image, report), atol=1e-5)
    assert not torch.allclose(same, moved, atol=1e-3)
    # functional_call ran BN on the clones only (the eager call above did update the real stats once).
    for name, before in buffers_before.items():
        if "num_batches_tracked" in name:
            assert int(dict(net.named_buffers())[name]) == int(before) + 1
    # Gradients flow back to substituted parameters (what the meta step needs).
    leaf = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    out = functional_call(view, {**leaf, **buffers}, (image, report), strict=False)
    (grad,) = torch.autograd.grad(out.sum(), [next(iter(leaf.values()))])
    assert grad.abs().sum() > 0


def test_adapt_first_conv_sums_rgb_kernels() -> None:
    weight = torch.randn(64, 3, 7, 7)
    one = adapt_first_conv(weight, 1)
    assert one.shape == (64, 1, 7, 7) and torch.allclose(one[:, 0], weight.sum(dim=1))
    two = adapt_first_conv(weight, 2)
    assert torch.allclose(two.sum(dim=1), weight.sum(dim=1), atol=1e-6)
    assert adapt_first_conv(weight, 3) is weight
    with pytest.raises(ValueError, match="3-channel"):
        adapt_first_conv(torch.randn(64, 4, 7, 7), 1)


def test_single_channel_weights_match_rgb_network_on_gray(rgb_weights: tuple[nn.Module, str]) -> None:
    rgb, path = rgb_weights
    gray_net = ResNet50Classifier(num_outputs=5, in_channels=1, pretrained_weights=path).eval()
    torch.manual_seed(5)
    gray = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = _rgb_features(rgb, gray.repeat(1, 3, 1, 1))
        got = gray_net.features(gray)
    # Summing kernels only reorders float additions: the difference is rounding, relative to the scale.
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    # The classifier is new (ImageNet's fc has 1000 outputs): only the trunk was transferred.
    assert gray_net.head.out_features == 5


def test_weight_file_errors_and_imagenet_cache(
    rgb_weights: tuple[nn.Module, str], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = rgb_weights
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ResNet50Classifier(pretrained_weights=str(missing))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(ValueError, match="bad.pth.*missing"):
        ResNet50Classifier(pretrained_weights=str(bad))
    # "imagenet" looks in the torch hub cache only: absent → an error saying where to put the file.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"hub.checkpoints.*resnet50-0676ba61\.pth"):
        ResNet50Classifier(pretrained_weights="imagenet")
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(open(path, "rb").read())
    net = ResNet50Classifier(in_channels=3, pretrained_weights="imagenet")
    assert torch.equal(net.encoder.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])


def test_torchscript_matches_eager(resnet: ResNet50Classifier) -> None:
    torch.manual_seed(6)
    image = torch.rand(2, 1, 64, 64)
    small = SmallCNN(num_outputs=4, width=8).eval()
    resnet.eval()
    # optimized_execution(False) skips the profiling executor's warm-up runs (CPU time is shared);
    # check_trace=False skips trace's re-run check, since the outputs are compared here anyway.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        for net, x in ((resnet, image), (small, image[:, :, :8, :8])):
            eager = net(x)
            scripted = torch.jit.script(net)
            traced = torch.jit.trace(net, (x,), check_trace=False)
            assert torch.allclose(scripted(x), eager, atol=1e-5)
            assert torch.allclose(traced(x), eager, atol=1e-5)
