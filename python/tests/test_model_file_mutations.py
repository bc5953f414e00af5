"""Damaged model files (API.md "save(path)"): seeded random mutations of files written by
``model.save`` must each give ``ValueError`` naming the file, or a model that loads with the original
architecture, parameter shapes and dtypes and runs. Never a crash, never another exception type
(``zipfile.BadZipFile``, ``KeyError``, ``EOFError``, ``UnicodeDecodeError``, JSON errors...), never an
unpickled object.

The mutations (``mutate``): bit flips, truncations, inserted and deleted bytes (positions biased
toward the zip and .npy headers, where a change is interesting), members swapped or reordered,
duplicated members, a member replaced by a pickled object array whose unpickling would create a
marker directory, rewritten .npy headers declaring huge, negative, overflowing or merely wrong
shapes and foreign dtypes, and foreign whole files (a pickle, a lone .npy).

The mutated files are written by this process; a CHILD interpreter loads them one by one
(``python test_model_file_mutations.py --child MANIFEST``) and reports each outcome, so a crash is
reported with the file that caused it (kept on disk) instead of killing pytest; the parent restarts
the child after the crashing case. ``scripts/fuzz_model_files.py N`` runs longer campaigns with the
same code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

HERE = os.path.abspath(__file__)
MARKER = "UNPICKLED_MARKER"  # the directory a pickled payload would create if it were ever unpickled
NPY_MAGIC = b"\x93NUMPY"


# ---- the models whose files are mutated -----------------------------------------------------------
def base_models():
    """``{name: (model, input shape)}``: small models covering every layer type, nesting, bias=False,
    both dtypes, tuple settings, and a single layer saved on its own."""
    import swiftcnn as S

    return {
        "nested32": (S.Sequential(S.Conv2d(1, 2, 3, padding=1, seed=1), S.ReLU(), S.MaxPool2d(2),
                                  S.Sequential(S.Flatten(), S.Linear(32, 5, seed=2)), S.Sigmoid(),
                                  S.Linear(5, 3, bias=False, seed=3)), (2, 1, 8, 8)),
        "tuple64": (S.Sequential(S.Conv2d(2, 3, (2, 3), stride=(1, 2), dilation=(2, 1), dtype="float64",
                                          seed=4), S.AvgPool2d(2), S.Flatten(),
                                 S.Linear(18, 4, dtype="float64", seed=5)), (1, 2, 9, 9)),
        "single64": (S.Conv2d(3, 4, 1, bias=False, dtype="float64", seed=6), (1, 3, 2, 2)),
    }


def fingerprint(model):
    """What must survive: the full architecture and every state-dict entry's shape and dtype."""
    return {"spec": model._spec(),
            "state": {k: [list(v.shape), v.dtype.name] for k, v in model.state_dict().items()}}


# ---- the structure of a saved file (where a mutation is interesting) -------------------------------
class Layout:
    """The members of a saved .npz and the byte ranges of its headers."""

    def __init__(self, data):
        self.data = data
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            self.members = [(info.filename, archive.read(info)) for info in infos]
            self.central_directory = (archive.start_dir, len(data))
        self.structural = [self.central_directory]
        for info in infos:
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
            body = start + 30 + name_len + extra_len
            header_len = struct.unpack("<H", data[body + 8:body + 10])[0]
            end = body + 10 + header_len
            if info.filename.startswith("__"):  # the format name, version and architecture: all of it
                end = body + info.compress_size
            self.structural.append((start, end))

    def position(self, rng):
        """A byte offset: half the time anywhere, half the time inside a header."""
        if rng.random() < 0.5:
            return int(rng.integers(0, len(self.data)))
        start, end = self.structural[int(rng.integers(0, len(self.structural)))]
        return int(rng.integers(start, max(start + 1, end)))


