"""The model zoo: generated prototxts against the real-world files, manifests, fetching, CLI.

Downloads are tested only against an HTTP server on 127.0.0.1 serving a temporary folder.
"""
from __future__ import annotations

import difflib
import hashlib
import http.server
import importlib.util
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest
from google.protobuf import text_format
from oracle import CORPUS, OPEN_NSFW, ROOT, require_converters, require_shared

import caffe2torch
from caffe2torch import zoo
from caffe2torch.cli import main
from caffe2torch.errors import Caffe2TorchError, WeightsError
from caffe2torch.layers.registry import is_supported
from caffe2torch.proto import caffe_pb2
from caffe2torch.summary import summarize

# zoo id -> the real-world deploy file it reproduces (../shared/corpus/prototxt)
CORPUS_FILES = {
    "vgg_face": "vgg_face_deploy_v1.prototxt",
    "vgg16": "vgg16_ilsvrc_deploy_v1.prototxt",
    "bvlc_alexnet": "bvlc_alexnet_deploy.prototxt",
    "bvlc_googlenet": "bvlc_googlenet_deploy.prototxt",
    "squeezenet_v1.1": "squeezenet_v1.1_deploy.prototxt",
    "resnet50": "resnet50_deploy.prototxt",
    "open_nsfw": "open_nsfw_deploy.prototxt",
    "res10_ssd_face": "opencv_res10_ssd_face_detector_deploy.prototxt",
    "mobilenet_ssd": "mobilenet_ssd_voc_deploy.prototxt",
}
IDS = sorted(CORPUS_FILES)
NSFW_WEIGHTS = OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel"


