"""UDFC: the closed forms against independent solvers, exact compensation, real pruning, real accuracy.

Every test uses real components (torch, Torch-Pruning, OpenVINO, NNCF, the trained built-in network on
real Fashion-MNIST images); none of them can pass with a stubbed implementation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from practise_plugin.core.errors import ConfigError
from practise_plugin.core.strategy import CompressionContext
from practise_plugin.strategies import build_config, get_strategy
from practise_plugin.surgery.channel_removal import remove_channels
from practise_plugin.udfc.chains import analyse
from practise_plugin.udfc.closed_form import merge_coefficients, prune_coefficients, quant_scales, quantize_symmetric
from practise_plugin.udfc.compensate import channel_affine, compensate_next_layer, scale_input_channels, select_filters
from practise_plugin.udfc.pipeline import run_pass

A1, A2 = 0.01, 0.008


def spec_objective(s, W_j, W_kept, a_j, a_kept, K_j, K_kept, a1=A1):
    """METHODS.md's pruning objective, written exactly as printed (with the division by a_j)."""
    approx = ((a_kept / a_j)[:, None] * W_kept * s[:, None]).sum(0)
    return float(((W_j - approx) ** 2).sum() + a1 * (K_j - (s * K_kept).sum()) ** 2)


def random_layer(n_kept, n_pruned, D, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_kept + n_pruned, D, generator=g, dtype=torch.float64)
    a = torch.rand(n_kept + n_pruned, generator=g, dtype=torch.float64) * 1.5 + 0.2
    a[::3] *= -1  # negative BN gammas occur in trained networks
    K = torch.randn(n_kept + n_pruned, generator=g, dtype=torch.float64)
    return W, a, K


@pytest.mark.parametrize("n_kept,n_pruned,D,duplicate", [(12, 5, 40, False), (30, 8, 9, False), (10, 4, 40, True)])
def test_prune_coefficients_equal_lstsq_of_the_printed_objective(n_kept, n_pruned, D, duplicate):
    W, a, K = random_layer(n_kept, n_pruned, D, seed=n_kept)
    if duplicate:  # two identical kept channels: Q^T Q is singular
        W[3], a[3], K[3] = W[1], a[1], K[1]
    kept, pruned = torch.arange(n_kept), torch.arange(n_kept, n_kept + n_pruned)
    R = a[:, None] * W
    S, solver = prune_coefficients(R[kept], K[kept], R[pruned], K[pruned], a[pruned], A1)
    assert solver == ("cholesky" if D > n_kept and not duplicate else "pinv")
    for row, j in enumerate(pruned):
        # Q columns: (gamma_i sigma_j)/(sigma_i gamma_j) W_i ; extra row sqrt(a1) * K
        A = torch.cat([((a[kept] / a[j])[:, None] * W[kept]).T, A1**0.5 * K[kept][None]], 0)
        b = torch.cat([W[j], A1**0.5 * K[j : j + 1]])
        ref = torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]  # minimum-norm minimiser
        torch.testing.assert_close(S[row], ref, rtol=1e-7, atol=1e-9)


def test_prune_coefficients_minimise_the_objective_by_brute_force():
    W, a, K = random_layer(6, 3, 15, seed=3)
    kept, pruned = torch.arange(6), torch.arange(6, 9)
    R = a[:, None] * W
    S, _ = prune_coefficients(R[kept], K[kept], R[pruned], K[pruned], a[pruned], A1)
    for row, j in enumerate(pruned):
        args = (W[j].numpy(), W[kept].numpy(), float(a[j]), a[kept].numpy(), float(K[j]), K[kept].numpy())
        res = scipy.optimize.minimize(spec_objective, np.zeros(6), args=args, method="BFGS", options={"gtol": 1e-10})
        closed = spec_objective(S[row].numpy(), *args)
        assert closed <= res.fun + 1e-10
        np.testing.assert_allclose(S[row].numpy(), res.x, atol=1e-5)
        assert closed < spec_objective(np.zeros(6), *args)  # compensation beats plain pruning on the objective


