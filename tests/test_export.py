"""Exports: each format is written, read back by its own reader, and gives the live outputs."""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from oracle import ROOT, assert_close, opencv_layers
from torch import nn

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.export import (
    example_inputs,
    export,
    export_program,
    export_python,
    inlined_source,
    named_state_dict,
    python_source,
    torchvision_vgg_names,
)

VGG_FACE = ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt"

# conv, in-place ReLU, Eltwise with coefficients, Concat, MAX, AVE and global pooling,
# InnerProduct, Dropout, Softmax; two outputs; N, C, H, W all different.
SMALL = """
name: "small"
input: "data"
input_shape { dim: 2 dim: 3 dim: 12 dim: 10 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum"
        eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "conv2" top: "cat" }
layer { name: "pool1" type: "Pooling" bottom: "cat" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 stride: 1 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "gpool" type: "Pooling" bottom: "pool1" top: "gpool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc_aux" type: "InnerProduct" bottom: "gpool" top: "fc_aux"
        inner_product_param { num_output: 3 } }
"""

# The smallest net of torchvision's VGG layout: 224x224 input, five pools to 7x7.
TINY_VGG_CFG = [4, "M", 4, "M", 6, 6, "M", 8, "M", 8, "M"]


def _tiny_vgg_prototxt(hidden: int = 16, classes: int = 5) -> str:
    layers, bottom, block, index, pools = [], "data", 1, 1, 0
    for value in TINY_VGG_CFG:
        if value == "M":
            pools += 1
            layers.append(f'layer {{ name: "pool{pools}" type: "Pooling" bottom: "{bottom}" '
                          f'top: "pool{pools}" pooling_param {{ pool: MAX kernel_size: 2 '
                          f'stride: 2 }} }}')
            bottom, block, index = f"pool{pools}", block + 1, 1
            continue
        name = f"conv{block}_{index}"
        layers.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" '
                      f'top: "{name}" convolution_param {{ num_output: {value} kernel_size: 3 '
                      f'pad: 1 }} }}')
        layers.append(f'layer {{ name: "relu{block}_{index}" type: "ReLU" bottom: "{name}" '
                      f'top: "{name}" }}')
        bottom, index = name, index + 1
    for i, out in ((6, hidden), (7, hidden), (8, classes)):
        layers.append(f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{bottom}" '
                      f'top: "fc{i}" inner_product_param {{ num_output: {out} }} }}')
        bottom = f"fc{i}"
        if i < 8:
            layers.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "fc{i}" top: "fc{i}" }}')
            layers.append(f'layer {{ name: "drop{i}" type: "Dropout" bottom: "fc{i}" '
                          f'top: "fc{i}" }}')
    layers.append('layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }')
    return ('name: "tiny_vgg"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 224 dim: 224 }\n'
            + "\n".join(layers) + "\n")


