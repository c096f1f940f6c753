"""Caffe models read without Caffe: the wire format and the prototxt, each layer's Caffe semantics against a
direct computation, the real open_nsfw ResNet-50-1by2, a Caffe ResNet-18 as the zoo's resnet18, bad files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from caffe_helpers import caffemodel, prototxt
from resnetlab.deploy.caffe import CaffeGraphError, from_caffe, load_caffe_net, save_caffe_net
from resnetlab.models.caffe.graph import CaffeNet
from resnetlab.models.caffe.proto import CaffeFormatError, parse_caffemodel
from resnetlab.models.caffe.prototxt import PrototxtError, parse_prototxt

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caffe"
RNG = np.random.default_rng(0)


def _r(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# --- a direct computation of Caffe's layers, written from Caffe's C++ (loops, no PyTorch) ---------------
def conv_ref(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def pool_ref(x, method, k, s, pad):
    """caffe/src/caffe/layers/pooling_layer.cpp, Forward_cpu."""
    n, c, h, w = x.shape
    ph = int(np.ceil((h + 2 * pad - k) / s)) + 1
    pw = int(np.ceil((w + 2 * pad - k) / s)) + 1
    if pad:
        ph -= (ph - 1) * s >= h + pad
        pw -= (pw - 1) * s >= w + pad
    out = np.zeros((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            hs, ws = i * s - pad, j * s - pad
            he, we = min(hs + k, h + pad), min(ws + k, w + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = window.max((2, 3)) if method == "MAX" else window.sum((2, 3)) / size
    return out


def bn_ref(x, mean_s, var_s, factor, eps=1e-5):
    f = 0.0 if factor == 0 else 1.0 / factor
    return (x - (mean_s * f).reshape(1, -1, 1, 1)) / np.sqrt((var_s * f).reshape(1, -1, 1, 1) + eps)


LAYERS = [  # a small net with every layer type and parameter style the converter claims
    dict(name="conv1", type="Convolution", bottom="data", top="conv1",
         convolution_param=dict(num_output=4, kernel_size=3, stride=2, pad=1)),
    dict(name="bn1", type="BatchNorm", bottom="conv1", top="conv1", batch_norm_param=dict(eps=1e-3)),
    dict(name="scale1", type="Scale", bottom="conv1", top="conv1", scale_param=dict(bias_term=True)),
    dict(name="relu1", type="ReLU", bottom="conv1", top="conv1"),
    dict(name="pool1", type="Pooling", bottom="conv1", top="pool1", pooling_param=dict(pool="MAX", kernel_size=3,
                                                                                      stride=2)),
    dict(name="branch", type="Convolution", bottom="pool1", top="branch",
         convolution_param=dict(num_output=4, kernel_size=1, bias_term=False)),
    dict(name="bn2", type="BatchNorm", bottom="branch", top="branch"),
    dict(name="scale2", type="Scale", bottom="branch", top="branch"),
    dict(name="sum", type="Eltwise", bottom=["pool1", "branch"], top="sum",
         eltwise_param=dict(operation="SUM", coeff=[1.0, -0.5])),
    dict(name="prod", type="Eltwise", bottom=["sum", "pool1"], top="prod", eltwise_param=dict(operation="PROD")),
    dict(name="max", type="Eltwise", bottom=["prod", "sum"], top="max", eltwise_param=dict(operation="MAX")),
    dict(name="pool2", type="Pooling", bottom="max", top="pool2", pooling_param=dict(pool="AVE", kernel_size=2,
                                                                                    stride=2, pad=1)),
    dict(name="fc", type="InnerProduct", bottom="pool2", top="fc", inner_product_param=dict(num_output=3)),
    dict(name="prob", type="Softmax", bottom="fc", top="prob"),
]


def _blobs(zero_factor=False):
    return {"conv1": [_r(4, 3, 3, 3), _r(4)], "bn1": [_r(4) * 3, np.abs(_r(4)) * 3 + 1, np.float32([0 if zero_factor
                                                                                               else 2.5])],
            "scale1": [_r(4) + 1, _r(4)], "branch": [_r(4, 4, 1, 1)],
            "bn2": [_r(4), np.abs(_r(4)) + 0.5, np.float32([1.0])], "scale2": [_r(4) + 1], "fc": [_r(3, 16), _r(3)]}


def _reference(x_bgr, bl):
    y = conv_ref(x_bgr, *bl["conv1"], stride=2, pad=1)
    y = bn_ref(y, *bl["bn1"][:2], bl["bn1"][2][0], eps=1e-3)
    y = np.maximum(y * bl["scale1"][0].reshape(1, -1, 1, 1) + bl["scale1"][1].reshape(1, -1, 1, 1), 0)
    p1 = pool_ref(y, "MAX", 3, 2, 0)
    br = bn_ref(conv_ref(p1, bl["branch"][0], None, 1, 0), *bl["bn2"][:2], 1.0) * bl["scale2"][0].reshape(1, -1, 1, 1)
    s = p1 - 0.5 * br
    m = np.maximum(s * p1, s)
    p2 = pool_ref(m, "AVE", 2, 2, 1)
    return p2.reshape(len(x_bgr), -1) @ bl["fc"][0].T + bl["fc"][1]


@pytest.mark.parametrize("header", ["layer", "input_shape", "input_dim"])
@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "V1-layers"])
def test_every_layer_matches_a_direct_computation_of_caffe(tmp_path, header, legacy):
    bl = _blobs()
    (tmp_path / "net.prototxt").write_text(prototxt(LAYERS, (2, 3, 11, 11), header=header))
    types = {lay["name"]: lay["type"] for lay in LAYERS}
    (tmp_path / "net.caffemodel").write_bytes(caffemodel([(k, types[k], v) for k, v in bl.items()], legacy=legacy,
                                                         packed=not legacy))
    conv = from_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel")
    assert conv.zoo is None and conv.report["dropped_final_softmax"]
    x = torch.randn(2, 3, 11, 11)  # 11 -> conv 6 -> max-pool 3 (rounded up; 2 if rounded down) -> ave-pool 2
    with torch.no_grad():
        got = conv.model(x).numpy()
    want = _reference(x.flip(1).double().numpy(), bl)  # the converted net takes RGB; Caffe computed on BGR
    assert got.shape == (2, 3) and np.allclose(got, want, atol=1e-4), np.abs(got - want).max()


def test_batchnorm_with_a_zero_moving_average_factor_is_caffes():
    layers = [dict(name="bn", type="BatchNorm", bottom="data", top="bn")]
    net = CaffeNet(parse_prototxt(prototxt(layers, (1, 2, 3, 3))), bgr=False).eval()
    blobs = [np.float32([1, 2]), np.float32([3, 4]), np.float32([0])]
    _, parsed = parse_caffemodel(caffemodel([("bn", "BatchNorm", blobs)]))
    net.load_caffe_blobs(parsed, "test")
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        assert torch.allclose(net(x), x / np.sqrt(1e-5), rtol=1e-5)  # factor 0: mean and variance 0, as in Caffe


def test_converted_graph_saves_without_pickle_and_reloads(tmp_path):
    bl = _blobs()
    (tmp_path / "net.prototxt").write_text(prototxt(LAYERS, (1, 3, 9, 9)))
    types = {lay["name"]: lay["type"] for lay in LAYERS}
    (tmp_path / "net.caffemodel").write_bytes(caffemodel([(k, types[k], v) for k, v in bl.items()]))
    conv = from_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel", classes=["a", "b", "c"])
    path = save_caffe_net(conv, tmp_path / "out" / "model.safetensors")
    model, pre, classes = load_caffe_net(path)
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(model(x), conv.model(x))
    assert classes == ["a", "b", "c"] and pre.mean[0] == pytest.approx(123 / 255) and pre.std[0] == 1 / 255


# --- bad files ---------------------------------------------------------------------------------------
def test_bad_caffemodels_are_refused_with_what_is_wrong(tmp_path):
    good = caffemodel([("conv1", "Convolution", [_r(4, 3, 3, 3), _r(4)])])
    with pytest.raises(CaffeFormatError, match="truncated or corrupt"):
        parse_caffemodel(good[:-20])
    with pytest.raises(CaffeFormatError):
        parse_caffemodel(good + b"\x00" * 64)  # more bytes than the message declares: field number 0
    with pytest.raises(CaffeFormatError, match="no layers"):
        parse_caffemodel(b"")
    with pytest.raises(CaffeFormatError):
        parse_caffemodel(bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)))


def test_a_caffemodel_that_does_not_fit_its_prototxt_names_the_layer(tmp_path):
    (tmp_path / "net.prototxt").write_text(prototxt(LAYERS[:4], (1, 3, 9, 9)))
    bl = _blobs()
    cases = {"no blobs for layer 'scale1'": [("conv1", "Convolution", bl["conv1"]), ("bn1", "BatchNorm", bl["bn1"])],
             "layer 'conv1' .* blob of shape \\(4, 3, 5, 5\\)": [("conv1", "Convolution", [_r(4, 3, 5, 5), _r(4)]),
                                                                ("bn1", "BatchNorm", bl["bn1"]),
                                                                ("scale1", "Scale", bl["scale1"])]}
    for message, layers in cases.items():
        (tmp_path / "net.caffemodel").write_bytes(caffemodel(layers))
        with pytest.raises(CaffeGraphError, match=message):
            from_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel")


def test_unsupported_layers_and_malformed_prototxt_are_named():
    with pytest.raises(CaffeGraphError, match="'lrn1'.*unsupported layer type 'LRN'; supported: Input, Convolution"):
        CaffeNet(parse_prototxt(prototxt([dict(name="lrn1", type="LRN", bottom="data", top="lrn1")])))
    with pytest.raises(PrototxtError, match="nested more than 32 deep"):
        parse_prototxt("a { " * 100 + "}" * 100)
    with pytest.raises(PrototxtError, match="not closed"):
        parse_prototxt('layer { name: "x" ')
    with pytest.raises(CaffeGraphError, match="declares no input"):
        CaffeNet(parse_prototxt('layer { name: "r" type: "ReLU" bottom: "data" top: "data" }'))


# --- a Caffe ResNet-18 (the public prototxt) as the zoo's resnet18 -------------------------------------
def _random_blobs_for(net: CaffeNet) -> list[tuple[str, str, list[np.ndarray]]]:
    out = []
    for key, name, _, _, kind in net.steps:
        m = net.layers[key]
        if kind in ("Convolution", "InnerProduct"):
            fan = m.weight[0].numel()
            blobs = [_r(*m.weight.shape, scale=(2 / fan) ** 0.5)] + ([_r(*m.bias.shape, scale=0.1)]
                                                                     if m.bias is not None else [])
        elif kind == "BatchNorm":
            s = np.float32([999.98])
            blobs = [_r(m.num_features, scale=0.1) * s, (np.abs(_r(m.num_features)) + 0.5) * s, s]
        elif kind == "Scale":
            blobs = [_r(*m.weight.shape, scale=0.2) + 1] + ([_r(*m.bias.shape, scale=0.1)] if m.bias is not None
                                                             else [])
        else:
            continue
        out.append((name, kind, blobs))
    return out


@pytest.mark.skipif(not (SHARED / "resnet18-deploy.prototxt").is_file(), reason="../shared/data/caffe is absent")
def test_the_public_resnet18_prototxt_becomes_the_zoo_resnet18(tmp_path):
    import resnetlab

    proto = SHARED / "resnet18-deploy.prototxt"
    graph = CaffeNet(parse_prototxt(proto.read_text()))
    (tmp_path / "r18.caffemodel").write_bytes(caffemodel(_random_blobs_for(graph)))
    conv = from_caffe(proto, tmp_path / "r18.caffemodel")
    assert conv.zoo == {"name": "resnet18", "kwargs": {"num_classes": 1000, "stem_pool": "caffe",
                                                       "shortcut": "first"}}
    model = conv.model
    assert model.layer1[0].downsample is not None and model.layer1[1].downsample is None  # res2a_branch1
    assert "layer1.0.downsample.0.weight" in model.state_dict() and "fc.weight" in model.state_dict()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want, got = conv.graph_model(x), model(x)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    path = resnetlab.save_weights(model, tmp_path / "r18.safetensors")
    again = resnetlab.create_model("resnet18", weights=path, **{k: v for k, v in conv.zoo["kwargs"].items()})
    with torch.no_grad():
        assert torch.equal(again.eval()(x), got)


# --- the real open_nsfw ResNet-50-1by2 ---------------------------------------------------------------
@pytest.mark.skipif(not (SHARED / "resnet_50_1by2_nsfw.caffemodel").is_file(), reason="../shared/data/caffe absent")
def test_the_real_open_nsfw_model_converts_and_its_batchnorms_see_standardised_activations():
    conv = from_caffe(SHARED / "resnet_50_1by2_nsfw-deploy.prototxt", SHARED / "resnet_50_1by2_nsfw.caffemodel",
                      classes=["sfw", "nsfw"])
    assert conv.zoo is None  # its stride sits in the first 1x1 of a bottleneck: a graph, not the zoo's v1.5
    assert conv.report["params"] == 5_917_890 and conv.report["layers"]["BatchNorm"] == 53
    net = conv.model
    seen = {}
    bn = net.layers["bn_1"]
    bn.register_forward_hook(lambda m, i, o: seen.setdefault("bn", o))
    # natural-image statistics: a smooth random field with the spectrum of photos, as 0-255 pixels
    f = np.fft.fftfreq(224)
    spectrum = 1 / np.maximum(np.hypot(*np.meshgrid(f, f)), 1 / 224)
    noise = np.fft.ifft2(spectrum * np.exp(2j * np.pi * RNG.random((4, 3, 224, 224)))).real
    img = 128 + 60 * noise / noise.std()
    pre = conv.preprocess
    x = (torch.from_numpy(img).float() / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) / \
        torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = net(x).softmax(1)
    act = seen["bn"].transpose(0, 1).reshape(64, -1)
    # with the moving-average factor (999.98) divided out, the first BatchNorm standardises its input;
    # without it, variances would be off by a factor of 1000
    assert float(act.var(1).median()) == pytest.approx(1.0, rel=0.9)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(1), torch.ones(4))


@pytest.mark.skipif(not (SHARED / "resnet18-deploy.prototxt").is_file(), reason="../shared/data/caffe is absent")
def test_convert_caffe_cli_writes_a_checkpoint_that_predict_reads(tmp_path):
    from PIL import Image

    from resnetlab import Predictor
    from resnetlab.cli import main

    proto = SHARED / "resnet18-deploy.prototxt"
    (tmp_path / "r18.caffemodel").write_bytes(caffemodel(_random_blobs_for(CaffeNet(parse_prototxt(
        proto.read_text())))))
    img = tmp_path / "photo.png"
    Image.fromarray(RNG.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "converted"
    assert main(["convert-caffe", "--prototxt", str(proto), "--caffemodel", str(tmp_path / "r18.caffemodel"),
                 "--out", str(out), "--check", str(img)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.safetensors", "graph.safetensors",
                                               "conversion.json"}
    p = Predictor(out / "model.pt", backend="torch")
    assert p.meta.model == "resnet18" and p.meta.preprocess.std[0] == pytest.approx(1 / 255)
    # the same image through the graph (Caffe's way: BGR, 0-255 minus the mean) and through the Predictor
    graph, pre, _ = load_caffe_net(out / "graph.safetensors")
    x = pre.image_transform()(Image.open(img).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        want = graph(x).softmax(1)[0].numpy()
    got = p.predict_proba([str(img)])[0]
    assert np.allclose(got, want, atol=1e-5)


def test_convert_caffe_cli_refuses_a_truncated_caffemodel_and_writes_nothing(tmp_path, capsys):
    from resnetlab.cli import main

    (tmp_path / "net.prototxt").write_text(prototxt(LAYERS, (1, 3, 9, 9)))
    types = {lay["name"]: lay["type"] for lay in LAYERS}
    data = caffemodel([(k, types[k], v) for k, v in _blobs().items()])
    (tmp_path / "net.caffemodel").write_bytes(data[: len(data) // 2])
    rc = main(["convert-caffe", "--prototxt", str(tmp_path / "net.prototxt"), "--caffemodel",
               str(tmp_path / "net.caffemodel"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "net.caffemodel" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling_and_a_scale_without_bias(method):
    layers = [dict(name="s", type="Scale", bottom="data", top="data"),
              dict(name="g", type="Pooling", bottom="data", top="g", pooling_param=dict(pool=method,
                                                                                      global_pooling=True))]
    net = CaffeNet(parse_prototxt(prototxt(layers, (1, 3, 5, 7))), bgr=False).eval()
    gamma = np.float32([2, -1, 0.5])
    _, parsed = parse_caffemodel(caffemodel([("s", "Scale", [gamma])]))
    net.load_caffe_blobs(parsed, "test")
    x = torch.randn(2, 3, 5, 7)
    y = x.numpy() * gamma.reshape(1, 3, 1, 1)
    want = y.max((2, 3)) if method == "MAX" else y.mean((2, 3))
    with torch.no_grad():
        got = net(x)
    assert got.shape == (2, 3, 1, 1) and np.allclose(got.numpy()[:, :, 0, 0], want, atol=1e-6)


@pytest.mark.skipif(not (SHARED / "resnet18-deploy.prototxt").is_file(), reason="../shared/data/caffe is absent")
def test_a_resnet_whose_last_pool_is_not_global_stays_a_graph(tmp_path):
    text = (SHARED / "resnet18-deploy.prototxt").read_text().replace("dim: 224 dim: 224", "dim: 256 dim: 256")
    (tmp_path / "r18.prototxt").write_text(text)
    graph = CaffeNet(parse_prototxt(text))
    assert graph.output_shape == (1000,)  # pool5 (7x7, stride 1) leaves 2x2 at 256 px: fc sees 512 * 4 inputs
    (tmp_path / "r18.caffemodel").write_bytes(caffemodel(_random_blobs_for(graph)))
    conv = from_caffe(tmp_path / "r18.prototxt", tmp_path / "r18.caffemodel")
    assert conv.zoo is None and isinstance(conv.model, CaffeNet)


@pytest.mark.skipif(not (SHARED / "resnet18-deploy.prototxt").is_file(), reason="../shared/data/caffe is absent")
def test_fine_tuning_a_converted_model_feeds_caffes_normalisation(tmp_path):
    from resnetlab.deploy.caffe import save_conversion
    from resnetlab.eval import load_trained
    from resnetlab.train.engine import fit
    from train_helpers import tiny_config, write_tree

    proto = SHARED / "resnet18-deploy.prototxt"
    (tmp_path / "r18.caffemodel").write_bytes(caffemodel(_random_blobs_for(CaffeNet(parse_prototxt(
        proto.read_text())))))
    conv = from_caffe(proto, tmp_path / "r18.caffemodel")
    files = save_conversion(conv, tmp_path / "converted")
    tree = write_tree(tmp_path / "colours", train=6, test=3, val=3, size=16)
    fit(tiny_config(tree, tmp_path / "run", model="resnet18", model_kwargs={"shortcut": "first",
                                                                          "stem_pool": "caffe"},
                    pretrained=files["checkpoint"], image_size=32, epochs=1, lr=1e-4))
    trained = load_trained(tmp_path / "run")
    assert trained.preprocess.mean == pytest.approx((123 / 255, 117 / 255, 104 / 255))
    assert trained.preprocess.std == pytest.approx((1 / 255,) * 3)
    start = conv.model.state_dict()["layer1.0.downsample.0.weight"]  # res2a_branch1, kept by the fine-tune
    assert torch.allclose(trained.model.state_dict()["layer1.0.downsample.0.weight"], start, atol=1e-2)
