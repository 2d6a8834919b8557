"""Grad-CAM: the heat falls on the object that carries the class evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from tl_core.evaluation.explain import explain, gradcam, list_stages, overlay

SIZE, SQUARE = 48, 10


class TinyTransferModel(nn.Module):
    """The TransferModel shape (body -> features, head -> logits, ordered layer groups)."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))

        self.body = nn.Sequential(block(3, 16, True), block(16, 32, True), block(32, 32, False),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, num_classes)
        self.group_names = ["stem", "block2", "block3", "head"]

    def groups(self):
        b = self.body
        return [("stem", [b[0]]), ("block2", [b[1]]), ("block3", [b[2], b[3], b[4]]), ("head", [self.head])]

    def forward(self, x):
        return self.head(self.body(x))


def planted_square_batch(n: int, rng: np.random.Generator):
    """Half the images hold a bright square at a random place (class 1), half do not (class 0).

    The background brightness varies more than the square adds on average, so the mean
    brightness of an image does not give the class away: the evidence is the square itself.
    """
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    labels = np.arange(n) % 2
    boxes = []
    for i in range(n):
        level = rng.uniform(-0.6, 0.6)
        images[i] = level + rng.normal(0, 0.3, size=(3, SIZE, SIZE))
        if labels[i]:
            y, x = rng.integers(0, SIZE - SQUARE, size=2)
            images[i, :, y:y + SQUARE, x:x + SQUARE] = 2.0
            boxes.append((int(y), int(x)))
        else:
            boxes.append(None)
    return torch.from_numpy(images), torch.from_numpy(labels), boxes


@pytest.fixture(scope="module")
def trained_square_model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TinyTransferModel()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        x, y, _ = planted_square_batch(32, rng)
        loss = nn.functional.cross_entropy(model(x), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    x, y, _ = planted_square_batch(64, np.random.default_rng(1))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95, f"the tiny model did not learn the task (accuracy {accuracy:.2f})"
    return model


def test_gradcam_heat_falls_on_the_planted_square(trained_square_model):
    x, _, boxes = planted_square_batch(40, np.random.default_rng(2))
    hits, inside_mass = 0, []
    positives = [i for i, box in enumerate(boxes) if box is not None]
    for i in positives:
        heat = gradcam(trained_square_model, x[i:i + 1], target_class=1)
        assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        y0, x0 = boxes[i]
        py, px = np.unravel_index(heat.argmax(), heat.shape)
        # 2 px margin: the last stage has stride 4, and its map is upsampled bilinearly.
        hits += (y0 - 2 <= py < y0 + SQUARE + 2) and (x0 - 2 <= px < x0 + SQUARE + 2)
        box = np.zeros_like(heat, dtype=bool)
        box[max(0, y0 - 4):y0 + SQUARE + 4, max(0, x0 - 4):x0 + SQUARE + 4] = True
        inside_mass.append(heat[box].sum() / heat.sum())
    # The dilated box is ~14% of the image; a heatmap that ignored the square would put ~14% there.
    assert hits >= 0.9 * len(positives), f"argmax inside the square for {hits}/{len(positives)} images"
    assert np.mean(inside_mass) > 0.6, f"mean share of heat near the square: {np.mean(inside_mass):.2f}"


def test_stages_follow_layer_groups_and_default_to_the_last_conv_stage(trained_square_model):
    stages = list_stages(trained_square_model, input_size=SIZE)
    assert [s.label for s in stages] == ["stem", "block2", "block3"]
    assert stages[-1].name == "body.2" and stages[-1].kind == "conv" and stages[-1].grid == (12, 12)
    x, _, _ = planted_square_batch(2, np.random.default_rng(3))
    result = explain(trained_square_model, x[1:2])
    assert result.stage == "body.2" and result.target_class == int(np.argmax(result.probs))
    early = gradcam(trained_square_model, x[1:2], stage=stages[0].name)
    assert early.shape == (SIZE, SIZE)


def test_gradcam_works_with_frozen_weights_and_any_torchvision_convnet():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=3)
    model = nn.Module()
    model.head, resnet.fc = resnet.fc, nn.Identity()
    model.body = resnet
    model.forward = lambda x: model.head(model.body(x))
    for p in model.parameters():
        p.requires_grad_(False)
    stages = list_stages(model, input_size=64)
    assert [s.label for s in stages] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    heat = gradcam(model, torch.randn(1, 3, 64, 64), target_class=2)
    assert heat.shape == (64, 64) and 0 <= heat.min() and heat.max() <= 1