def zip_of(members):
    """A valid stored zip (correct CRCs) of ``[(name, bytes)]``; duplicate names allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: that is the point
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, payload in members:
                archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return buffer.getvalue()


def npy_header(descr, fortran_order, shape):
    """A .npy header exactly as numpy writes it, but with whatever descr and shape we like."""
    text = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran_order, tuple(shape))
    for version, length_format in (((1, 0), "<H"), ((2, 0), "<I")):
        prefix = len(NPY_MAGIC) + 2 + struct.calcsize(length_format)
        padding = -(prefix + len(text) + 1) % 64
        body = (text + " " * padding + "\n").encode("latin1")
        if len(body) < 2 ** (8 * struct.calcsize(length_format)):
            return NPY_MAGIC + bytes(version) + struct.pack(length_format, len(body)) + body
    raise AssertionError("header too long")


def split_npy(payload):
    """``(header dict, data bytes)`` of a version 1.0 .npy member written by numpy."""
    stream = io.BytesIO(payload)
    version = np.lib.format.read_magic(stream)
    assert version == (1, 0), version
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
            "shape": shape}, payload[stream.tell():]


class Evil:
    """Unpickling this creates ``path``: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def pickled_object_array(shape, marker):
    array = np.empty(shape, dtype=object)
    for index in np.ndindex(array.shape):
        array[index] = Evil(marker)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


HUGE_SHAPES = [(2 ** 40,), (2 ** 31, 2 ** 31), (2 ** 62, 2), (2 ** 63 - 1,), (2 ** 64,), (10 ** 30,),
               (2 ** 32, 2 ** 32, 3), (2 ** 63, 2), (-1,), (-4, -8), (0,), (), (1, 1, 1, 1, 1, 1, 1)]
FOREIGN_DESCRS = ["|O", "<f2", ">f4", ">f8", "<i4", "<i8", "|u1", "|b1", "<c8", "|V8", "|S4", "<U2",
                  "<U1000000000", "<M8[s]", [("a", "<f4")], [("a", "|O")]]


# ---- the mutations ---------------------------------------------------------------------------------
def mutate(data, layout, rng, marker):
    """``(kind, description, mutated bytes)``: one random mutation of the saved file ``data``."""
    kind = str(rng.choice(KINDS))
    members = list(layout.members)
    pick = int(rng.integers(0, len(members)))
    if kind == "bit_flips":
        out = bytearray(data)
        flips = []
        for _ in range(int(rng.integers(1, 5))):
            position, bit = layout.position(rng), int(rng.integers(0, 8))
            out[position] ^= 1 << bit
            flips.append((position, bit))
        return kind, f"flipped (byte, bit) {flips}", bytes(out)
    if kind == "truncation":
        length = int(rng.integers(0, len(data))) if rng.random() < 0.5 else layout.position(rng)
        return kind, f"cut to {length} of {len(data)} bytes", data[:length]
    if kind == "insertion":
        position, count = layout.position(rng), int(rng.integers(1, 65))
        inserted = rng.bytes(count) if rng.random() < 0.5 else data[position:position + count]
        return kind, f"{len(inserted)} bytes inserted at {position}", data[:position] + inserted + data[position:]
    if kind == "deletion":
        position, count = layout.position(rng), int(rng.integers(1, 65))
        return kind, f"{count} bytes deleted at {position}", data[:position] + data[position + count:]
    if kind == "swapped_members":
        other = int(rng.integers(0, len(members)))
        if rng.random() < 0.5:  # swap the contents, keep the names
            (a, pa), (b, pb) = members[pick], members[other]
            members[pick], members[other] = (a, pb), (b, pa)
            return kind, f"contents of {a!r} and {b!r} swapped", zip_of(members)
        order = [int(i) for i in rng.permutation(len(members))]  # reorder whole members
        return kind, f"members reordered {order}", zip_of([members[i] for i in order])
    if kind == "duplicated_member":
        name = members[pick][0]
        payload = members[int(rng.integers(0, len(members)))][1]
        members.insert(int(rng.integers(0, len(members) + 1)), (name, payload))
        return kind, f"a second {name!r} member", zip_of(members)
    if kind == "pickled_member":
        name, payload = members[pick]
        header, _ = split_npy(payload)
        shape = header["shape"] if rng.random() < 0.7 else ()
        members[pick] = (name, pickled_object_array(shape, marker))
        return kind, f"{name!r} replaced by a pickled object array of shape {shape}", zip_of(members)
    if kind == "npy_header":
        name, payload = members[pick]
        header, body = split_npy(payload)
        if rng.random() < 0.6:
            shape = HUGE_SHAPES[int(rng.integers(0, len(HUGE_SHAPES)))]
            if rng.random() < 0.3 and header["shape"]:  # one dimension of the real shape blown up
                shape = list(header["shape"])
                shape[int(rng.integers(0, len(shape)))] *= 2 ** int(rng.integers(1, 63))
            header["shape"] = tuple(shape)
        else:
            header["descr"] = FOREIGN_DESCRS[int(rng.integers(0, len(FOREIGN_DESCRS)))]
        if rng.random() < 0.2:
            header["fortran_order"] = not header["fortran_order"]
        members[pick] = (name, npy_header(header["descr"], header["fortran_order"], header["shape"]) + body)
        return kind, f"{name!r} header now {header}", zip_of(members)
    if kind == "foreign_file":
        if rng.random() < 0.5:
            return kind, "a pickle of an object whose unpickling creates the marker", pickle.dumps(Evil(marker))
        buffer = io.BytesIO()
        np.save(buffer, np.arange(6.0).reshape(2, 3))
        return kind, "a lone .npy file", buffer.getvalue()
    raise AssertionError(kind)


