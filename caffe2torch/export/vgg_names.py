"""torchvision's VGG parameter names for a plain VGG chain (``conv1_1`` -> ``features.0``).
"""
from __future__ import annotations

import re

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError

_FEATURE_CODES = {"Convolution": "C", "ReLU": "R", "Pooling": "P"}
_CLASSIFIER_CODES = {"InnerProduct": "L", "ReLU": "R", "Dropout": "D"}
_VGG_SHAPE = ("features: (Convolution 3x3 pad 1 + ReLU | Pooling MAX 2x2 stride 2)... ending "
              "with a Pooling; classifier: InnerProduct ReLU [Dropout] InnerProduct ReLU "
              "[Dropout] InnerProduct, the first taking channels*7*7 inputs; then an optional "
              "Softmax")


def torchvision_vgg_names(net: CaffeNet) -> dict[str, str]:
    """Module name -> torchvision VGG prefix (``conv1_1`` -> ``features.0``, ``fc6`` ->
    ``classifier.0``) for a plain VGG chain; a Caffe2TorchError lists everything that differs.

    Indices count positions exactly as torchvision's ``vgg16`` does: each Convolution and its
    ReLU take one index each, a Pooling one; the three InnerProducts are ``classifier.0/3/6``.
    """
    graph = net.caffe.graph
    layers = [node for node in graph.layers if node.role == "compute"]
    problems = _vgg_chain_problems(graph, layers)
    while layers and layers[-1].type == "Softmax":
        layers = layers[:-1]
    split = next((i for i, node in enumerate(layers) if node.type == "InnerProduct"), len(layers))
    features, classifier = layers[:split], layers[split:]
    problems += _vgg_feature_problems(features) + _vgg_classifier_problems(net, features,
                                                                           classifier)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise Caffe2TorchError(f"net '{graph.name}' is not VGG-like, so it has no torchvision "
                               f"names ({len(problems)} problem(s)):\n{lines}\nexpected "
                               f"{_VGG_SHAPE}")
    names = {node.module_name: f"features.{i}" for i, node in enumerate(features)}
    linear = [node for node in classifier if node.type == "InnerProduct"]
    names.update({node.module_name: f"classifier.{3 * i}" for i, node in enumerate(linear)})
    return names


def _vgg_chain_problems(graph, layers) -> list[str]:
    problems = []
    if len(graph.inputs) != 1:
        problems.append(f"{len(graph.inputs)} inputs; expected one")
    previous = graph.inputs[0] if graph.inputs else None
    for node in layers:
        if node.bottoms != [previous] or len(node.tops) != 1:
            problems.append(f"layer '{node.name}' ({node.type}) reads "
                            f"{[graph.blobs[b].name for b in node.bottoms]} and writes "
                            f"{len(node.tops)} top(s); expected a chain (one bottom: the previous "
                            f"layer's top, one top)")
        previous = node.tops[0] if node.tops else None
    return problems


def _vgg_feature_problems(features) -> list[str]:
    problems = []
    codes = "".join(_FEATURE_CODES.get(node.type, "?") for node in features)
    for node, code in zip(features, codes):
        if code == "?":
            problems.append(f"layer '{node.name}' ({node.type}) in the features; torchvision's "
                            f"VGG features hold only Convolution, ReLU and Pooling")
        elif code == "C":
            p = node.param.convolution_param
            geometry = (list(p.kernel_size), list(p.pad), list(p.stride) or [1],
                        list(p.dilation) or [1], p.group, p.bias_term, p.axis)
            if geometry != ([3], [1], [1], [1], 1, True, 1) or p.HasField("kernel_h") \
                    or p.HasField("pad_h") or p.HasField("stride_h"):
                problems.append(f"layer '{node.name}' (Convolution): kernel {list(p.kernel_size)}"
                                f", pad {list(p.pad)}, stride {list(p.stride)}, dilation "
                                f"{list(p.dilation)}, group {p.group}, bias_term {p.bias_term}; "
                                f"expected 3x3, pad 1, stride 1, with bias")
        elif code == "P":
            p = node.param.pooling_param
            if (p.pool, p.kernel_size, p.stride, p.pad, p.global_pooling) != (0, 2, 2, 0, False) \
                    or p.HasField("kernel_h") or p.HasField("stride_h") or p.HasField("pad_h"):
                problems.append(f"layer '{node.name}' (Pooling): expected MAX, kernel 2, "
                                f"stride 2, no padding")
    if "?" not in codes and not re.fullmatch(r"(CR|P)*P", codes):
        problems.append(f"features {_coded(features, codes)}: expected each Convolution followed "
                        f"by its ReLU, Poolings between blocks, and a Pooling last")
    return problems


def _vgg_classifier_problems(net: CaffeNet, features, classifier) -> list[str]:
    problems = []
    codes = "".join(_CLASSIFIER_CODES.get(node.type, "?") for node in classifier)
    for node, code in zip(classifier, codes):
        p = node.param.inner_product_param
        if code == "?":
            problems.append(f"layer '{node.name}' ({node.type}) in the classifier; torchvision's "
                            f"VGG classifier holds only InnerProduct, ReLU and Dropout")
        elif code == "L" and (p.axis != 1 or p.transpose or not p.bias_term):
            problems.append(f"layer '{node.name}' (InnerProduct): axis {p.axis}, transpose "
                            f"{p.transpose}, bias_term {p.bias_term}; expected axis 1, no "
                            f"transpose, with bias")
    if "?" not in codes and not re.fullmatch(r"LRD?LRD?L", codes):
        problems.append(f"classifier {_coded(classifier, codes)}: expected InnerProduct ReLU "
                        f"[Dropout] InnerProduct ReLU [Dropout] InnerProduct")
    convs = [node for node in features if node.type == "Convolution"]
    if convs and classifier and classifier[0].type == "InnerProduct":
        channels = convs[-1].param.convolution_param.num_output
        weight = net.get_submodule(classifier[0].module_name).weight
        if weight.shape[-1] != channels * 7 * 7:
            problems.append(f"layer '{classifier[0].name}' takes {weight.shape[-1]} inputs; "
                            f"expected {channels}*7*7 = {channels * 49} (torchvision's VGG pools "
                            f"the features to 7x7)")
    return problems


def _coded(layers, codes: str) -> str:
    return " ".join(f"{node.name}:{code}" for node, code in zip(layers, codes)) or "(none)"
