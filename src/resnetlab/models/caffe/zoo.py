"""A Caffe ResNet recognised by the shape of its graph (not by layer names: KaimingHe's ``res2a_branch2a`` and
open_nsfw's ``conv_stage0_block0_branch2a`` are the same thing) and rebuilt as the zoo model it is, with
torchvision-compatible names, so it evaluates, fine-tunes, prunes and exports like any resnetlab model.

Mapped when it is exactly a zoo ResNet: a 7x7/2 stem (Caffe's unpadded, rounded-up max-pool kept as
``stem_pool="caffe"``), BasicBlocks or Bottlenecks with the stride where the zoo has it, shortcuts projected on
shape change ("B"), in every stage's first block ("first") or always ("C"), BatchNorm eps 1e-5, global
average pooling and one InnerProduct. Conv biases fold into the next BatchNorm's mean. The zoo model is
checked against the graph on a random input before it replaces it; anything else stays a :class:`CaffeNet`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .graph import CaffeNet

__all__ = ["to_zoo", "match_resnet"]

ZOO = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
       ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
       ("bottleneck", (3, 8, 36, 3)): "resnet152"}


class _Graph:
    """The net in single-assignment form: node i = step i, inputs as node ids (-1: the input); Split,
    Dropout and other pass-through layers collapsed."""

    def __init__(self, net: CaffeNet) -> None:
        self.net, cur, self.nodes = net, {net.input_name: -1}, []
        self.consumers: dict[int, list[int]] = {-1: []}
        self.shapes: list[tuple[int, ...]] = []
        for (key, name, bottoms, tops, kind), shape in zip(net.steps, net.out_shapes):
            ins = [cur[b] for b in bottoms]
            if kind in ("Split", "Dropout"):
                for t in tops:
                    cur[t] = ins[0]
                continue
            i = len(self.nodes)
            self.nodes.append((kind, net.layers[key], ins, name))
            self.shapes.append(shape)
            self.consumers[i] = []
            for j in ins:
                self.consumers[j].append(i)
            for t in tops:
                cur[t] = i
        self.output = cur[net.output_name]

    def kind(self, i: int) -> str:
        return self.nodes[i][0]

    def module(self, i: int) -> nn.Module:
        return self.nodes[i][1]

    def only(self, i: int, kind: str) -> int | None:
        nxt = [c for c in self.consumers[i] if self.kind(c) == kind]
        return nxt[0] if len(nxt) == 1 else None

    def unit(self, i: int, relu: bool) -> tuple[int, tuple[int, int, int]] | None:
        """Conv -> BatchNorm -> Scale (-> ReLU) from conv node ``i``: (last node, (conv, bn, scale))."""
        bn = self.only(i, "BatchNorm")
        sc = self.only(bn, "Scale") if bn is not None else None
        if sc is None:
            return None
        if not relu:
            return sc, (i, bn, sc)
        r = self.only(sc, "ReLU")
        return (r, (i, bn, sc)) if r is not None else None


def _branch(g: _Graph, start: int) -> tuple[int, list[tuple[int, int, int]]] | None:
    """From conv node ``start``: units Conv-BN-Scale-ReLU, ..., Conv-BN-Scale ending in an Eltwise: (the
    Eltwise node, the units)."""
    units, node = [], start
    while True:
        step = g.unit(node, relu=True)
        if step is None:
            end = g.unit(node, relu=False)
            add = g.only(end[0], "Eltwise") if end is not None else None
            return (add, units + [end[1]]) if add is not None else None
        units.append(step[1])
        nxt = [c for c in g.consumers[step[0]] if g.kind(c) == "Convolution"]
        if len(nxt) != 1:
            return None
        node = nxt[0]


def _block(g: _Graph, x: int) -> tuple[int, dict[str, Any]] | None:
    """One residual block from its input node ``x``: (the node after its final ReLU, its units and
    projection), or None when what follows ``x`` is not a block."""
    found = [f for c in g.consumers[x] if g.kind(c) == "Convolution" and (f := _branch(g, c)) is not None]
    main = [f for f in found if len(f[1]) >= 2]
    if len(main) != 1:
        return None
    add, units = main[0]
    proj = [f[1][0] for f in found if len(f[1]) == 1 and f[0] == add]
    e = g.module(add)
    ins = g.nodes[add][2]
    if len(ins) != 2 or e.operation != "SUM" or any(c != 1 for c in e.coeff):
        return None
    if not proj and x not in ins:
        return None
    out = g.only(add, "ReLU")
    return (out, {"units": units, "proj": proj[0] if proj else None}) if out is not None else None


def match_resnet(net: CaffeNet) -> dict[str, Any] | None:
    """The zoo ResNet ``net`` is, as {"name", "kwargs", "stem", "stages", "fc", "block", "graph"} (node ids
    into "graph", the net in single-assignment form), or None."""
    g = _Graph(net)
    convs = [c for c in g.consumers[-1] if g.kind(c) == "Convolution"]
    stem = g.unit(convs[0], relu=True) if len(convs) == 1 else None
    if stem is None:
        return None
    conv = g.module(stem[1][0])
    pool = g.only(stem[0], "Pooling")
    if conv.kernel_size != (7, 7) or conv.stride != (2, 2) or conv.padding != (3, 3) or pool is None:
        return None
    mp = g.module(pool)
    if (mp.method, mp.kernel, mp.stride, mp.pad, mp.global_pooling) != ("MAX", (3, 3), (2, 2), (0, 0), False):
        return None
    x, blocks = pool, []
    while (found := _block(g, x)) is not None:
        x, block = found
        blocks.append(block)
    head = g.only(x, "Pooling")
    fc = g.only(head, "InnerProduct") if head is not None else None
    if not blocks or fc is None or fc != g.output or g.module(head).method != "AVE" or g.shapes[head][1:] != (1, 1):
        return None  # the zoo pools globally: a Caffe AVE pool must cover the whole map (pool5: 7x7 at 224 px)
    return _zoo_spec(g, stem[1], blocks, fc)


def _zoo_spec(g: _Graph, stem: tuple, blocks: list[dict], fc: int) -> dict[str, Any] | None:
    kinds = {len(b["units"]) for b in blocks}
    if len(kinds) != 1 or kinds - {2, 3}:
        return None
    block = "basic" if kinds == {2} else "bottleneck"
    stages: list[list[dict]] = []
    for b in blocks:
        strides = [g.module(u[0]).stride[0] for u in b["units"]]
        if block == "bottleneck" and (strides[0] != 1 or strides[2] != 1):
            return None  # stride in a 1x1 (the original Caffe ResNet-50): not torchvision's v1.5 bottleneck
        new_stage = not stages or max(strides) > 1
        (stages.append([b]) if new_stage else stages[-1].append(b))
    layers = tuple(len(s) for s in stages)
    name = ZOO.get((block, layers))
    if name is None or any(g.module(b["units"][0][1]).eps != 1e-5 for b in blocks):
        return None
    widths = tuple(g.module(s[0]["units"][0][0]).out_channels for s in stages)
    projected = [[b["proj"] is not None for b in s] for s in stages]
    reshape = [[j == 0 and (i > 0 or block == "bottleneck" or widths[0] != g.module(stem[0]).out_channels)
                for j in range(len(s))] for i, s in enumerate(stages)]
    firsts = [[j == 0 for j in range(len(s))] for s in stages]
    shortcut = "B" if projected == reshape else "first" if projected == firsts else \
        "C" if all(all(p) for p in projected) else None
    if shortcut is None:
        return None
    kwargs: dict[str, Any] = {"num_classes": g.module(fc).out_features, "stem_pool": "caffe"}
    if shortcut != "B":
        kwargs["shortcut"] = shortcut
    if widths != (64, 128, 256, 512):
        kwargs["widths"] = widths
    return {"name": name, "kwargs": kwargs, "stem": stem, "stages": stages, "fc": fc, "block": block, "graph": g}


def _copy_unit(g: _Graph, unit: tuple[int, int, int], conv: nn.Conv2d, bn: nn.BatchNorm2d,
               flip_input: bool = False) -> None:
    c, b, s = (g.module(i) for i in unit)
    w = c.weight.detach()
    conv.weight.data.copy_(w.flip(1) if flip_input else w)
    bias = c.bias.detach() if c.bias is not None else torch.zeros_like(b.running_mean)
    bn.running_mean.copy_(b.running_mean - bias)  # a conv bias folded into the next BatchNorm
    bn.running_var.copy_(b.running_var)
    bn.weight.data.copy_(s.weight.detach())
    bn.bias.data.copy_(s.bias.detach() if s.bias is not None else torch.zeros_like(bn.bias))


def to_zoo(conv: Any) -> None:
    """Replace ``conv.model`` (its ``graph_model``) by the zoo ResNet it is, when it is one."""
    from ..factory import create_model

    graph = conv.graph_model
    spec = match_resnet(graph)
    if spec is None:
        conv.report["zoo"] = None
        return
    g = spec["graph"]
    model = create_model(spec["name"], **spec["kwargs"]).eval()
    _copy_unit(g, spec["stem"], model.conv1, model.bn1, flip_input=graph.bgr)
    for i, stage in enumerate(spec["stages"]):
        for j, b in enumerate(stage):
            blk = getattr(model, f"layer{i + 1}")[j]
            for k, unit in enumerate(b["units"]):
                _copy_unit(g, unit, getattr(blk, f"conv{k + 1}"), getattr(blk, f"bn{k + 1}"))
            if b["proj"] is not None:
                _copy_unit(g, b["proj"], blk.downsample[0], blk.downsample[1])
    fc = g.module(spec["fc"])
    model.fc.weight.data.copy_(fc.weight.detach())
    model.fc.bias.data.copy_(fc.bias.detach() if fc.bias is not None else torch.zeros_like(model.fc.bias))
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        want, got = graph(x), model(x)
    err = float((got - want).abs().max() / want.abs().max().clamp(min=1.0))
    if err > 1e-4:
        raise RuntimeError(f"the zoo {spec['name']} built from the Caffe graph differs from it by {err:.2e}: a "
                           "converter bug; please report it with the prototxt")
    conv.zoo = {"name": spec["name"], "kwargs": spec["kwargs"]}
    conv.report.update(zoo=conv.zoo, zoo_max_rel_diff=err)
    conv.model = model
