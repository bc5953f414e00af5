"""Sequential.save / swiftcnn.load (API.md): one .npz at exactly the given path, architecture +
weights + a format version, identical predictions after loading, and ValueError (never unpickling)
for damaged or foreign files, FileNotFoundError for a missing one."""
import io
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

import swiftcnn

S = swiftcnn


def lecture(act=None, dtype="float32", seed=0):
    act = act or S.Sigmoid
    return S.Sequential(S.Conv2d(1, 6, 5, padding=2, dtype=dtype, seed=seed), act(), S.MaxPool2d(2),
                        S.Conv2d(6, 16, 5, dtype=dtype, seed=seed + 1), act(), S.MaxPool2d(2), S.Flatten(),
                        S.Linear(400, 120, dtype=dtype, seed=seed + 2), act(),
                        S.Linear(120, 84, dtype=dtype, seed=seed + 3), act(),
                        S.Linear(84, 10, dtype=dtype, seed=seed + 4))


def describe(model):
    """Layer types and settings, recursively (what must survive a round trip)."""
    out = []
    for layer in model:
        d = {"type": type(layer).__name__}
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "in_features",
                     "out_features"):
            if hasattr(layer, attr):
                v = getattr(layer, attr)
                d[attr] = tuple(v) if isinstance(v, (tuple, list)) else v
        if hasattr(layer, "bias") and not isinstance(layer, S.Sequential):
            d["has_bias"] = layer.bias is not None
        if isinstance(layer, S.Sequential):
            d["children"] = describe(layer)
        out.append(d)
    return out


@pytest.mark.parametrize("act", ["Sigmoid", "ReLU"])
def test_round_trip_of_the_lecture_network(tmp_path, rng, dtype, act):
    model = lecture(getattr(S, act), dtype=dtype, seed=3)
    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    # train a little so the weights are not just the seeded init
    model.fit(x, rng.integers(0, 10, 5), epochs=1, batch_size=5, progress=False)
    path = tmp_path / "lecture.npz"
    model.save(str(path))
    assert sorted(os.listdir(tmp_path)) == ["lecture.npz"]
    loaded = S.load(str(path))
    assert isinstance(loaded, S.Sequential)
    assert loaded is not model
    assert describe(loaded) == describe(model)
    assert loaded[0].dtype == np.dtype(dtype)
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert list(sd_a) == list(sd_b)
    for k in sd_a:
        assert sd_b[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(sd_a[k], sd_b[k])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded(x), model(x))
    # the loaded model is independent and trainable
    for p in loaded.parameters():
        assert not np.shares_memory(p.data, model.parameters()[0].data)
    loaded.fit(x, np.zeros(5, np.int64), epochs=1, batch_size=5, progress=False)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], sd_a["0.weight"])


def test_file_is_written_at_exactly_the_given_path(tmp_path):
    model = S.Sequential(S.Linear(4, 3, seed=1), S.ReLU(), S.Linear(3, 2, bias=False, seed=2))
    for name in ("model.bin", "no_extension", "weights.swiftcnn", "dir with space/m.npz"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        model.save(str(path))
        assert path.is_file(), name
        assert not pathlib.Path(str(path) + ".npz").exists()
        loaded = S.load(str(path))
        assert describe(loaded) == describe(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir with space", "model.bin", "no_extension",
                                                          "weights.swiftcnn"]
    # pathlib paths work too, and saving again overwrites
    p = tmp_path / "model.bin"
    model[0].weight.data[...] = 0.25
    model.save(p)
    np.testing.assert_array_equal(S.load(p)[0].weight.data, np.full((3, 4), 0.25, np.float32))
    leftovers = [q.name for q in tmp_path.iterdir() if q.name not in {"dir with space", "model.bin", "no_extension",
                                                                       "weights.swiftcnn"}]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_saved_file_is_a_plain_npz_with_a_format_version(tmp_path):
    path = tmp_path / "m.npz"
    lecture().save(path)
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as z:  # loadable without pickle: no object arrays inside
        keys = list(z.keys())
        for k in keys:
            assert z[k].dtype != object
    assert any("version" in k.lower() for k in keys), keys
    for k in ["0.weight", "0.bias", "11.weight", "11.bias"]:
        assert any(k in key for key in keys), (k, keys)


def test_settings_survive_the_round_trip(tmp_path, rng):
    model = S.Sequential(S.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False,
                                  dtype="float64", seed=1), S.ReLU(), S.AvgPool2d(3, 1, 1),
                         S.MaxPool2d((2, 1), (1, 1), (1, 0)),
                         S.Sequential(S.Flatten(), S.Linear(3 * 7 * 7, 4, dtype="float64", seed=2)), S.Sigmoid())
    x = rng.standard_normal((2, 2, 11, 9))
    y = model(x)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = S.load(path)
    assert describe(loaded) == describe(model)
    assert loaded[0].bias is None
    assert list(loaded.state_dict()) == ["0.weight", "4.1.weight", "4.1.bias"]
    np.testing.assert_array_equal(loaded(x), y)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        S.load(str(tmp_path / "nope.npz"))
    with pytest.raises(FileNotFoundError):
        S.load(tmp_path / "nope")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    lecture().save(path)
    return path