def test_vit_tokens_are_reshaped_to_the_patch_grid():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=2)
    model = nn.Module()
    model.head, vit.heads = nn.Linear(32, 2), nn.Identity()  # torchvision's ViT head starts at zero
    model.body = vit
    model.forward = lambda x: model.head(model.body(x))
    stages = list_stages(model, input_size=32)
    tokens = [s for s in stages if s.kind == "tokens"]
    # The last block's attention input: its own output tokens never reach the class token.
    assert tokens[-1].name == "body.encoder.layers.encoder_layer_1.ln_1" and tokens[-1].grid == (4, 4)
    x = torch.randn(1, 3, 32, 32)
    heat = gradcam(model, x)
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0)
    # The block's output tokens would give no heat at all: only the class token is read out.
    assert gradcam(model, x, stage="body.encoder.layers.encoder_layer_1").max() == 0


def test_overlay_keeps_the_image_size_and_colours_the_hot_spot():
    photo = Image.new("RGB", (80, 60), (128, 128, 128))
    heat = np.zeros((20, 20), np.float32)
    heat[5:10, 5:10] = 1.0
    out = overlay(photo, heat)
    assert out.size == photo.size and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert abs(arr[30, 30] - 128).sum() > abs(arr[55, 75] - 128).sum()


def test_stages_of_a_registered_backbone_are_its_body_groups():
    from tl_core.model.registry import build_model

    model = build_model("mobilenet_v3_small", 3, pretrained=False).eval()
    stages = list_stages(model)
    assert [s.label for s in stages] == [g for g in model.group_names if g not in ("head", "pre_logits")]
    assert stages[-1].grid == (7, 7)
    result = explain(model, torch.randn(1, 3, 224, 224), target_class=0)
    assert result.stage == stages[-1].name and result.heatmap.shape == (224, 224)


def test_explain_image_sees_what_the_app_sees(tmp_path, real_photos):
    from tl_core.evaluation.explain import explain_image, model_view
    from tl_core.export.bundle import _engine_inputs
    from tl_core.model.registry import get_backbone

    pre = get_backbone("mobilenet_v3_small").preprocess
    path = tmp_path / "chelsea.png"
    real_photos["chelsea"].save(path)
    x, crop = model_view(path, pre)
    assert x.shape == (1, 3, 224, 224) and crop.size == (224, 224)
    assert torch.equal(x, _engine_inputs([path], pre))
    from_bytes, _ = model_view(path.read_bytes(), pre)
    from_pil, _ = model_view(real_photos["chelsea"], pre)
    assert torch.equal(from_bytes, x) and torch.equal(from_pil, x)
    model = TinyTransferModel(num_classes=3).eval()
    result, crop = explain_image(model, path, pre, target_class=2)
    assert result.target_class == 2 and result.heatmap.shape == (224, 224)
    assert overlay(crop, result.heatmap).size == (224, 224)


# timm and open_clip backbones: a convnet's last conv stage; a ViT's patch tokens on the patch grid
# (DINOv2-style pooling reads the last block's tokens after the final norm; CLIP reads its class
# token only, so its last block is read at the input of its attention).
FOUNDATION_LAST_STAGES = {"tiny_vit": ("body.vit.norm", "tokens", (4, 4)),
                          "tiny_effnet": ("body.bn2", "conv", (2, 2)),
                          "tiny_clip": ("body.visual.transformer.resblocks.1.ln_1", "tokens", (4, 4))}


@pytest.mark.parametrize("backbone", list(FOUNDATION_LAST_STAGES))
def test_timm_and_open_clip_backbones_explain_their_last_stage(backbone):
    from tl_core.model.registry import build_model, get_backbone

    torch.manual_seed(0)
    model = build_model(backbone, 3, pretrained=False).eval()
    size = get_backbone(backbone).preprocess.crop_size
    stages = list_stages(model, input_size=size)
    assert (stages[-1].name, stages[-1].kind, stages[-1].grid) == FOUNDATION_LAST_STAGES[backbone]
    assert [s.label for s in stages] == [g for g in model.group_names if g != "head"][:len(stages)]
    if stages[-1].kind == "tokens":
        assert "patch tokens, 4 x 4 grid" in stages[-1].description
    result = explain(model, torch.randn(1, 3, size, size))  # the predicted class: evidence for it
    assert result.stage == stages[-1].name and result.heatmap.shape == (size, size)
    assert result.heatmap.max() == pytest.approx(1.0) and result.heatmap.min() >= 0


def test_a_trained_timm_vit_run_explains_its_images(trained_vit_run_dir):
    from tl_core.evaluation.explain import explain_run_images, run_stages
    from tl_core.runs import Run

    run = Run(trained_vit_run_dir)
    assert run_stages(run)[-1].kind == "tokens"
    images = sorted((trained_vit_run_dir.parent.parent / "src").rglob("*.jpg"))[:2]
    explained = explain_run_images(run, [str(images[0]), images[1].read_bytes()], None, [None, 0])
    assert all(not isinstance(item, str) for item in explained), explained
    (first, label), (second, label_0) = explained
    assert first.shape == second.shape == (64, 64, 3) and label in run.classes and label_0 == run.classes[0]
