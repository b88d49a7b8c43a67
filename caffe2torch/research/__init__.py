"""The research workflow as functions: inspect, verify, draw, visualize and extract features.

Each ``caffe2torch`` research command is a thin wrapper over one of these::

    from caffe2torch.research import describe_net, verify, draw_graph, visualize, extract_features
    info = describe_net("deploy.prototxt", "net.caffemodel")          # caffe2torch info
    report = verify("deploy.prototxt", "net.caffemodel", image="x.jpg")  # caffe2torch verify
    draw_graph("deploy.prototxt", "net.svg")                          # caffe2torch graph
    visualize(net, "x.jpg", "figures/", layer="pool5")                 # caffe2torch visualize
    extract_features(net, "images/", ["fc7"], "feats.npz")             # caffe2torch extract
    found = detect(net, "x.jpg", labels=["background", "face"])        # caffe2torch detect
    result = classify(net, ["x.jpg"], top=5, labels=names)            # caffe2torch classify

Preprocessing (the Caffe way) lives in :mod:`caffe2torch.preprocess`.
"""
from __future__ import annotations

from caffe2torch.research.classification import ClassifyResult, classify, read_class_labels
from caffe2torch.research.detection import (
    Detection,
    DetectionResult,
    detect,
    draw_detections,
    read_labels,
)
from caffe2torch.research.extract import ExtractResult, Features, extract_features, read_features
from caffe2torch.research.figures import (
    activation_grid,
    filter_grid,
    heatmap_overlay,
    visualize,
)
from caffe2torch.research.graphing import draw_graph, graph_to_dot
from caffe2torch.research.netinfo import NetInfo, describe_net, format_info
from caffe2torch.research.verification import VerifyReport, format_report, verify

__all__ = [
    "ClassifyResult", "Detection", "DetectionResult", "ExtractResult", "Features", "NetInfo", "VerifyReport",
    "activation_grid", "classify", "describe_net", "detect", "draw_detections", "draw_graph",
    "extract_features", "filter_grid", "format_info", "format_report", "graph_to_dot",
    "heatmap_overlay", "read_class_labels", "read_features", "read_labels", "verify",
    "visualize",
]