class TorchvisionVGG(nn.Module):
    """torchvision.models.vgg.VGG's structure (torchvision itself is not installed here)."""

    def __init__(self, cfg: list, num_classes: int, hidden: int = 4096) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for value in cfg:
            if value == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, value, kernel_size=3, padding=1),
                           nn.ReLU(inplace=True)]
                channels = value
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _torchvision_vgg(cfg: list, num_classes: int, hidden: int, state: dict) -> TorchvisionVGG:
    with torch.device("meta"):  # no initialisation: every tensor comes from ``state``
        model = TorchvisionVGG(cfg, num_classes, hidden)
    model.load_state_dict(state, assign=True)  # strict: every key must match
    return model.eval()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(prototxt, caffemodel, net, input, outputs) of the small net with random weights."""
    folder = tmp_path_factory.mktemp("small")
    prototxt = folder / "small.prototxt"
    prototxt.write_text(SMALL)
    weights = folder / "small.caffemodel"
    caffe2torch.write_random_caffemodel(prototxt, weights, seed=3)
    net = caffe2torch.build(prototxt, weights=weights)
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = net(x)
    return prototxt, weights, net, x, expected


def _fresh(small) -> caffe2torch.CaffeNet:
    return caffe2torch.build(small[0])  # same structure, initialised (not the file's) weights


def _close(actual, expected, rel: float = 1e-6) -> None:
    actual = actual if isinstance(actual, (tuple, list)) else (actual,)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a),
                     e.detach().numpy(), rel=rel)


def _other_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(batch))


# ----------------------------------------------------------------------------- state dicts


def test_pt_is_a_plain_state_dict_that_reloads(small, tmp_path):
    _, _, net, x, expected = small
    path = export(net, tmp_path / "small.pt")
    state = torch.load(path, weights_only=True)
    assert type(state) is dict and all(type(v) is torch.Tensor for v in state.values())
    assert list(state) == list(net.state_dict())
    assert "conv1.weight" in state and "fc_aux.bias" in state
    fresh = _fresh(small)
    fresh.load_state_dict(state)
    with torch.no_grad():
        _close(fresh(x), expected, rel=0)


def test_safetensors_round_trip_and_metadata(small, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    _, _, net, x, expected = small
    path = export(net, tmp_path / "small.safetensors")
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["net"] == "small"
    assert metadata["caffe2torch_version"] == caffe2torch.__version__
    fresh = _fresh(small)
    fresh.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        _close(fresh(x), expected, rel=0)


# ----------------------------------------------------------------------------- standalone .py

def _module_classes() -> list[type]:
    """Every nn.Module class defined in caffe2torch/modules/ (including ones added later)."""
    import caffe2torch.modules as package

    classes = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        classes += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                    if cls.__module__ == module.__name__ and issubclass(cls, nn.Module)]
    return classes


# One interpreter without caffe2torch runs every generated file (starting one is the slow part).
_RUN_STANDALONE = """
import importlib, json, sys
sys.modules["caffe2torch"] = None  # `import caffe2torch` now raises ImportError
folder = sys.argv[1]
sys.path.insert(0, folder)
import numpy as np, torch
x = torch.from_numpy(np.load(folder + "/x.npy"))
for name in ("small_pt", "small_safetensors"):
    model = importlib.import_module(name).load()
    assert not model.training and all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(x)
    np.savez(f"{folder}/{name}_out.npz", *[o.numpy() for o in out])
