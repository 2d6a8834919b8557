"""One way from an image to the model's input: decode, view, normalise (tl_core.model.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_core.errors import DataError
from tl_core.model.preprocess import (
    Normalizer,
    decode,
    eval_view,
    make_loader,
    model_inputs,
    normalize,
    train_view,
)
from tl_core.model.registry import Preprocess

PRE = Preprocess(resize_size=40, crop_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                 interpolation="bilinear")


def test_decode_reads_paths_bytes_and_pil_images_alike(tmp_path, real_photos):
    path = tmp_path / "chelsea.png"
    real_photos["chelsea"].save(path)
    from_path = decode([path], PRE)
    assert from_path.dtype == torch.uint8 and from_path.shape == (1, 3, 40, 40)
    assert torch.equal(decode([path.read_bytes()], PRE), from_path)
    assert torch.equal(decode([real_photos["chelsea"]], PRE), from_path)


def test_decode_of_a_broken_file_says_what_to_use(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="JPEG, PNG"):
        decode([bad], PRE)


def test_model_inputs_are_the_normalised_centre_crop():
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    x = model_inputs(images, PRE)
    crop = images[:, :, 4:36, 4:36].float()
    mean = torch.tensor(PRE.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(PRE.std).view(1, 3, 1, 1) * 255
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, (crop - mean) / std)
    assert torch.equal(x, normalize(eval_view(PRE)(images), PRE))
    assert torch.equal(normalize(images, PRE), Normalizer(PRE.mean, PRE.std, torch.device("cpu"))(images))


def test_train_view_without_augmentation_is_the_eval_view():
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    assert torch.equal(train_view(PRE, "none")(images), eval_view(PRE)(images))
    assert train_view(PRE, "standard")(images).shape == (3, 3, 32, 32)


def test_make_loader_batches_views_with_their_labels():
    images = torch.from_numpy(np.arange(5 * 3 * 40 * 40, dtype=np.int64).reshape(5, 3, 40, 40) % 256).to(torch.uint8)
    loader = make_loader(images, [4, 1, 2], [7, 8, 9], eval_view(PRE), batch_size=2, shuffle=False)
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert torch.cat([b[1] for b in batches]).tolist() == [7, 8, 9]
    assert torch.equal(batches[0][0][0], eval_view(PRE)(images[4:5])[0])


def test_prediction_feeds_the_model_its_model_inputs():
    from tl_core.evaluation.metrics import predict_tensors

    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    flatten = torch.nn.Flatten()
    assert torch.equal(predict_tensors(flatten, images, PRE, batch_size=2), flatten(model_inputs(images, PRE)))