KINDS = ["bit_flips", "truncation", "insertion", "deletion", "swapped_members", "duplicated_member",
         "pickled_member", "npy_header", "foreign_file"]


# ---- the campaign (parent side) ------------------------------------------------------------------------
def write_cases(workdir, count, seed, first=0):
    """Save the base models, write ``count`` mutated files and a manifest; return the manifest path."""
    os.makedirs(workdir, exist_ok=True)
    bases = {}
    for name, (model, input_shape) in base_models().items():
        path = os.path.join(workdir, f"base-{name}.npz")
        model.save(path)
        with open(path, "rb") as handle:
            data = handle.read()
        out_shape = list(model.forward(np.zeros(input_shape, model.dtype)).shape)
        bases[name] = {"data": data, "layout": Layout(data), "fingerprint": fingerprint(model),
                       "input_shape": list(input_shape), "output_shape": out_shape,
                       "dtype": model.dtype.name}
    names = sorted(bases)
    marker = os.path.join(workdir, MARKER)
    cases = []
    for index in range(first, first + count):
        rng = np.random.default_rng([seed, index])  # every case reproducible on its own
        base = names[index % len(names)]
        kind, description, mutated = mutate(bases[base]["data"], bases[base]["layout"], rng, marker)
        path = os.path.join(workdir, f"case-{index:06d}.npz")
        with open(path, "wb") as handle:
            handle.write(mutated)
        cases.append({"index": index, "base": base, "kind": kind, "description": description,
                      "path": path})
    manifest = {"marker": marker, "cases": cases,
                "bases": {k: {key: v[key] for key in ("fingerprint", "input_shape", "output_shape", "dtype")}
                          for k, v in bases.items()}}
    manifest_path = os.path.join(workdir, "manifest.json")
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    return manifest_path