every = importlib.import_module("every_module")
names = json.loads(sys.argv[2])
missing = [n for n in names if not issubclass(getattr(every, n, type), torch.nn.Module)]
assert not missing, missing
"""


@pytest.fixture(scope="module")
def standalone(small, tmp_path_factory):
    """Generated files (the small net with .pt and .safetensors weights, and the inlined source
    of every module class), run by an interpreter where caffe2torch cannot be imported."""
    _, _, net, x, _ = small
    folder = tmp_path_factory.mktemp("standalone")
    paths = {w: export_python(net, folder / f"small_{w}.py", weights=w)
             for w in ("pt", "safetensors")}
    classes = _module_classes()
    (folder / "every_module.py").write_text(inlined_source(classes))
    np.save(folder / "x.npy", x.numpy())
    names = json.dumps([c.__name__ for c in classes])
    result = subprocess.run([sys.executable, "-c", _RUN_STANDALONE, str(folder), names],
                            capture_output=True, text=True, timeout=300, cwd="/", check=False)
    return folder, paths, classes, result


@pytest.mark.parametrize("weights", ["pt", "safetensors"])
def test_python_export_runs_without_caffe2torch(small, standalone, weights):
    expected = small[4]
    folder, paths, _, result = standalone
    assert result.returncode == 0, result.stderr
    assert (folder / f"small_{weights}.{weights}").exists()
    text = paths[weights].read_text()
    assert not re.search(r"^\s*(from|import)\s+caffe2torch", text, re.MULTILINE)
    assert "def forward(self, data):" in text and "self.conv1(data)" in text  # fx forward
    assert "class CaffePool2d(nn.Module):" in text and "class Eltwise(nn.Module):" in text
    outputs = np.load(folder / f"small_{weights}_out.npz")
    _close([outputs[f"arr_{i}"] for i in range(len(outputs.files))], expected, rel=0)


def test_every_module_class_inlines_into_standalone_source(standalone):
    _, _, classes, result = standalone
    assert {"CaffePool2d", "InnerProduct", "Eltwise"} <= {c.__name__ for c in classes}
    assert result.returncode == 0, result.stderr


def test_python_export_by_extension_writes_weights_beside(small, tmp_path):
    _, _, net, _, _ = small
    export(net, tmp_path / "model.py")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())


def _import_from(folder, name: str):
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def test_python_export_rebuilds_modules_no_constructor_call_fits(small, tmp_path):
    (tmp_path / "config_layer.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class FromConfig(nn.Module):
            def __init__(self, config: dict) -> None:  # the argument itself is not kept
                super().__init__()
                self.shift = float(config["shift"])
                self.gain = nn.Parameter(torch.full((5,), float(config["gain"])))

            def forward(self, x):
                return x * self.gain + self.shift
    '''))
    layer = _import_from(tmp_path, "config_layer").FromConfig({"shift": -0.25, "gain": 3.0})
    prototxt, weights, _, x, _ = small
    net = caffe2torch.build(prototxt, weights=weights)
    net.prob = layer  # the net's output now goes through a module of unknown construction
    with torch.no_grad():
        expected = net(x)
    path = export_python(net, tmp_path / "odd_net.py")
    text = path.read_text()
    assert "self.prob = _restore(\n            FromConfig, {'shift': -0.25}," in text
    assert "class FromConfig(nn.Module):" in text
    loaded = _import_from(tmp_path, "odd_net").load()
    with torch.no_grad():
        _close(loaded(x), expected, rel=0)


def test_python_source_rejects_modules_that_need_more_than_torch(small, tmp_path):
    module_file = tmp_path / "needs_numpy_layer.py"
    module_file.write_text(textwrap.dedent('''
        import numpy as np
        from torch import nn

        class NeedsNumpy(nn.Module):
            def forward(self, x):
                return x * float(np.pi)
    '''))
    layer = _import_from(tmp_path, "needs_numpy_layer").NeedsNumpy()
    net = caffe2torch.build(small[0])
    net.prob = layer
    with pytest.raises(Caffe2TorchError, match="imports numpy; the standalone .py file may "
                                               "import only torch"):
        python_source(net)


# ----------------------------------------------------------------------------- traced formats


def test_onnx_runs_in_onnxruntime_with_any_batch(small, tmp_path):
    import onnx
    import onnxruntime

    _, _, net, x, expected = small
    path = export(net, tmp_path / "small.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["prob", "fc_aux"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(session.run(None, {"data": x.numpy()}), expected, rel=1e-5)
    other = _other_batch(x, 3)
    with torch.no_grad():
        _close(session.run(None, {"data": other.numpy()}), net(other), rel=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.13 deprecates jit
@pytest.mark.parametrize("suffix", [".ts", ".torchscript"])
def test_torchscript_round_trip(small, tmp_path, suffix):
    _, _, net, x, expected = small
    loaded = torch.jit.load(str(export(net, tmp_path / f"small{suffix}")))
    other = _other_batch(x, 3)
    with torch.no_grad():
        _close(loaded(x), expected, rel=0)
        _close(loaded(other), net(other), rel=0)


def test_exported_program_round_trip(small, tmp_path):
    _, _, net, x, expected = small
    program = torch.export.load(str(export(net, tmp_path / "small.pt2")))
    module = program.module()
    with torch.no_grad():
        _close(module(x), expected, rel=0)
        for batch in (1, 3):
            other = _other_batch(x, batch)
            _close(module(other), net(other), rel=0)


FIXED_BATCH = """
name: "fixed_batch"
input: "data"
input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "flat" type: "Reshape" bottom: "data" top: "flat"
        reshape_param { shape { dim: 2 dim: -1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"
        inner_product_param { num_output: 3 } }
"""


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_a_net_tied_to_its_batch_size_exports_with_static_shapes(tmp_path, caplog, suffix):
    prototxt = tmp_path / "fixed_batch.prototxt"
    prototxt.write_text(FIXED_BATCH)
    net = caffe2torch.build(prototxt)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = net(x)
    with caplog.at_level("WARNING", logger="caffe2torch"):
        path = export(net, tmp_path / f"fixed{suffix}")
    assert "does not export with a dynamic batch size" in caplog.text
    if suffix == ".pt2":
        with torch.no_grad():
            _close(torch.export.load(str(path)).module()(x), expected, rel=0)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == [2, 3, 4, 5]
        _close(session.run(None, {"data": x.numpy()}), expected, rel=1e-5)


def test_traced_exports_use_eval_mode_and_restore_training(small, tmp_path):
    _, _, net, x, expected = small
    net.train()
    try:
        path = export(net, tmp_path / "small.onnx")
        assert net.training and net.drop.training
    finally:
        net.eval()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(session.run(None, {"data": x.numpy()}), expected, rel=1e-5)  # no dropout inside


# ----------------------------------------------------------------------------- back to Caffe


def test_caffemodel_after_fine_tuning_matches_opencv(small, tmp_path):
    prototxt, weights, _, x, _ = small
    net = caffe2torch.build(prototxt, weights=weights)
    with torch.no_grad():  # "fine-tuning": the weights change in PyTorch
        for i, parameter in enumerate(net.parameters()):
            parameter.mul_(1.0 + 0.1 * (i + 1)).add_(0.01)
        expected = net(x)
    path = export(net, tmp_path / "tuned.caffemodel")
    reloaded = caffe2torch.build(prototxt, weights=path)
    with torch.no_grad():
        _close(reloaded(x), expected, rel=0)
    opencv = opencv_layers(prototxt, path, {"data": x.numpy()}, ["prob", "fc_aux"])
    assert_close(opencv["prob"], expected[0].numpy(), rel=1e-4, what="prob")
    assert_close(opencv["fc_aux"], expected[1].numpy(), rel=1e-4, what="fc_aux")


# ----------------------------------------------------------------------------- naming


@pytest.fixture(scope="module")
def tiny_vgg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_vgg")
    prototxt = folder / "tiny_vgg.prototxt"
    prototxt.write_text(_tiny_vgg_prototxt())
    weights = folder / "tiny_vgg.caffemodel"
    caffe2torch.write_random_caffemodel(prototxt, weights, seed=11)
    return prototxt, weights, caffe2torch.build(prototxt, weights=weights)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_naming_file_loads_into_torchvision_vgg(tiny_vgg, tmp_path, suffix):
    _, _, net = tiny_vgg
    path = export(net, tmp_path / f"tiny{suffix}", naming="torchvision")
    if suffix == ".pt":
        state = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file
        state = load_file(str(path))
    assert {"features.0.weight", "features.3.bias", "features.14.weight",
            "classifier.0.weight", "classifier.3.bias", "classifier.6.bias"} <= set(state)
    assert len(state) == 2 * 9  # six convolutions, three InnerProducts
    model = _torchvision_vgg(TINY_VGG_CFG, num_classes=5, hidden=16, state=state)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _close(model(x), net(x, outputs=["fc8"])["fc8"], rel=1e-5)


def test_vgg_face_torchvision_names_load_into_torchvision_vgg16():
    net = caffe2torch.build(VGG_FACE)  # initialised weights are random enough here
    names = torchvision_vgg_names(net)
    convs = [n for n in names if n.startswith("conv")]
    assert [names[n] for n in convs[:4]] == ["features.0", "features.2", "features.5",
                                             "features.7"]
    assert names["conv5_3"] == "features.28" and names["pool5"] == "features.30"
    assert (names["fc6"], names["fc7"], names["fc8"]) == \
        ("classifier.0", "classifier.3", "classifier.6")
    vgg16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]
    model = _torchvision_vgg(vgg16, num_classes=2622, hidden=4096,
                             state=named_state_dict(net, "torchvision"))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        _close(model(x), net(x, outputs=["fc8"])["fc8"], rel=1e-5)


def test_torchvision_naming_refuses_a_net_that_is_not_vgg(small, tmp_path):
    with pytest.raises(Caffe2TorchError) as info:
        export(small[2], tmp_path / "small.pt", naming="torchvision")
    message = str(info.value)
    assert "is not VGG-like" in message
    assert "layer 'sum' (Eltwise)" in message and "layer 'pool1' (Pooling)" in message
    assert not (tmp_path / "small.pt").exists()


def test_naming_applies_only_to_state_dict_formats(small, tmp_path):
    with pytest.raises(Caffe2TorchError, match="naming='torchvision' applies to state_dict"):
        export(small[2], tmp_path / "small.onnx", naming="torchvision")
    with pytest.raises(Caffe2TorchError, match="naming 'keras'"):
        export(small[2], tmp_path / "small.pt", naming="keras")


def test_unknown_extension_is_an_error_listing_the_formats(small, tmp_path):
    with pytest.raises(Caffe2TorchError, match=r"unknown output format '\.h5'.*\.onnx"):
        export(small[2], tmp_path / "small.h5")


# ----------------------------------------------------------------------------- command line


def test_cli_build_writes_the_output_format(small, tmp_path, capsys):
    prototxt, weights, _, x, expected = small
    out = tmp_path / "cli.safetensors"
    assert main(["build", str(prototxt), "-w", str(weights), "-o", str(out)]) == 0
    from safetensors.torch import load_file

    fresh = _fresh(small)
    fresh.load_state_dict(load_file(str(out)))
    with torch.no_grad():
        _close(fresh(x), expected, rel=0)


def test_cli_naming_option(tiny_vgg, small, tmp_path, capsys):
    prototxt, weights, _ = tiny_vgg
    out = tmp_path / "tiny.pt"
    assert main(["build", str(prototxt), "-w", str(weights), "-o", str(out),
                 "--naming", "torchvision"]) == 0
    assert "features.0.weight" in torch.load(out, weights_only=True)
    capsys.readouterr()
    assert main(["build", str(small[0]), "-o", str(tmp_path / "s.pt"),
                 "--naming", "torchvision"]) == 1
    assert "is not VGG-like" in capsys.readouterr().err


def test_module_docstring_lists_every_format():
    from caffe2torch import export as export_module

    for suffix in export_module.EXPORTERS:
        assert suffix in export_module.__doc__, suffix


def test_recurrent_net_exports_at_its_declared_sequence_length(tmp_path):
    """LSTM's axis 0 is time: the program keeps the declared shapes instead of a dynamic axis 0."""
    golden = ROOT / "tests" / "golden"
    net = caffe2torch.build(golden / "nets" / "recurrent.prototxt",
                            weights=golden / "recurrent.caffemodel")
    inputs = example_inputs(net)
    program = torch.export.load(str(export_program(net, tmp_path / "r.pt2"))).module()
    with torch.no_grad():
        expected = net(*inputs)
        got = program(*inputs)
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,)):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_format_registers_by_extension(tmp_path, small):
    """Adding a format is one registered writer: export() and check_output() then know it; an
    extension registered twice is refused."""
    from caffe2torch.export import EXPORTERS, check_output, register_exporter

    @register_exporter(".npz", takes_naming=True)
    def export_npz(net, path, *, naming="caffe"):
        np.savez(path, **{k: v.numpy() for k, v in named_state_dict(net, naming).items()})
        return path

    try:
        net = caffe2torch.build(small[0])
        assert check_output(tmp_path / "w.NPZ") == ".npz"
        written = export(net, tmp_path / "sub" / "w.npz")
        assert sorted(np.load(written)) == sorted(net.state_dict())
        with pytest.raises(ValueError, match="already registered"):
            register_exporter(".npz")(export_npz)
        with pytest.raises(ValueError, match="already registered"):
            register_exporter(".pt")(export_npz)
    finally:
        EXPORTERS.pop(".npz")
    with pytest.raises(Caffe2TorchError, match="unknown output format '.npz'"):
        check_output(tmp_path / "w.npz")
