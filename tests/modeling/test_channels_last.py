"""MODEL.CHANNELS_LAST: the same detector in NHWC memory format gives the same losses, gradients
and detections within float tolerance (only the order of float sums inside the convolutions
changes), and its convolutions really run channels-last."""
import pytest
import torch

from conftest import GN_HEADS, square_target, tiny_cfg
from maskrcnn.modeling import build_model

CL = torch.channels_last


def _batch():
    g = torch.Generator().manual_seed(0)
    sizes = [(96, 128), (112, 96)]  # different sizes: a padded batch
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    targets = [square_target(sizes[0], [[10, 10, 50, 60], [40, 20, 90, 80]], [1, 2]),
               square_target(sizes[1], [[5, 30, 70, 100]], [3])]
    return images, targets


def _pair(norm, heads=()):
    models = []
    for channels_last in (False, True):
        cfg = tiny_cfg()
        cfg.merge_from_list(list(heads))
        cfg.MODEL.RESNETS.NORM = norm
        cfg.MODEL.CHANNELS_LAST = channels_last
        torch.manual_seed(0)
        models.append(build_model(cfg))
    return models


def _close(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("norm, grad_rtol, heads", [("GN", 1e-5, ()), ("FrozenBN", 1e-3, ()),
                                                    ("GN", 1e-5, GN_HEADS)], ids=["GN", "FrozenBN", "GN-heads"])
def test_same_losses_gradients_and_detections(norm, grad_rtol, heads):
    plain, nhwc = _pair(norm, heads)
    convs = [m for m in nhwc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=CL) for m in convs)
    assert not plain.backbone.body.conv1.weight.is_contiguous(memory_format=CL)
    for p, q in zip(plain.parameters(), nhwc.parameters()):
        assert torch.equal(p, q)  # the same weights, only laid out differently
    images, targets = _batch()
    losses = []
    for model in (plain, nhwc):
        torch.manual_seed(1)  # the samplers draw the same anchors and proposals
        loss = model.loss(images, targets)
        sum(loss.values()).backward()
        losses.append({k: v.detach() for k, v in loss.items()})
    for k in losses[0]:
        _close(losses[1][k], losses[0][k])
    # Gradients, per tensor relative to its norm: GN 2e-6; with frozen BN (no normalisation,
    # random weights) up to 4e-4, which is also how far float32 is from float64 there.
    for (name, p), q in zip(plain.named_parameters(), nhwc.parameters()):
        if p.grad is not None:
            assert (q.grad - p.grad).norm() <= grad_rtol * p.grad.norm() + 1e-12, name
    plain.eval(), nhwc.eval()
    a, b = plain.predict(images), nhwc.predict(images)
    for x, y in zip(a, b):
        n = min(len(x), len(y), 20)  # the best detections; near-ties further down may reorder
        assert n > 0
        _close(y.bbox[:n], x.bbox[:n], rtol=1e-4, atol=1e-3)
        _close(y.get_field("scores")[:n], x.get_field("scores")[:n])
        _close(y.get_field("mask")[:n], x.get_field("mask")[:n], rtol=1e-4, atol=1e-4)


def test_the_backbone_runs_channels_last_and_loading_weights_keeps_it(tmp_path):
    plain, nhwc = _pair("GN")
    seen = []
    nhwc.backbone.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    nhwc.eval()
    nhwc.predict(_batch()[0])
    (x, features), = seen
    assert x.is_contiguous(memory_format=CL) and not x.is_contiguous()
    assert all(f.is_contiguous(memory_format=CL) for f in features)
    path = tmp_path / "w.pth"
    torch.save(plain.state_dict(), path)  # a checkpoint of the plain layout
    nhwc.load_state_dict(torch.load(path, weights_only=True))
    assert nhwc.backbone.body.conv1.weight.is_contiguous(memory_format=CL)