def _rewrite(src, dst, transform):
    """Copy an npz, letting transform(dict of arrays) change the entries."""
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.keys()}
    d = transform(d)
    with open(dst, "wb") as f:
        np.savez(f, **d)
    return dst


def test_truncated_and_corrupted_files_raise_value_error(saved, tmp_path):
    data = saved.read_bytes()
    for i, blob in enumerate([data[: len(data) // 2], data[:100], data[:-30], b"", b"\x00" * 1000,
                              os.urandom(2000), b"PK\x03\x04" + os.urandom(500),
                              data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:]]):
        bad = tmp_path / f"bad{i}.npz"
        bad.write_bytes(blob)
        with pytest.raises(ValueError):
            S.load(bad)


def test_foreign_npz_files_raise_value_error(saved, tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3), b=np.ones((2, 2)))
    with pytest.raises(ValueError):
        S.load(foreign)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(10))
    with pytest.raises(ValueError):
        S.load(plain)
    text = tmp_path / "text.npz"
    text.write_text("hello, not a model")
    with pytest.raises(ValueError):
        S.load(text)
    # a torch-style state dict saved as npz (weights, but no architecture)
    sd = tmp_path / "sd.npz"
    np.savez(sd, **lecture().state_dict())
    with pytest.raises(ValueError):
        S.load(sd)


def test_damaged_entries_raise_value_error(saved, tmp_path):
    with np.load(saved, allow_pickle=False) as z:
        keys = list(z.keys())
    version_key = next(k for k in keys if "version" in k.lower())
    arch_keys = [k for k in keys if "arch" in k.lower()]

    def wrong_shape(d):
        d["7.weight"] = np.zeros((120, 399), np.float32)
        return d

    def missing_weight(d):
        del d["3.bias"]
        return d

    def extra_weight(d):
        d["12.weight"] = np.zeros((3, 3), np.float32)
        return d

    def future_version(d):
        d[version_key] = np.array(999)
        return d

    def no_version(d):
        del d[version_key]
        return d

    transforms = [wrong_shape, missing_weight, extra_weight, future_version, no_version]
    if arch_keys:
        def garbage_arch(d):
            d[arch_keys[0]] = np.array("{this is not json")
            return d

        def unknown_layer(d):
            d[arch_keys[0]] = np.array(str(d[arch_keys[0]]).replace("Sigmoid", "Softplus"))
            return d

        def arch_number(d):
            d[arch_keys[0]] = np.array(3.5)
            return d
        transforms += [garbage_arch, unknown_layer, arch_number]
    for t in transforms:
        bad = _rewrite(saved, tmp_path / f"{t.__name__}.npz", t)
        with pytest.raises(ValueError):
            S.load(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickled_files_are_rejected_and_never_executed(saved, tmp_path):
    _Evil.marker = str(tmp_path / "PWNED")
    # a bare pickle
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError):
        S.load(p)
    # an npz whose entries are object arrays (pickled inside the .npy members)
    with np.load(saved, allow_pickle=False) as z:
        d = {k: z[k] for k in z.keys()}
    for key in list(d)[:3] + ["0.weight"]:
        e = dict(d)
        e[key] = np.array([_Evil()], dtype=object)
        bad = tmp_path / f"evil_{key.replace('.', '_')}.npz"
        buf = io.BytesIO()
        np.savez(buf, **e)
        bad.write_bytes(buf.getvalue())
        with pytest.raises(ValueError):
            S.load(bad)
    # a pickled model object
    q = tmp_path / "model.pickle"
    q.write_bytes(pickle.dumps({"model": _Evil()}))
    with pytest.raises(ValueError):
        S.load(q)
    assert not os.path.exists(_Evil.marker), "load() executed code from a pickle"


def test_save_does_not_change_the_model(tmp_path, rng):
    model = lecture(S.ReLU, seed=4)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    grads = {p.name: p.grad.copy() for p in model.parameters()}
    model.save(tmp_path / "m.npz")
    for p in model.parameters():
        np.testing.assert_array_equal(p.grad, grads[p.name])
    assert model.backward(np.ones_like(y)).shape == x.shape  # forward state kept
