"""One preprocessing definition: from the weights, round-trips, and the torch-free path matches
torchvision's eval transform."""

import numpy as np
import pytest
from PIL import Image

from tlexport.models import default_preprocess
from tlexport.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess


def test_from_weights_uses_the_weights_own_values():
    r18, r50 = default_preprocess("resnet18"), default_preprocess("resnet50")
    assert (r18.resize, r18.crop, r18.interpolation) == (256, 224, "bilinear")
    assert (r50.resize, r50.crop) == (232, 224)  # the V2 weights' recipe, not a generic 256
    assert r18.mean == pytest.approx(IMAGENET_MEAN) and r18.std == pytest.approx(IMAGENET_STD)


def test_dict_round_trip_and_with_crop():
    p = default_preprocess("resnet50").with_crop(112)
    assert (p.resize, p.crop) == (116, 112)
    assert Preprocess.from_dict(p.to_dict()) == p
    assert p.to_dict()["color_order"] == "RGB" and p.to_dict()["layout"] == "NCHW"


@pytest.mark.parametrize("size", [(97, 61), (61, 97), (40, 40), (300, 200)])
def test_numpy_path_matches_torchvision(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    p = Preprocess(resize=56, crop=48)
    ours = p.to_array(img)
    ref = p.eval_transform()(img).numpy()
    assert ours.shape == ref.shape == (3, 48, 48)
    assert np.abs(ours - ref).max() < 1e-5
