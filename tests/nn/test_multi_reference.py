"""SkyReels-A2 reference branches: subject compositing, CLIP tokens per reference, spatial frame slots."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from talkinghead.nn.multi_reference import SemanticReferenceBranch, compose_subject, spatial_condition

TINY_CLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                 patch_size=8)


def test_compose_subject_keeps_the_subject_and_whitens_the_rest():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    out = compose_subject(img, mask)
    np.testing.assert_array_equal(out[mask], img[mask])
    assert (out[~mask] == 255).all()
    soft = compose_subject(img, mask.astype(np.float32) * 0.5)
    np.testing.assert_allclose(soft[mask].astype(float), (img[mask] * 0.5 + 127.5), atol=0.51)
    with pytest.raises(ValueError):
        compose_subject(img, mask[:10])


def test_semantic_branch_encodes_each_reference_in_order():
    torch.manual_seed(0)
    branch = SemanticReferenceBranch(CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))).eval()
    g = torch.Generator().manual_seed(1)
    refs = torch.rand(2, 3, 3, 48, 40, generator=g) * 2 - 1  # b=2, three references, any size
    with torch.no_grad():
        tokens = branch(refs)
        one = branch(refs[:, 1:2])
    t = (32 // 8) ** 2 + 1  # patches + class token
    assert tokens.shape == (2, 3 * t, 16)
    torch.testing.assert_close(tokens[:, t:2 * t], one)  # slot k holds reference k, encoded on its own
    swapped = refs[:, [1, 0, 2]]
    with torch.no_grad():
        assert torch.allclose(branch(swapped)[:, :t], tokens[:, t:2 * t], atol=1e-6)


def test_spatial_condition_places_references_along_frames_with_a_mask():
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(1, 3, 4, 5, 6, generator=g)  # subjects x2 + background
    extra = torch.randn(1, 1, 4, 5, 6, generator=g)
    cond = spatial_condition(refs, frames=7, mask_channels=4)
    assert cond.shape == (1, 4 + 4, 7, 5, 6)
    for k in range(3):
        torch.testing.assert_close(cond[0, 4:, k], refs[0, k])
    assert (cond[:, :4, :3] == 1).all() and (cond[:, :4, 3:] == 0).all() and (cond[:, 4:, 3:] == 0).all()
    cont = spatial_condition(refs, 7, 4, extra)
    torch.testing.assert_close(cont[0, 4:, 3], extra[0, 0])
    assert (cont[:, :4, 3] == 1).all() and (cont[:, :4, 4:] == 0).all()
    with pytest.raises(ValueError, match="do not fit"):
        spatial_condition(refs, frames=2)