def _make_zoo():
    spec = importlib.util.spec_from_file_location("make_zoo", ROOT / "tools" / "make_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _missing_converters(path: Path) -> list[str]:
    net = caffe2torch.load_definition(path).net
    return sorted({layer.type for layer in net.layer
                   if layer.type != "Input" and not is_supported(layer.type)})


def _graph_or_skip(path: Path, input_shapes=None):
    """The shaped graph; a skip naming the converters still missing (others are adding them)."""
    require_converters(_missing_converters(path), path.name)
    return caffe2torch.load_graph(path, input_shapes)


# --------------------------------------------------------------------------- structure

def _strip_training_fields(message) -> None:
    """Weight fillers only initialise training; clear them at every level."""
    for field, value in message.ListFields():
        if field.name.endswith("filler"):
            message.ClearField(field.name)
        elif field.message_type is not None and not field.is_repeated:
            _strip_training_fields(value)


def structure(path: Path) -> list[str]:
    """The upgraded V2 net, one line per layer: name, type, bottoms, tops and every parameter
    except the training-only ones (``param`` learning-rate multipliers, fillers); the input's
    batch size is left out (the zoo declares one image, the originals 1 or 10)."""
    net = caffe2torch.load_definition(path).net
    lines = [f"net name: {net.name!r}"]
    for original in net.layer:
        layer = caffe_pb2.LayerParameter()
        layer.CopyFrom(original)
        layer.ClearField("param")
        _strip_training_fields(layer)
        for shape in layer.input_param.shape:
            shape.dim[0] = 1
        lines.append(text_format.MessageToString(layer, as_one_line=True))
    return lines


def assert_same_structure(ours: Path, original: Path) -> None:
    diff = list(difflib.unified_diff(structure(original), structure(ours), str(original),
                                     str(ours), lineterm="", n=1))
    assert not diff, "\n".join(diff[:40])


@pytest.mark.parametrize("entry_id", IDS)
def test_generated_prototxt_is_the_published_net(entry_id):
    original = require_shared(CORPUS / CORPUS_FILES[entry_id])
    assert_same_structure(zoo.get_entry(entry_id).prototxt, original)


def test_structure_comparison_sees_a_changed_parameter_and_a_rewired_blob(tmp_path):
    original = require_shared(CORPUS / CORPUS_FILES["bvlc_alexnet"])
    make_zoo = _make_zoo()
    for change in ("kernel", "wiring"):
        net = make_zoo.bvlc_alexnet()
        conv3 = next(layer for layer in net.layer if layer.name == "conv3")
        if change == "kernel":
            conv3.convolution_param.kernel_size[0] = 5
        else:
            conv3.bottom[0] = "pool1"
        path = tmp_path / f"{change}.prototxt"
        path.write_text(make_zoo.deploy_text(net))
        with pytest.raises(AssertionError, match="conv3"):
            assert_same_structure(path, original)


@pytest.mark.parametrize("entry_id", IDS)
def test_output_shapes_equal_the_published_net(entry_id):
    original = require_shared(CORPUS / CORPUS_FILES[entry_id])
    entry = zoo.get_entry(entry_id)
    shapes = {"data": tuple(entry.manifest["input"]["shape"])}
    ours, theirs = _graph_or_skip(entry.prototxt, shapes), _graph_or_skip(original, shapes)
    assert [(n.name, [ours.blobs[t].shape for t in n.tops]) for n in ours.layers] == \
        [(n.name, [theirs.blobs[t].shape for t in n.tops]) for n in theirs.layers]


def test_prototxts_are_what_make_zoo_writes():
    make_zoo = _make_zoo()
    assert sorted(make_zoo.NETS) == sorted(e.id for e in zoo.list_entries())
    stale = make_zoo.check_all(zoo.ZOO_DIR)
    assert not stale, "run python tools/make_zoo.py\n" + "\n".join(stale)[:4000]


# --------------------------------------------------------------------------- manifests

def test_every_entry_is_listed():
    assert [e.id for e in zoo.list_entries()] == IDS


@pytest.mark.parametrize("entry_id", IDS)
def test_manifest_describes_its_prototxt(entry_id):
    entry = zoo.get_entry(entry_id)
    m = entry.manifest
    definition = caffe2torch.load_definition(entry.prototxt)
    assert m["id"] == entry_id
    assert m["prototxt_format"] == definition.format
    inputs = [layer for layer in definition.net.layer if layer.type == "Input"]
    assert len(inputs) == 1 and list(inputs[0].top) == [m["input"]["name"]]
    assert list(inputs[0].input_param.shape[0].dim) == m["input"]["shape"]
    tops = {top for layer in definition.net.layer for top in layer.top}
    assert set(m["outputs"]) <= tops
    for key in ("preprocessing", "source", "license", "name", "description"):
        assert m[key], key
    assert m["preprocessing"]["channel_order"] in ("BGR", "RGB")
    weights = m["weights"]
    assert weights["file"].endswith(".caffemodel")
    assert weights["size"] is None or (isinstance(weights["size"], int) and weights["size"] > 0)
    for algorithm, digits in (("sha256", 64), ("sha1", 40)):
        value = weights.get(algorithm)
        assert value is None or (len(value) == digits and int(value, 16) >= 0), algorithm
    assert m["labels"] is None or isinstance(m["labels"], list)
    if m["labels"] is None and entry_id != "vgg_face":
        assert m["labels_note"]


@pytest.mark.parametrize("entry_id", IDS)
def test_num_params_recomputed_from_prototxt(entry_id):
    entry = zoo.get_entry(entry_id)
    graph = _graph_or_skip(entry.prototxt)
    assert sum(row.params for row in summarize(graph)) == entry.manifest["num_params"]
    labels = entry.manifest["labels"]
    detectors = [n for n in graph.layers if n.type == "DetectionOutput"]
    if labels is not None and detectors:  # label ids index the names, background included
        assert detectors[0].param.detection_output_param.num_classes == len(labels)
    elif labels is not None:
        assert graph.blob("prob").shape[1] == len(labels)


@pytest.mark.parametrize("entry_id", IDS)
def test_preprocessing_block_reads_and_fits_the_input(entry_id):
    preprocess = pytest.importorskip("caffe2torch.preprocess")
    entry = zoo.get_entry(entry_id)
    found = preprocess.Preprocessing.from_manifest(entry)
    height, width = entry.manifest["input"]["shape"][2:]
    assert (found.crop or found.size) == (height, width)
    assert found.channel_order == entry.manifest["preprocessing"]["channel_order"]


def test_published_parameter_counts():
    """The counts agree with the published ones (AlexNet 61.0M, VGG-16 138.4M, GoogLeNet 7.0M,
    SqueezeNet v1.1 1.24M); ResNet-50's adds BatchNorm statistics to torchvision's 25,557,032."""
    counts = {e.id: e.manifest["num_params"] for e in zoo.list_entries()}
    assert counts["bvlc_alexnet"] == 60_965_224
    assert counts["vgg16"] == 138_357_544
    assert counts["bvlc_googlenet"] == 6_998_552
    assert counts["squeezenet_v1.1"] == 1_235_496
    batch_norm_channels = 26_560  # 53 BatchNorm layers: mean + variance each, + 53 scale factors
    assert counts["resnet50"] == 25_557_032 + 64 + 2 * batch_norm_channels + 53


def test_open_nsfw_manifest_matches_the_released_caffemodel():
    path = require_shared(NSFW_WEIGHTS)
    entry = zoo.get_entry("open_nsfw")
    assert entry.weights["size"] == path.stat().st_size == 23_815_355
    assert entry.verify_weights(path) is True
    model = caffe2torch.read_caffemodel(path)
    assert sum(b.data.size for layer in model.layers for b in layer.blobs) == \
        entry.manifest["num_params"]
    with_blobs = {layer.name for layer in model.layers if layer.blobs}
    net = caffe2torch.load_definition(entry.prototxt).net
    parametric = {layer.name for layer in net.layer
                  if layer.type in ("Convolution", "BatchNorm", "Scale", "InnerProduct")}
    assert with_blobs == parametric


def test_open_nsfw_official_weights_bind_strictly():
    path = require_shared(NSFW_WEIGHTS)
    prototxt = zoo.get_entry("open_nsfw").prototxt
    _graph_or_skip(prototxt)
    net = caffe2torch.build(prototxt, weights=path)
    assert net.caffe.weights_report.ok
    assert len(net.caffe.weights_report.loaded) == 53 * 3 + 1


# --------------------------------------------------------------------------- verify_weights

def _entry(tmp_path: Path, data: bytes, **weights) -> zoo.ZooEntry:
    info = {"file": "net.caffemodel", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "url": None}
    info.update(weights)
    return zoo.ZooEntry(id="tiny", directory=tmp_path, manifest={"weights": info})


def test_verify_weights_checks_size_then_the_strongest_checksum(tmp_path):
    data = b"caffe weights " * 100
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data)
    assert _entry(tmp_path, data).verify_weights(path) is True
    sha1 = hashlib.sha1(data).hexdigest()
    assert _entry(tmp_path, data, sha256=None, sha1=sha1).verify_weights(path) is True
    assert _entry(tmp_path, data, sha256=None, size=None).verify_weights(path) is False
    with pytest.raises(WeightsError, match=r"sha256 .* does not match"):
        _entry(tmp_path, data, sha256="0" * 64).verify_weights(path)
    with pytest.raises(WeightsError, match=r"sha1 .* does not match"):
        _entry(tmp_path, data, sha256=None, sha1="0" * 40).verify_weights(path)
    with pytest.raises(WeightsError, match=f"{len(data)} bytes; .* has 7 bytes"):
        _entry(tmp_path, data, size=7).verify_weights(path)


