"""The CLI's per-architecture recipes: `--arch lenet` keeps the main job's recipe whatever the data set,
`--arch lenet-bn` brings its own defaults (per data set), every flag given explicitly wins, and
`train` hands fit exactly the resolved optimizer, schedule and augmentation. Cheap: argument parsing,
one-epoch runs on a 120-image IDX folder, the augmentations on small arrays."""
import functools
import os
import sys

import numpy as np
import pytest

import swiftcnn
from swiftcnn import __main__ as cli

sys.path.insert(0, os.path.dirname(__file__))
from test_datasets import make_split  # noqa: E402

# The main job's recipe as measured in the README (seeds 0-4 on the full MNIST): must not move.
LENET = {"channels": (6, 16), "epochs": 8, "batch_size": 128, "lr": 4e-3, "optimizer": "adam", "weight_decay": 0.0,
         "schedule": "cosine", "augment_shift": 2, "augment_flip": False}
HAVE_BN = all(hasattr(swiftcnn, name) for name in cli.BN_LAYERS)


def parsed(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return {key: getattr(args, key) for key in cli.RECIPE_KEYS}


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    make_split(str(folder), "train", 120, rng)
    make_split(str(folder), "t10k", 40, rng)
    return str(folder)


@pytest.mark.parametrize("dataset", [None, "mnist", "fashion-mnist", "mnist-5k"])
def test_lenet_keeps_the_main_jobs_recipe(dataset):
    argv = ["--dataset", dataset] if dataset else []
    assert parsed(*argv) == LENET
    assert parsed("--arch", "lenet", *argv) == LENET
    assert cli.recipe("lenet", dataset or "mnist") == LENET


def test_lenet_bn_recipes_are_what_the_cli_uses():
    digits = dict(LENET, **cli.LENET_BN_RECIPES["digits"])
    fashion = dict(LENET, **cli.LENET_BN_RECIPES["fashion-mnist"])
    assert parsed("--arch", "lenet-bn") == digits
    assert parsed("--arch", "lenet-bn", "--dataset", "mnist-5k") == digits
    assert parsed("--dataset", "fashion-mnist", "--arch", "lenet-bn") == fashion
    # the recipes the README's lenet-bn figures were measured with (docs/lenet-bn-recipes.md)
    assert digits == dict(LENET, channels=(8, 16), optimizer="adamw", weight_decay=0.05)
    assert fashion == dict(LENET, channels=(16, 32), optimizer="adamw", weight_decay=0.05, augment_shift=0,
                           augment_flip=True)
    # nothing but RECIPE_KEYS differs between the recipes
    assert set(cli.LENET_BN_RECIPES["digits"]) <= set(cli.RECIPE_KEYS)
    assert set(cli.LENET_BN_RECIPES["fashion-mnist"]) <= set(cli.RECIPE_KEYS)


def test_explicit_flags_win_over_the_recipe():
    got = parsed("--arch", "lenet-bn", "--dataset", "fashion-mnist", "--channels", "5,7", "--epochs", "3",
                 "--batch-size", "64",
                 "--lr", "0.01", "--optimizer", "adam", "--weight-decay", "0", "--schedule", "step",
                 "--augment-shift", "2", "--no-augment-flip")
    assert got == {"channels": (5, 7), "epochs": 3, "batch_size": 64, "lr": 0.01, "optimizer": "adam", "weight_decay": 0.0,
                   "schedule": "step", "augment_shift": 2, "augment_flip": False}
    assert parsed("--augment-flip", "--optimizer", "adamw", "--weight-decay", "0.1") == dict(
        LENET, augment_flip=True, optimizer="adamw", weight_decay=0.1)


def test_bad_recipe_flags_are_refused(capsys):
    for argv in (["--weight-decay", "-1"], ["--weight-decay", "nan"], ["--optimizer", "lamb"],
                 ["--channels", "6"], ["--channels", "6,0"], ["--channels", "a,b"], ["--channels", "1,2,3"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["train", *argv])
        assert "--" in capsys.readouterr().err
    with pytest.raises(ValueError, match="arch must be"):
        cli.recipe("resnet", "mnist")
    with pytest.raises(ValueError, match="'adam', 'adamw' or 'sgd'"):
        cli.make_optimizer("lamb", [], 0.1, 0.9)


def test_help_names_both_recipes():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--weight-decay" in text and "--augment-flip" in text and "adamw" in text
    bn = cli.LENET_BN_RECIPES
    assert f"lenet-bn: {bn['digits']['weight_decay']:g}" in " ".join(text.split())


@pytest.mark.parametrize("arch,dataset", [("lenet", "mnist"), ("lenet-bn", "mnist"),
                                          ("lenet-bn", "fashion-mnist")])
def test_train_gives_fit_the_resolved_recipe(arch, dataset, idx_folder, tmp_path, monkeypatch):
    if arch == "lenet-bn" and not HAVE_BN:
        pytest.skip("this swiftcnn has no BatchNorm2d/BatchNorm1d/Dropout")
    calls = []
    real_fit = swiftcnn.Sequential.fit

    def spy(self, x, y, **kwargs):
        calls.append(dict(kwargs))
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(swiftcnn.Sequential, "fit", spy)
    # --epochs 1 keeps it cheap; everything else is the recipe's
    assert cli.main(["train", "--data", idx_folder, "--dataset", dataset, "--arch", arch, "--epochs", "1",
                     "--quiet", "--no-report", "--out", str(tmp_path)]) == 0
    (kw,) = calls
    want = cli.recipe(arch, dataset)
    assert kw["batch_size"] == want["batch_size"] and kw["epochs"] == 1
    opt = kw["optimizer"]
    kind = {"adam": swiftcnn.Adam, "adamw": swiftcnn.AdamW}[want["optimizer"]]
    assert type(opt) is kind and opt.weight_decay == want["weight_decay"]
    assert kw["scheduler"].schedule == want["schedule"] and kw["scheduler"].base_lr == want["lr"]
    aug = kw["augment"]
    if want["augment_shift"] and want["augment_flip"]:
        assert aug.func is cli.shift_and_flip and aug.keywords == {"max_shift": want["augment_shift"]}
    elif want["augment_shift"]:
        assert aug.func is cli.random_shift and aug.keywords == {"max_shift": want["augment_shift"]}
    elif want["augment_flip"]:
        assert aug is cli.random_flip
    else:
        assert aug is None


def test_random_flip_mirrors_about_half_and_is_reproducible():
    x = np.random.default_rng(1).random((200, 1, 6, 5), dtype=np.float32)
    out = cli.random_flip(x, np.random.default_rng(7))
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous and out is not x
    mirrored = np.array([np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert np.all(mirrored ^ kept)  # each image either mirrored or untouched (random data: never both)
    assert 70 < mirrored.sum() < 130
    np.testing.assert_array_equal(out, cli.random_flip(x, np.random.default_rng(7)))
    with pytest.raises(ValueError, match="random_flip: batch must have shape"):
        cli.random_flip(x[0], np.random.default_rng(0))


def test_shift_and_flip_is_the_shift_then_the_flip():
    x = np.random.default_rng(2).random((50, 1, 8, 8), dtype=np.float32)
    got = cli.shift_and_flip(x, np.random.default_rng(3), max_shift=1)
    rng = np.random.default_rng(3)
    want = cli.random_flip(cli.random_shift(x, rng, max_shift=1), rng)
    np.testing.assert_array_equal(got, want)
    assert cli.make_augment(0, False) is None
    assert cli.make_augment(0, True) is cli.random_flip
    assert cli.make_augment(2, False).func is cli.random_shift
    both = cli.make_augment(1, True)
    assert isinstance(both, functools.partial) and both.func is cli.shift_and_flip
    assert both.keywords == {"max_shift": 1}


def test_channels_widen_lenet_bn_only(tmp_path, capsys):
    if not HAVE_BN:
        pytest.skip("this swiftcnn has no BatchNorm2d/BatchNorm1d/Dropout")
    net = cli.build_model("lenet-bn", "relu", channels=(5, 7))
    conv1, conv2, fc1 = net.layers[0], net.layers[4], net.layers[9]
    assert conv1.weight.shape == (5, 1, 5, 5) and conv2.weight.shape == (7, 5, 5, 5)
    assert fc1.weight.shape == (120, 7 * 5 * 5)
    assert net.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    default = cli.build_model("lenet-bn", "relu")
    assert default.layers[0].weight.shape == (6, 1, 5, 5) and default.layers[4].weight.shape == (16, 6, 5, 5)
    # the lecture's network has its fixed widths: --channels other than 6,16 is refused before any work
    assert cli.main(["train", "--channels", "8,16", "--out", str(tmp_path / "r")]) == 1
    assert "--channels applies to --arch lenet-bn only" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
