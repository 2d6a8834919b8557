"""Layer groups of the timm and open_clip families: stem -> top in the order the layers act."""

from __future__ import annotations

from tl_core.model.registry import build_model


def test_a_vits_patch_embedding_is_in_the_stem_and_a_loose_projection_at_the_top():
    # Its name ends in "proj" like CLIP's output projection, but it is a module that acts first:
    # freezing "the top groups" must not train it.
    vit = dict(build_model("tiny_vit", 2, pretrained=False)._group_paths)
    assert "body.vit.patch_embed.proj" in vit["stem"] and vit["final"] == ["body.vit.norm"]
    clip = dict(build_model("tiny_clip", 2, pretrained=False)._group_paths)
    assert "body.visual.conv1" in clip["stem"] and clip["final"][-1] == "body.visual.proj"