def run_cases(manifest_path, timeout=300):
    """Load every case in child interpreters, restarting after a crash. Returns
    ``(outcomes {index: "ValueError" | "loaded"}, problems [str], cases by index)``."""
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    cases = {case["index"]: case for case in manifest["cases"]}
    remaining = sorted(cases)
    outcomes, problems = {}, []
    while remaining:
        process = subprocess.run([sys.executable, HERE, "--child", manifest_path, str(remaining[0])],
                                 capture_output=True, text=True, timeout=timeout,
                                 env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        started = None
        for line in process.stdout.splitlines():
            if not line.startswith("@@"):
                continue
            tag, index, message = line[2:].split(" ", 2)
            index = int(index)
            if tag == "START":
                started = index
            elif tag == "OK":
                outcomes[index] = message
                started = None
            elif tag == "BAD":
                outcomes[index] = "bad"
                problems.append(f"case {index} ({cases[index]['kind']}: {cases[index]['description']}; "
                                f"file {cases[index]['path']}): {message}")
                started = None
        if process.returncode != 0 or started is not None:
            if started is None:
                problems.append(f"the child failed outside any case (exit {process.returncode}):\n"
                                f"{process.stderr[-3000:]}")
                break
            case = cases[started]
            problems.append(f"case {started} ({case['kind']}: {case['description']}) CRASHED the "
                            f"interpreter (exit {process.returncode}); file kept at {case['path']}\n"
                            f"{process.stderr[-2000:]}")
            outcomes[started] = "crash"
        remaining = [index for index in remaining if index not in outcomes]
        if len(problems) > 50:
            break
    if os.path.exists(manifest["marker"]):
        problems.append(f"a pickled payload was UNPICKLED: {manifest['marker']} exists")
    return outcomes, problems, cases


# ---- the child -------------------------------------------------------------------------------------------
def child(manifest_path, first):
    """Load every case from index ``first`` on, printing ``@@START i``, then ``@@OK i outcome`` or
    ``@@BAD i why`` (flushed, so the parent knows which case a crash hit)."""
    import swiftcnn

    with open(manifest_path) as handle:
        manifest = json.load(handle)
    for case in manifest["cases"]:
        if case["index"] < first:
            continue
        index, path = case["index"], case["path"]
        print(f"@@START {index} -", flush=True)
        base = manifest["bases"][case["base"]]
        verdict = None
        try:
            model = swiftcnn.load(path)
        except ValueError as error:
            outcome = "ValueError"
            if path not in str(error):
                verdict = f"ValueError without the file name: {error}"
        except BaseException as error:  # anything else is an escape
            outcome = None
            verdict = f"{type(error).__module__}.{type(error).__name__}: {error}"[:500]
        else:
            outcome = "loaded"
            if fingerprint(model) != base["fingerprint"]:
                verdict = f"loaded with another architecture: {fingerprint(model)}"
            else:
                y = model.forward(np.zeros(base["input_shape"], base["dtype"]))
                if list(y.shape) != base["output_shape"]:
                    verdict = f"output shape {y.shape}, not {base['output_shape']}"
        if os.path.exists(manifest["marker"]):
            verdict = "the pickled payload was unpickled"
        if verdict is None:
            os.unlink(path)
            print(f"@@OK {index} {outcome}", flush=True)
        else:
            print(f"@@BAD {index} {verdict!r}", flush=True)


# ---- the tests --------------------------------------------------------------------------------------------
def test_a_thousand_seeded_mutations_give_valueerror_or_the_original_model(tmp_path):
    manifest = write_cases(str(tmp_path), 1000, seed=20261204)
    outcomes, problems, cases = run_cases(manifest)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    assert sorted(outcomes) == sorted(cases)
    # The campaign really exercised both outcomes and every kind of mutation.
    kinds = {case["kind"] for case in cases.values()}
    assert kinds == set(KINDS), kinds
    counts = {outcome: list(outcomes.values()).count(outcome) for outcome in set(outcomes.values())}
    assert counts.get("ValueError", 0) >= 600, counts
    assert counts.get("loaded", 0) >= 20, counts


def _saved(tmp_path):
    import swiftcnn as S

    model = S.Sequential(S.Conv2d(1, 2, 3, seed=0), S.Flatten(), S.Linear(8, 2, seed=1))
    path = tmp_path / "model.npz"
    model.save(str(path))
    return model, path, Layout(path.read_bytes())


def _rewrite(path, members):
    path.write_bytes(zip_of(members))


def _load_in_child(run_python, path):
    """``(exception type name or "loaded", message)`` of swiftcnn.load(path) in a child."""
    result = run_python(f"""
        import json, swiftcnn
        try:
            swiftcnn.load({str(path)!r})
            print(json.dumps(["loaded", ""]))
        except BaseException as error:
            print(json.dumps([type(error).__name__, str(error)]))
    """)
    assert result.returncode == 0, result.stderr
    return tuple(json.loads(result.stdout.splitlines()[-1]))


def test_a_pickled_member_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    import swiftcnn

    model, path, layout = _saved(tmp_path)
    marker = str(tmp_path / MARKER)
    members = [(name, pickled_object_array((2, 1, 3, 3), marker) if name == "0.weight.npy" else payload)
               for name, payload in layout.members]
    _rewrite(path, members)
    unpickled = []
    real_load, real_loads = pickle.load, pickle.loads
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(a) or real_load(*a, **k))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a) or real_loads(*a, **k))
    with pytest.raises(ValueError, match="0.weight") as info:
        swiftcnn.load(str(path))
    assert str(path) in str(info.value)
    assert not unpickled, "pickle.load was called"
    assert not os.path.exists(marker)
    # A whole file that is a pickle: the same.
    path.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(ValueError, match="model.npz"):
        swiftcnn.load(str(path))
    assert not unpickled and not os.path.exists(marker)