def test_build_from_the_zoo_warns_about_weights_with_another_checksum(tmp_path, capsys,
                                                                      caplog):
    wrong = tmp_path / "resnet_50_1by2_nsfw.caffemodel"
    wrong.write_bytes(b"\0" * 64)
    assert main(["build", "--zoo", "open_nsfw", "-w", str(wrong)]) == 1  # not a caffemodel
    assert "64 bytes; the zoo's resnet_50_1by2_nsfw.caffemodel for 'open_nsfw' has 23815355 " \
           "bytes" in caplog.text
    err = capsys.readouterr().err
    assert err.startswith("caffe2torch: error:") and str(wrong) in err


def test_unknown_and_unsafe_ids_are_errors():
    for bad in ("no_such_net", "../model_zoo/vgg_face", "vgg_face/..", ""):
        with pytest.raises(Caffe2TorchError, match="no model zoo entry"):
            zoo.get_entry(bad)


# --------------------------------------------------------------------------- fetching

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range: bytes=N-`` unless ``server.ranges`` is False;
    ``server.cut_after`` ends the response early (a dropped connection)."""

    def log_message(self, *args) -> None:
        return None

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start, header = 0, self.headers.get("Range")
        if header and server.ranges:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:server.cut_after] if server.cut_after else body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.requests, httpd.ranges, httpd.cut_after = root, [], True, None
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def weights_bytes():
    return bytes(range(256)) * 4099  # ~1 MiB, more than one read block


def _served(server, data: bytes, name: str = "net.caffemodel") -> str:
    (server.root / name).write_bytes(data)
    return f"{server.url}/{name}"


def test_fetch_downloads_verifies_and_renames(server, tmp_path, weights_bytes):
    url = _served(server, weights_bytes)
    dest = tmp_path / "out"
    path = zoo.fetch_weights(_entry(tmp_path, weights_bytes, url=url), dest, progress=False,
                             timeout=10)
    assert path == dest / "net.caffemodel" and path.read_bytes() == weights_bytes
    assert sorted(p.name for p in dest.iterdir()) == ["net.caffemodel"]
    # already there and verified: no second request
    assert zoo.fetch_weights(_entry(tmp_path, weights_bytes, url=url), dest, progress=False) == path
    assert len(server.requests) == 1


def test_fetch_with_a_progress_bar_on_stderr(server, tmp_path, weights_bytes, capsys):
    pytest.importorskip("tqdm")
    url = _served(server, weights_bytes)
    zoo.fetch_weights(_entry(tmp_path, weights_bytes, url=url), tmp_path / "out", timeout=10)
    captured = capsys.readouterr()
    assert captured.out == "" and "net.caffemodel" in captured.err


def test_fetch_refuses_a_wrong_checksum_and_deletes_the_file(server, tmp_path, weights_bytes):
    url = _served(server, weights_bytes)
    entry = _entry(tmp_path, weights_bytes, url=url, sha256="ab" * 32)
    dest = tmp_path / "out"
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{64} does not match .*'tiny'"):
        zoo.fetch_weights(entry, dest, progress=False, timeout=10)
    assert list(dest.iterdir()) == []


def test_fetch_refuses_a_wrong_size(server, tmp_path, weights_bytes):
    url = _served(server, weights_bytes[:1000])
    with pytest.raises(WeightsError, match="1000 bytes; .* has"):
        zoo.fetch_weights(_entry(tmp_path, weights_bytes, url=url), tmp_path / "out",
                          progress=False, timeout=10)
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_reports_http_errors(server, tmp_path, weights_bytes):
    entry = _entry(tmp_path, weights_bytes, url=f"{server.url}/missing.caffemodel")
    with pytest.raises(Caffe2TorchError, match="HTTP 404"):
        zoo.fetch_weights(entry, tmp_path / "out", progress=False, timeout=10)
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_resumes_a_cut_download(server, tmp_path, weights_bytes):
    url = _served(server, weights_bytes)
    entry = _entry(tmp_path, weights_bytes, url=url)
    dest = tmp_path / "out"
    server.cut_after = 300_000
    with pytest.raises(Caffe2TorchError, match="run again to resume"):
        zoo.fetch_weights(entry, dest, progress=False, timeout=10)
    assert (dest / "net.caffemodel.part").stat().st_size == 300_000
    server.cut_after = None
    path = zoo.fetch_weights(entry, dest, progress=False, timeout=10)
    assert path.read_bytes() == weights_bytes
    assert server.requests[-1] == ("/net.caffemodel", "bytes=300000-")
    assert not (dest / "net.caffemodel.part").exists()


def test_fetch_starts_over_when_the_server_ignores_ranges(server, tmp_path, weights_bytes):
    url = _served(server, weights_bytes)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "net.caffemodel.part").write_bytes(b"stale bytes from another file")
    server.ranges = False
    path = zoo.fetch_weights(_entry(tmp_path, weights_bytes, url=url), dest, progress=False,
                             timeout=10)
    assert path.read_bytes() == weights_bytes


def test_fetch_refuses_an_existing_file_that_does_not_verify(tmp_path, weights_bytes):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "net.caffemodel").write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="bytes; .* has"):
        zoo.fetch_weights(_entry(tmp_path, weights_bytes, url="http://127.0.0.1:9/x"), dest,
                          progress=False)


def test_fetch_takes_the_file_out_of_an_archive(server, tmp_path, weights_bytes):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("pack/names.txt", b"a\nb\n"), ("pack/net.caffemodel", weights_bytes)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    url = _served(server, buffer.getvalue(), "pack.tar.gz")
    entry = _entry(tmp_path, weights_bytes, url=url, archive="pack.tar.gz")
    path = zoo.fetch_weights(entry, tmp_path / "out", progress=False, timeout=10)
    assert path.read_bytes() == weights_bytes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["net.caffemodel",
                                                                   "pack.tar.gz"]


def test_fetch_needs_an_http_url(tmp_path, weights_bytes):
    with pytest.raises(Caffe2TorchError, match="no download URL is known for 'tiny'"):
        zoo.fetch_weights(_entry(tmp_path, weights_bytes), tmp_path, progress=False)
    source = tmp_path / "w.caffemodel"
    source.write_bytes(weights_bytes)
    with pytest.raises(Caffe2TorchError, match="only http:// and https://"):
        zoo.fetch_weights(_entry(tmp_path, weights_bytes), tmp_path / "out",
                          url=source.as_uri(), progress=False)


def test_fetch_warns_when_nothing_can_be_verified(server, tmp_path, weights_bytes, caplog):
    url = _served(server, weights_bytes)
    entry = _entry(tmp_path, weights_bytes, url=url, size=None, sha256=None)
    with caplog.at_level("WARNING", logger="caffe2torch"):
        zoo.fetch_weights(entry, tmp_path / "out", progress=False, timeout=10)
    assert "not verified" in caplog.text


# --------------------------------------------------------------------------- command line

def test_cli_zoo_list(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for entry_id in IDS:
        assert entry_id in out
    assert "5,944,567" in out and "resnet_50_1by2_nsfw.caffemodel" in out


def test_cli_zoo_info(capsys):
    assert main(["zoo", "info", "open_nsfw"]) == 0
    out = capsys.readouterr().out
    for text in ("preprocessing:", "[104.0, 117.0, 123.0]", "1x3x224x224", "5,944,567",
                 "23,815,355 bytes", zoo.get_entry("open_nsfw").weights["sha256"],
                 "BSD 2-Clause", "yahoo/open_nsfw", "2: sfw, nsfw"):
        assert text in out, text
    assert main(["zoo", "info", "resnet50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == zoo.get_entry("resnet50").manifest


def test_cli_zoo_fetch_with_url(server, tmp_path, capsys):
    url = _served(server, require_shared(NSFW_WEIGHTS).read_bytes(), "nsfw.caffemodel")
    assert main(["zoo", "fetch", "open_nsfw", "-o", str(tmp_path / "w"), "--url", url, "-q"]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "w" / "resnet_50_1by2_nsfw.caffemodel"
    assert zoo.sha256_file(written) == zoo.get_entry("open_nsfw").weights["sha256"]


def test_cli_zoo_errors(server, tmp_path, capsys):
    assert main(["zoo", "info", "no_such_net"]) == 1
    assert "no model zoo entry 'no_such_net'" in capsys.readouterr().err
    url = _served(server, b"not the nsfw weights")
    assert main(["zoo", "fetch", "open_nsfw", "-o", str(tmp_path), "--url", url, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2torch: error:") and "Traceback" not in err
    assert not any(tmp_path.glob("resnet_50_1by2_nsfw.caffemodel*"))


def test_parameter_counts_use_caffe_blob_shapes():
    """Grouped convolutions hold in/group weights per filter (AlexNet's conv2: 2 groups)."""
    graph = _graph_or_skip(zoo.get_entry("bvlc_alexnet").prototxt)
    rows = {row.name: row.params for row in summarize(graph)}
    assert rows["conv2"] == 256 * (96 // 2) * 5 * 5 + 256
    assert rows["fc6"] == 4096 * 256 * 6 * 6 + 4096