def test_quant_scale_matches_brute_force_and_is_not_the_degenerate_equation():
    g = torch.Generator().manual_seed(1)
    R = torch.randn(5, 30, generator=g, dtype=torch.float64)
    K = torch.randn(5, generator=g, dtype=torch.float64)
    Rq = quantize_symmetric(R, 3)
    s = quant_scales(R, Rq, K, A2)
    for m in range(5):
        f = lambda t, m=m: float(((R[m] - t * Rq[m]) ** 2).sum() + A2 * (K[m] - t * K[m]) ** 2)  # noqa: E731
        best = scipy.optimize.minimize_scalar(f, bounds=(0.0, 3.0), method="bounded", options={"xatol": 1e-12})
        assert abs(float(s[m]) - best.x) < 1e-6
    assert not torch.allclose(s, torch.ones_like(s))  # 3-bit weights really need rescaling


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_quantizer_levels_and_range(bits):
    W = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(bits))
    Wq = quantize_symmetric(W, bits)
    m, L = W.abs().max(), 2**bits - 1
    levels = m * (2 * torch.arange(L + 1) / L - 1)
    assert torch.unique(Wq).numel() <= 2**bits
    assert (Wq.unsqueeze(-1) - levels).abs().min(-1).values.max() < 1e-6 * m  # every value is a level
    assert Wq.abs().max() == pytest.approx(float(m), rel=1e-6) and Wq.abs().max() <= m * (1 + 1e-6)
    assert (Wq - W).abs().max() <= m / L * (1 + 1e-5)  # at most half a step (step = 2m/L)
    assert not (Wq == 0).any()  # symmetric grid with an even number of levels: zero is not a level
    assert torch.equal(quantize_symmetric(torch.zeros(3, 3), bits), torch.zeros(3, 3))


def _bn_chain(consumer: str, act: bool, exact_multiple: bool) -> tuple[nn.Sequential, list[int]]:
    """conv -> BN -> [ReLU] -> consumer, whose filters 6 and 7 are exact combinations of filters 0..5
    (BN-scaled weights *and* BN shifts), so that pruning them can be compensated exactly."""
    g = torch.Generator().manual_seed(7)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        bn.running_mean.copy_(torch.randn(8, generator=g))
        bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(8, generator=g))
        a, K = channel_affine(conv, bn)
        R = a[:, None] * conv.weight.reshape(8, -1)
        for j in (6, 7):
            c = torch.zeros(6)
            if exact_multiple:
                c[j - 5] = 1.7  # a positive multiple of one kept channel: survives the ReLU
            else:
                c = torch.randn(6, generator=g)
            conv.weight[j] = ((c[:, None] * R[:6]).sum(0) / a[j]).view(3, 3, 3)
            bn.bias[j] = (c * K[:6]).sum() + a[j] * bn.running_mean[j]
    head = nn.Conv2d(8, 5, 3, padding=1) if consumer == "conv" else nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    layers = [conv, bn] + ([nn.ReLU()] if act else []) + [head]
    return nn.Sequential(*layers).eval(), [6, 7]


@pytest.mark.parametrize("consumer,act,method", [("conv", False, "udfc"), ("linear", False, "udfc"),
                                                 ("conv", True, "udfc"), ("conv", True, "nm")])
def test_compensation_is_exact_for_linearly_dependent_filters(consumer, act, method):
    model, pruned = _bn_chain(consumer, act, exact_multiple=act)
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    head = model[-1] if consumer == "conv" else model[-1][1]
    compensate_next_layer(model[0], model[1], head, pruned, method=method)
    remove_channels(model, x[:1], {"0": pruned})
    assert model[0].out_channels == 6 and model[1].num_features == 6
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # without compensation the same removal is visibly lossy
    plain, _ = _bn_chain(consumer, act, exact_multiple=act)
    remove_channels(plain, x[:1], {"0": pruned})
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() > 1e-2 * ref.abs().max()