def test_npy_members_are_read_with_allow_pickle_false(tmp_path, monkeypatch):
    # However the loader reads the members, every numpy reader it calls is told allow_pickle=False.
    import swiftcnn

    _, path, _ = _saved(tmp_path)
    calls = []
    for module, name in ((np, "load"), (np.lib.format, "read_array")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs.get("allow_pickle", "default")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    swiftcnn.load(str(path))
    assert calls, "the loader read no array through numpy"
    assert all(allow is False for _, allow in calls), calls


@pytest.mark.parametrize("damage", ["not_a_zip", "empty", "bad_crc", "missing_architecture",
                                    "architecture_not_json", "architecture_bad_code_point",
                                    "utf8_flagged_bad_name", "member_not_npy", "encrypted_flag",
                                    "unknown_compression", "huge_shape", "wrong_size",
                                    "duplicate", "trailing_bytes_in_member"])
def test_each_damage_gives_a_valueerror_naming_the_file(tmp_path, run_python, damage):
    # Each of these raised (or could raise) something else inside numpy or zipfile: BadZipFile,
    # KeyError, EOFError, UnicodeDecodeError, JSONDecodeError, NotImplementedError, RuntimeError.
    _, path, layout = _saved(tmp_path)
    members = dict(layout.members)
    data = path.read_bytes()
    if damage == "not_a_zip":
        path.write_bytes(b"hello, I am not a model\n")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "bad_crc":
        position = data.index("swiftcnn".encode("utf-32-le"))
        path.write_bytes(data[:position] + b"t" + data[position + 1:])
    elif damage == "missing_architecture":
        del members["__architecture__.npy"]
        _rewrite(path, members.items())
    elif damage in ("architecture_not_json", "architecture_bad_code_point"):
        buffer = io.BytesIO()
        if damage == "architecture_not_json":
            np.save(buffer, np.array('{"type": "Sequential", "layers": ['))
        else:  # a UCS4 code point above U+10FFFF
            text = np.array("{}")
            raw = bytearray(text.tobytes())
            raw[0:4] = struct.pack("<I", 0x110000)
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<U2", "fortran_order": False,
                                                          "shape": ()})
            buffer.write(bytes(raw))
        members["__architecture__.npy"] = buffer.getvalue()
        _rewrite(path, members.items())
    elif damage == "utf8_flagged_bad_name":
        name = b"0.weight.npy"
        raw = bytearray(data)
        for start in range(len(raw)):  # both the local header and the central directory entry
            if raw[start:start + len(name)] == name:
                raw[start] = 0xFF
        for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = raw.find(signature)
            while start >= 0:
                raw[start + flag_offset] |= 0x08  # general purpose bit 11 (0x800): UTF-8 names
                start = raw.find(signature, start + 1)
        path.write_bytes(bytes(raw))
    elif damage == "member_not_npy":
        members["notes.txt"] = b"hello"
        _rewrite(path, members.items())
    elif damage in ("encrypted_flag", "unknown_compression"):
        raw = bytearray(data)
        start = raw.find(b"PK\x01\x02")
        while start >= 0:
            if damage == "encrypted_flag":
                raw[start + 8] |= 0x01
            else:
                raw[start + 10:start + 12] = struct.pack("<H", 99)
            start = raw.find(b"PK\x01\x02", start + 1)
        path.write_bytes(bytes(raw))
    elif damage == "huge_shape":
        header, body = split_npy(members["0.weight.npy"])
        members["0.weight.npy"] = npy_header(header["descr"], False, (2 ** 62, 2 ** 62)) + body
        _rewrite(path, members.items())
    elif damage == "wrong_size":
        header, body = split_npy(members["0.weight.npy"])
        members["0.weight.npy"] = npy_header(header["descr"], False, (2, 1, 3, 3)) + body[:-4]
        _rewrite(path, members.items())
    elif damage == "duplicate":
        _rewrite(path, list(members.items()) + [("2.bias.npy", members["2.bias.npy"])])
    elif damage == "trailing_bytes_in_member":
        members["2.bias.npy"] += b"\0" * 8
        _rewrite(path, members.items())
    kind, message = _load_in_child(run_python, path)
    assert kind == "ValueError", (kind, message)
    assert str(path) in message


def test_the_loaded_model_of_an_undamaged_rewrite_is_the_original(tmp_path, run_python):
    # The mutation helpers themselves: a plain re-zip of the members is a valid file (so the
    # ValueErrors above come from the damage, not from zip_of).
    model, path, layout = _saved(tmp_path)
    _rewrite(path, layout.members)
    assert _load_in_child(run_python, path) == ("loaded", "")
    header, body = split_npy(dict(layout.members)["0.weight.npy"])
    assert npy_header(header["descr"], header["fortran_order"], header["shape"]) + body == \
        dict(layout.members)["0.weight.npy"]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    child(sys.argv[2], int(sys.argv[3]))
