"""Write a converted net to disk; the format follows the file extension.

    export(net, "vgg_face.safetensors")              # or .pt .py .onnx .ts .pt2 .caffemodel
    export(net, "vgg16.pt", naming="torchvision")    # torchvision's VGG keys: features.0.weight

=================  ======================  ===================================================
extension          function                what is written
=================  ======================  ===================================================
.pt, .pth          export_state_dict       the state_dict, plain tensors only
                                           (``torch.load(path, weights_only=True)`` reads it)
.safetensors       export_safetensors      contiguous tensors; metadata: net name, version
.py                export_python           a standalone module source (needs only torch) and
                                           its weights beside it (same stem, .pt/.safetensors)
.onnx              export_onnx             torch.onnx's TorchScript-based exporter on the
                                           torch.export program; batch axis dynamic
.ts, .torchscript  export_torchscript      ``torch.jit.trace`` of the plain fx forward
.pt2               export_program          ``torch.export.export`` + ``torch.export.save``,
                                           batch axis dynamic
.caffemodel        export_caffemodel       back to Caffe (``.caffemodel.h5``: Caffe's HDF5)
=================  ======================  ===================================================

``naming="torchvision"`` (state_dict formats only) renames a VGG-like net's parameters to the keys
of torchvision's VGG (``features.N`` / ``classifier.N``); see :func:`torchvision_vgg_names`.

One module per format, each registering its writer by extension
(:func:`~caffe2torch.export.registry.register_exporter`): ``state_dict`` (.pt, .pth,
.safetensors), ``standalone`` (.py, with ``inline``), ``onnx_format``, ``torchscript``,
``program`` (.pt2), ``caffemodel``; ``traced`` holds what the traced formats share and
``vgg_names`` the torchvision names.
"""
from __future__ import annotations

from caffe2torch.export import (  # noqa: F401  (each format module registers its writer)
    caffemodel,
    onnx_format,
    program,
    standalone,
    state_dict,
    torchscript,
)
from caffe2torch.export.caffemodel import export_caffemodel
from caffe2torch.export.inline import inlined_source
from caffe2torch.export.onnx_format import export_onnx
from caffe2torch.export.program import export_program
from caffe2torch.export.registry import (
    EXPORTERS,
    NAMINGS,
    Exporter,
    check_output,
    export,
    register_exporter,
)
from caffe2torch.export.standalone import export_python, python_source
from caffe2torch.export.state_dict import export_safetensors, export_state_dict, named_state_dict
from caffe2torch.export.torchscript import export_torchscript
from caffe2torch.export.traced import check_traceable, example_inputs, plain_module
from caffe2torch.export.vgg_names import torchvision_vgg_names

__all__ = [
    "EXPORTERS", "NAMINGS", "Exporter", "check_output", "check_traceable", "example_inputs",
    "export", "export_caffemodel", "export_onnx", "export_program", "export_python",
    "export_safetensors", "export_state_dict", "export_torchscript", "inlined_source",
    "named_state_dict", "plain_module", "python_source", "register_exporter",
    "torchvision_vgg_names",
]
