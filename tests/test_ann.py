"""ANN spec grammar, model zoo, training, checkpoints and the train/evaluate commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from bioconv import cli
from bioconv.ann import ZOO, build_model, evaluate, load_checkpoint, save_checkpoint, train, train_and_save
from bioconv.ann.spec import ConvTok, DenseTok, DropTok, InputTok, PoolTok, format_spec, parse_spec
from bioconv.ann.train import augment_batch
from bioconv.data import load_dataset, subset

torch.set_num_threads(1)


def kinds(model: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in model]


# --- grammar ---------------------------------------------------------------------------------

def test_parse_every_token():
    toks = parse_spec("32x32x3-64c3BN-16c5-p2-mp3-D0.25-2048FCBN-D0.4-10FC")
    assert toks == (InputTok((3, 32, 32)), ConvTok(64, 3, True), ConvTok(16, 5, False), PoolTok("avg", 2),
                    PoolTok("max", 3), DropTok(0.25), DenseTok(2048, True), DropTok(0.4), DenseTok(10, False))
    assert parse_spec("28*28-10FC")[0] == InputTok((1, 28, 28))
    for spec in ZOO.values():
        assert format_spec(parse_spec(spec)) == spec


@pytest.mark.parametrize("spec, match", [
    ("", "empty"),
    ("32c3-p2-banana-10FC", "cannot parse token 'banana'"),
    ("32c3-28x28-10FC", "must come first"),
    ("32c3-D1.5-10FC", "0 <= p < 1"),
    ("28x28-p2-D0.1", "no conv or FC"),
    ("28x28-32FC-8c3-10FC", "after an FC layer"),
    ("28x28-0c3-10FC", "positive"),
    ("28x28-0FC", "positive"),
])
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


# --- zoo -------------------------------------------------------------------------------------

def test_cnn7_layout():
    model = build_model("cnn7", (1, 28, 28), 10)
    assert kinds(model) == ["Conv2d", "ReLU", "AvgPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"]
    assert list(dict(model.named_children())) == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "flatten", "fc1",
        "fcrelu1", "fc2"]
    assert model.conv1.padding == (1, 1) and model.fc1.in_features == 32 * 3 * 3
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def _convs(model):
    return [m.out_channels for m in model if isinstance(m, nn.Conv2d)]


def _fcs(model):
    return [m.out_features for m in model if isinstance(m, nn.Linear)]


def test_mcr_nets_match_table1():
    mnist = build_model("mcr-mnist", (1, 28, 28), 10)
    assert _convs(mnist) == [64, 128, 128, 128, 256, 256, 256, 512] and _fcs(mnist) == [2048, 10]
    assert sum(isinstance(m, nn.AvgPool2d) for m in mnist) == 2
    assert [m.p for m in mnist if isinstance(m, (nn.Dropout, nn.Dropout2d))] == [0.1, 0.1, 0.1, 0.4]
    assert mnist.fc1.in_features == 512 * 7 * 7
    cifar = build_model("mcr-cifar10", (3, 32, 32), 10)
    assert _convs(cifar) == [64, 128, 128, 128, 256, 256, 256, 512] and _fcs(cifar) == [2048, 10]
    assert sum(isinstance(m, nn.AvgPool2d) for m in cifar) == 4 and cifar.fc1.in_features == 512 * 2 * 2
    for model in (mnist, cifar):
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 8
        mods = list(model)
        for i, m in enumerate(mods):  # BN right after each conv, then ReLU
            if isinstance(m, nn.Conv2d):
                assert isinstance(mods[i + 1], nn.BatchNorm2d) and isinstance(mods[i + 2], nn.ReLU)
        assert isinstance(mods[-1], nn.Linear)


def test_rueckauer_and_tiny():
    model = build_model("rueckauer-cifar", (3, 32, 32), 10)
    assert _convs(model) == [32, 32, 64, 64] and _fcs(model) == [512, 10]
    assert [type(m).__name__ for m in model if "Pool" in type(m).__name__] == ["MaxPool2d", "MaxPool2d"]
    assert kinds(model)[:7] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert build_model("rueckauer-cifar-avg", (3, 32, 32), 10).pool1.__class__ is nn.AvgPool2d
    for shape in [(1, 28, 28), (1, 8, 8)]:
        tiny = build_model("tiny", shape, 10)
        assert tiny(torch.zeros(3, *shape)).shape == (3, 10)
        assert sum(p.numel() for p in tiny.parameters()) < 5000


def test_relu_after_every_layer_but_last():
    model = build_model("28x28-8c3BN-p2-D0.1-16FCBN-D0.2-10FC")
    mods = list(model)
    assert kinds(model) == ["Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d", "Dropout2d", "Flatten", "Linear",
                            "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert mods[-1].out_features == 10


@pytest.mark.parametrize("args, match", [
    (("mcr-mnist", (3, 32, 32), 10), "does not match"),
    (("cnn7", (1, 28, 28), 100), "100 classes"),
    (("tiny", (1, 2, 2), 10), "larger than the feature map"),
    (("resnet50", (1, 28, 28), 10), "unknown architecture"),
    (("32c3-p2", (1, 28, 28), 10), "must end with an FC"),
    (("32c3-10FC", None, 10), "no input token"),
    (("32c3-10FC", (5,), 10), r"\(C, H, W\)"),
])
def test_build_errors(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)


@pytest.mark.parametrize("arch, shape", [
    pytest.param("mcr-mnist", (1, 28, 28), marks=pytest.mark.slow),  # 54 M parameters: ~25 s on a busy 2-core CPU
    ("mcr-cifar10", (3, 32, 32)),
])
def test_big_nets_forward_and_train_step(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape, 10)
    x, y = torch.rand(2, *shape), torch.tensor([3, 7])
    before = model.conv1.weight.detach().clone()
    opt = torch.optim.Adadelta(model.parameters())
    loss = nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.conv1.weight)
    assert model.eval()(x).shape == (2, 10)


# --- training --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_train_learns_digits(digits):
    train_ds, test_ds = digits
    torch.manual_seed(0)
    model = build_model("8c3-p2-16c3-p2-32FC-10FC", train_ds.input_shape, 10)
    chance = evaluate(model, test_ds)
    result = train(model, train_ds, epochs=8, batch_size=32, seed=0, progress=False)
    acc = evaluate(result.model, test_ds)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert chance < 0.3 and acc > 0.7, (chance, acc)


def test_train_is_deterministic(digits):
    states = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build_model("tiny", (1, 8, 8), 10)
        train(model, subset(digits[0], 300), epochs=1, seed=5, progress=False, augment=True)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_early_stopping_restores_best(digits):
    torch.manual_seed(0)
    model = build_model("tiny", (1, 8, 8), 10)
    # lr = 0: nothing improves after epoch 1, so patience 2 stops at epoch 3
    result = train(model, digits[0], epochs=10, lr=0.0, early_stopping=2, seed=0, progress=False)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    assert all("val_accuracy" in row for row in result.history)
    with pytest.raises(ValueError, match="patience"):
        train(model, digits[0], epochs=1, early_stopping=0)
    with pytest.raises(ValueError, match="epochs"):
        train(model, digits[0], epochs=0)


def test_augment_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    assert torch.equal(augment_batch(x, 0, False, gen), x)
    flipped = augment_batch(x, 0, True, gen)
    for a, b in zip(flipped, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    shifted = augment_batch(x, 2, False, gen)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        assert any(torch.equal(shifted[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_evaluate_matches_manual(digits):
    torch.manual_seed(1)
    model = build_model("tiny", (1, 8, 8), 10).eval()
    ds = digits[1]
    manual = float((model(torch.from_numpy(ds.images)).argmax(1).numpy() == ds.labels).mean())
    assert evaluate(model, ds, batch_size=7) == pytest.approx(manual)


# --- checkpoints -----------------------------------------------------------------------------

def test_train_and_save_round_trip(tmp_path, mnist_dir):
    out = tmp_path / "ann" / "tiny.pt"
    model, meta = train_and_save("tiny", "mnist", out, epochs=1, seed=0, max_train=500, progress=False)
    assert out.is_file() and not list(out.parent.glob("*.tmp"))
    loaded, meta2 = load_checkpoint(out)
    assert meta2 == meta
    for key in ("spec", "arch", "dataset", "input_shape", "n_classes", "preprocessing", "seed", "test_accuracy",
                "versions", "train_time_s"):
        assert key in meta2, key
    assert meta2["arch"] == "tiny" and meta2["input_shape"] == [1, 28, 28] and meta2["n_train"] == 500
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    assert evaluate(loaded, load_dataset("mnist", "test")) == pytest.approx(meta["test_accuracy"])
    assert not loaded.training


def test_checkpoint_errors(tmp_path):
    model = build_model("tiny", (1, 8, 8), 10)
    meta = {"spec": "4c3-p2-8c3-p2-10FC", "arch": "tiny", "dataset": "digits", "input_shape": (1, 8, 8),
            "n_classes": 10}
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(model, {"spec": "x"}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(model, {**meta, "bad": object()}, tmp_path / "a.pt")
    with pytest.raises(FileNotFoundError, match="bioconv train"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a bioconv ANN checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    path = save_checkpoint(model, meta, tmp_path / "ok.pt")
    doc = torch.load(path, weights_only=True)
    torch.save({**doc, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    torch.save({**doc, "meta": {**doc["meta"], "spec": "8c3-p2-8c3-p2-10FC"}}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(tmp_path / "mismatch.pt")


# --- command line ----------------------------------------------------------------------------

def test_cli_train_and_evaluate(tmp_path, capsys):
    out = tmp_path / "tiny-digits.pt"
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "2", "--seed", "1",
                   "--out", str(out), "--no-progress", "--early-stopping", "3", "--augment", "--shift", "1",
                   "--lr-decay", "0.8"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and "test accuracy" in text and "val acc" in text
    _, meta = load_checkpoint(out)
    assert meta["seed"] == 1 and meta["dataset"] == "digits" and meta["train_settings"]["early_stopping"] == 3
    assert meta["train_settings"]["shift"] == 1 and meta["train_settings"]["lr_decay"] == 0.8
    assert cli.main(["evaluate", str(out)]) == 0
    assert f"{100 * meta['test_accuracy']:.2f} %" in capsys.readouterr().out
    rc = cli.main(["train", "--spec", "4c3-p2-12FC", "--dataset", "digits", "--epochs", "1", "--out",
                   str(tmp_path / "bad.pt"), "--no-progress"])
    assert rc == 2 and "10 classes" in capsys.readouterr().err
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--out", str(tmp_path / "s.pt"), "--shift", "-1"])
    assert rc == 2 and "--shift must be >= 0" in capsys.readouterr().err


def test_cli_help_lists_every_option(capsys):
    parser = cli.build_parser()
    for name in ("train", "evaluate"):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        sub = parser._subparsers._group_actions[0].choices[name]
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text
            assert action.help, f"{name} {action.dest} has no help"


def test_init_weights_and_cli_shape_error(tmp_path, capsys, mnist_dir):
    from bioconv.ann.train import init_weights

    model = build_model("tiny", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="init must be"):
        init_weights(model, 0, "xavier")
    init_weights(model, 0, "he")
    w = model.fc1.weight.detach()
    assert abs(float(w.std()) - (2 / 32) ** 0.5) < 0.05 and float(model.fc1.bias.abs().max()) == 0.0
    meta = {"spec": "4c3-p2-8c3-p2-10FC", "arch": "tiny", "dataset": "mnist", "input_shape": [1, 8, 8],
            "n_classes": 10}
    path = save_checkpoint(model, meta, tmp_path / "wrong.pt")
    assert cli.main(["evaluate", str(path), "--max-images", "10"]) == 2
    assert "dataset input (1, 28, 28) != checkpoint input (1, 8, 8)" in capsys.readouterr().err


# --- training for the spike budget -----------------------------------------------------------

def test_budget_relu_quantizes_in_training_and_clips_in_evaluation():
    from bioconv.ann.activations import BudgetReLU, freeze_activations, make_activation

    act = BudgetReLU(levels=4, init_clip=2.0)
    x = torch.linspace(-1, 3, 401, requires_grad=True)
    y = act.train()(x)
    assert set(np.round(y.detach().numpy().astype(float), 4)) == {0.0, 0.5, 1.0, 1.5, 2.0}  # 4 steps of c/4 up to c
    y.sum().backward()
    inside = (x.detach() > 0) & (x.detach() < 2)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[x.detach() > 2.001] == 0)  # straight through
    assert act.clip.grad > 0  # the ceiling learns where x > c
    np.testing.assert_allclose(act.eval()(x).detach().numpy(), np.clip(x.detach().numpy(), 0, 2.0), atol=2e-6)
    model, clips = freeze_activations(torch.nn.Sequential(torch.nn.Linear(3, 3), act))
    assert isinstance(model[1], torch.nn.Hardtanh) and model[1].max_val == pytest.approx(2.0, abs=1e-5)
    assert clips == [model[1].max_val]
    with pytest.raises(ValueError, match="levels"):
        BudgetReLU(levels=0)
    with pytest.raises(ValueError, match="needs activation 'clip'"):
        make_activation("relu", levels=5)
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("gelu")


def test_cli_train_for_the_spike_budget_converts_with_its_ceilings(tmp_path, capsys):
    from bioconv.from_torch import from_torch

    out = tmp_path / "clip.pt"
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "6", "--seed", "0",
                   "--activation", "clip", "--levels", "5", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    model, meta = load_checkpoint(out)
    act = meta["activation"]
    assert act["kind"] == "clip" and act["levels"] == 5 and len(act["clips"]) >= 1
    hard = [m for m in model.modules() if isinstance(m, torch.nn.Hardtanh)]
    assert [m.max_val for m in hard] == pytest.approx(act["clips"])
    graph = from_torch(model, tuple(meta["input_shape"]))
    clipped = [l.clip for l in graph.spiking_layers if getattr(l, "clip", None) is not None]
    assert clipped == pytest.approx(act["clips"])
    assert meta["test_accuracy"] > 0.4  # it learns (the same tiny net with ReLU: 0.2 after 2 epochs)
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--levels", "5", "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "--levels 5 needs --activation clip" in capsys.readouterr().err