def test_neuron_merging_picks_the_most_similar_kept_filter():
    Rk = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    Rp = torch.tensor([[0.1, 0.0, 3.0], [-1.0, -1.0, 0.0]])
    S = merge_coefficients(Rk, Rp, threshold=0.0)
    assert S[0].nonzero().flatten().tolist() == [2]
    assert float(S[0, 2]) == pytest.approx(Rp[0].norm().item() / 2.0)
    assert torch.count_nonzero(S[1]) == 0  # opposite direction: below the threshold, no merge


def test_quantization_scale_is_folded_into_the_consumer_in_the_right_direction():
    """If quantization had simply halved the filters (and K = 0), the scale is exactly 2 and folding it
    into the consumer's input slices restores the original output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.Conv2d(6, 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        R = model[0].weight.reshape(6, -1).clone()
        s = quant_scales(R, R / 2, torch.zeros(6), A2)
        torch.testing.assert_close(s, torch.full((6,), 2.0))
        model[0].weight.div_(2)
        scale_input_channels(model[2], s)
        torch.testing.assert_close(model(x), ref)


def test_chains_follow_the_structure_of_resnets_vgg_and_mobilenets():
    import torchvision

    x = torch.randn(1, 3, 32, 32)
    r18 = {i.path: i for i in analyse(torchvision.models.resnet18().eval(), x)}
    assert sorted(p for p, i in r18.items() if i.prunable) == sorted(f"layer{s}.{b}.conv1" for s in range(1, 5) for b in range(2))
    assert "residual" in r18["layer1.0.conv2"].reason or "Add" in r18["layer1.0.conv2"].reason
    assert not r18["layer2.0.downsample.0"].prunable and not r18["conv1"].prunable
    r50 = [i for i in analyse(torchvision.models.resnet50().eval(), x) if i.prunable]
    assert len(r50) == 32 and all(i.path.endswith(("conv1", "conv2")) and "downsample" not in i.path for i in r50)
    assert all(i.consumer == i.path[:-1] + str(int(i.path[-1]) + 1) for i in r50)  # conv1 -> conv2 -> conv3
    vgg = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    ).eval()
    v = {i.path: i for i in analyse(vgg, x)}
    assert v["0"].prunable and v["0"].consumer == "4" and v["0"].bn == "1"
    assert v["4"].prunable and v["4"].consumer == "9" and v["4"].flatten == 64
    mb = {i.path: i for i in analyse(torchvision.models.mobilenet_v2().eval(), x)}
    assert "depthwise" in mb["features.2.conv.1.0"].reason  # the depthwise conv itself
    assert "depthwise" in mb["features.2.conv.0.0"].reason  # the expand conv that feeds it


@pytest.fixture(scope="module")
def builtin():
    from practise_plugin.models.loading import load_model

    return load_model("builtin")


@pytest.fixture(scope="module")
def fmnist_subset():
    from practise_plugin.models.builtin import test_set

    ts = test_set()
    return ts.subset(torch.arange(0, len(ts), max(1, len(ts) // 1000)))


def _accuracy(model, images) -> float:
    with torch.inference_mode():
        return sum(int((model(x).argmax(1) == y).sum()) for x, y in images.batches(500)) / len(images)


def _apply(bundle, **params):
    strategy = get_strategy("udfc")
    return strategy.apply(bundle.model, None, build_config("udfc", params), CompressionContext(bundle.data_config))


def test_strategy_removes_channels_keeps_input_and_replays_from_checkpoint(builtin, tmp_path):
    from practise_plugin.models.checkpoint import save_compressed
    from practise_plugin.models.loading import load_model

    before = {k: v.clone() for k, v in builtin.model.state_dict().items()}
    res = _apply(builtin, ratio=0.5, bits=6, criterion="l1")
    m = res.model
    assert m.layer1[0].conv1.out_channels == 8 and m.layer1[0].bn1.num_features == 8 and m.layer1[0].conv2.in_channels == 8
    assert m.layer4[2].conv1.out_channels == 64 and m.layer1[0].conv2.out_channels == 16  # block outputs untouched
    assert res.stats["layers_pruned"] == 16 and res.stats["params_after"] < 0.6 * res.stats["params_before"]
    assert res.stats["seconds"]["total"] > 0 and all(len(torch.unique(mod.weight)) <= 64 for mod in m.modules()
                                                       if isinstance(mod, (nn.Conv2d, nn.Linear)))
    assert all(torch.equal(before[k], v) for k, v in builtin.model.state_dict().items())  # input untouched
    assert builtin.model.layer1[0].conv1.out_channels == 16
    x = builtin.example_input(2)
    path = save_compressed(tmp_path / "udfc.pt", m, "builtin", builtin.data_config, res.surgery, {"udfc": res.config})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = load_model(str(path)).model
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), m(x))


def test_udfc_beats_plain_pruning_on_the_trained_builtin_network(builtin, fmnist_subset):
    accs = {method: _accuracy(_apply(builtin, ratio=0.3, criterion="l2", method=method).model, fmnist_subset)
            for method in ("prune", "udfc")}
    assert accs["udfc"] > accs["prune"] + 0.01, accs


def test_quantization_only_puts_every_weight_on_its_grid_and_is_deterministic(builtin):
    x = builtin.example_input()
    runs = [run_pass(builtin.model, x, ratio=0.0, criterion="l2", bits=4, method="udfc", a1=A1, a2=A2) for _ in range(2)]
    (u1, surgery, report), (u2, _, _) = runs
    assert surgery == [] and report.params_after == report.params_before and report.quantized_layers == 37
    assert report.scale_targets == {"consumer": 16, "batchnorm": 0, "none": 21}
    for (name, a), b in zip(u1.state_dict().items(), u2.state_dict().values()):
        assert torch.equal(a, b), name
    # the consumer (conv2) of every block carries s~ before its own quantization: not the plain result
    plain = quantize_symmetric(builtin.model.layer1[0].conv2.weight.detach(), 4)
    assert not torch.equal(u1.layer1[0].conv2.weight, plain)
    assert len(torch.unique(u1.layer1[0].conv2.weight)) <= 16


def test_openvino_exact_low_bit_weights_and_nncf_int8():
    import openvino as ov

    from practise_plugin.export.lowbit import lowbit_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    for bn in (net[1], net[4]):
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    small, _, _ = run_pass(net, x[:1], ratio=0.25, criterion="l1", bits=4, method="udfc", a1=A1, a2=A2)
    core = ov.Core()
    ovm = lowbit_model(small, x[:1], bits=4)
    u4 = [op for op in ovm.get_ops() if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.u4]
    assert len(u4) == 3  # both convs and the classifier hold 4-bit integers
    out = core.compile_model(ovm, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    with torch.no_grad():
        ref = small(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    int8 = lowbit_model(small, x[:1], bits=8, backend="nncf")
    assert sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8 for op in int8.get_ops()) == 3
    with pytest.raises(ConfigError, match="8 bits only"):
        lowbit_model(small, x[:1], bits=4, backend="nncf")


@pytest.mark.parametrize("params,match", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"bits": 1}, "bits"), ({"bits": 17}, "bits"),
    ({"ratio": 0.0}, "nothing to do"), ({"method": "merge"}, "method"), ({"criterion": "l3"}, "criterion"),
    ({"a1": -1}, "a1"), ({"nm_threshold": 2}, "nm_threshold"), ({"ratios": 0.3}, "unknown option"),
])
def test_config_errors_name_the_fix(params, match):
    with pytest.raises(ConfigError, match=match):
        build_config("udfc", params)


def test_registered_as_data_free():
    s = get_strategy("udfc")
    assert s.needs_data is False and s.config_cls().bits is None
    assert select_filters(torch.randn(10, 4), 0.3, "l1")[0].numel() == 3
    with pytest.raises(ConfigError, match="criterion"):
        select_filters(torch.randn(10, 4), 0.3, "linf")
