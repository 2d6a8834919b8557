"""Layer groups: a model's modules (and loose parameters) in named groups, stem -> top.

The torchvision families have a splitter each (``tl_core.model.adapters``); ``groups_in_order``
serves every timm and open_clip family; ``split_evenly`` is the fallback for any other body.
"""

from __future__ import annotations

from torch import nn

# A body's layer groups as (name, [qualified module or parameter names inside the body]), stem -> top.
Groups = list[tuple[str, list[str]]]

_OUTPUT_SIDE = {"proj", "head", "logit_scale", "logit_bias"}  # loose parameters that act last


def groups_in_order(body: nn.Module, n_middle: int = 3) -> Groups:
    """Layer groups of any model, from the order of its parameters: the generic splitter for the
    timm and open_clip families (their models number their blocks: ``blocks.3``, ``stages.2``,
    ``transformer.resblocks.11``).

    Each parameter belongs to one unit: its path up to the first number (``blocks.3``); else the
    module that holds it when no sub-module of it has parameters (``patch_embed.proj``, ``bn1``: a BatchNorm
    stays a module, so freezing sees it); else the parameter itself (``cls_token``). Units
    before the first numbered one are the stem, those after the last one the final group (a last
    norm, a projection), and the numbered ones are cut into ``n_middle`` groups of even size, in
    order. Every parameter is thus in exactly one group, stem -> top. (timm's own ``group_matcher``
    does this per family; one rule here serves every family of both libraries.)
    """
    units: list[str] = []
    numbered: list[bool] = []
    loose: set[str] = set()  # units that are one parameter, not a module
    for name, _ in body.named_parameters():
        parts = name.split(".")
        digit = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if digit is not None:
            unit = ".".join(parts[:digit + 1])
        else:
            owner = ".".join(parts[:-1])
            leaf = bool(owner) and not any(any(True for _ in child.parameters())
                                           for child in body.get_submodule(owner).children())
            unit = owner if leaf else name
            if not leaf:
                loose.add(unit)
        if unit not in units:
            units.append(unit)
            # a numbered stem (ConvNeXt's stem.0, stem.1) is still the stem
            numbered.append(digit is not None and "stem" not in parts[:digit])
    # A loose output-side parameter registered before the blocks (open_clip's ViT registers its
    # final projection `proj` first) belongs to the final group: its registration order is not
    # where it runs.
    # (Only a loose parameter: a ViT's patch embedding `patch_embed.proj` is a module and acts first.)
    late = [u for u, n in zip(units, numbered, strict=True)
            if not n and u in loose and u.split(".")[-1] in _OUTPUT_SIDE]
    if late:
        units, numbered = ([u for u in units if u not in late] + late,
                           [n for u, n in zip(units, numbered, strict=True) if u not in late] + [False] * len(late))
    if not any(numbered):
        return [("stem", units)] if units else []
    first = numbered.index(True)
    last = len(numbered) - 1 - numbered[::-1].index(True)
    middle = units[first:last + 1]
    n_middle = max(1, min(n_middle, len(middle)))
    size, extra = divmod(len(middle), n_middle)
    groups: Groups = [("stem", units[:first])] if first else []
    start = 0
    for k in range(n_middle):
        end = start + size + (1 if k < extra else 0)
        groups.append((f"stage{k + 1}", middle[start:end]))
        start = end
    if last + 1 < len(units):
        groups.append(("final", units[last + 1:]))
    return groups


class ParameterSet(nn.Module):
    """Loose parameters (a ViT's class token, its position embedding) seen as one module, so that a
    layer group can hold them beside modules. A view only: it is never registered in the model."""

    def __init__(self, params: dict[str, nn.Parameter]):
        super().__init__()
        for key, param in params.items():
            self.register_parameter(key.replace(".", "__"), param)


def split_evenly(body: nn.Module, n_groups: int = 4) -> Groups:
    """Generic fallback splitter: the body's parameterised children in ``n_groups`` chunks."""
    names = [name for name, child in body.named_children() if any(True for _ in child.parameters())]
    n_groups = max(1, min(n_groups, len(names)))
    size, extra = divmod(len(names), n_groups)
    groups, start = [], 0
    for k in range(n_groups):
        end = start + size + (1 if k < extra else 0)
        groups.append(("stem" if k == 0 else f"stage{k}", names[start:end]))
        start = end
    return groups


