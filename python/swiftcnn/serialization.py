"""Saving and loading models: one ``.npz`` file holding the architecture and the weights.

File format (version 1), an ordinary NumPy ``.npz`` archive with no pickled objects:

- ``__format__``: the string ``"swiftcnn"``;
- ``__format_version__``: the integer 1;
- ``__architecture__``: a JSON string describing the module, e.g.
  ``{"type": "Sequential", "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 6,
  "kernel_size": [5, 5], "stride": [1, 1], "padding": [2, 2], "dilation": [1, 1], "bias": true,
  "dtype": "float32"}, {"type": "Sigmoid"}, ...]}``;
- then one array per parameter under its state-dict name (``"0.weight"``, ``"0.bias"``, ...).

``load`` never unpickles or executes anything: each member's .npy header is checked (no object
dtype, a declared size equal to the member's size, so a huge declared shape allocates nothing) and
its data are read with ``allow_pickle=False`` to the end, where the zip's CRC-32 is verified; the
architecture is plain JSON checked field by field against the known layer types, and every array's
name, dtype and shape is checked before any layer is built. Whatever is wrong with a file (zip
structure, CRC, .npy headers, JSON, names, shapes), ``load`` raises ``ValueError`` naming the file;
python/tests/test_model_file_mutations.py and scripts/fuzz_model_files.py hold it to that.
"""
import json
import math
import numbers
import os
import secrets
import zipfile

import numpy as np

from . import layers as _layers

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_NAME = "swiftcnn"
FORMAT_VERSION = 1
_META_KEYS = ("__format__", "__format_version__", "__architecture__")
_MAX_NESTING = 64
_NPY_MAGIC = b"\x93NUMPY"
_MAX_DEFLATE_RATIO = 1032  # the most a deflate stream can expand (258-byte matches from 2 bits)

# Layer type -> its settings in the architecture JSON (all required, no others allowed). Settings are
# checked here for type and by the layer constructors for value.
_LAYER_FIELDS = {
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "bias", "dtype"),
    "Linear": ("in_features", "out_features", "bias", "dtype"),
    "MaxPool2d": ("kernel_size", "stride", "padding"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "Sigmoid": (),
    "ReLU": (),
    "Flatten": (),
    "Tanh": (),
    "LeakyReLU": ("negative_slope",),
    "AdaptiveAvgPool2d": ("output_size",),
    "Dropout": ("p",),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats", "dtype"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats", "dtype"),
    "Sequential": ("layers",),
    "Residual": ("layers",),
}
_CONTAINERS = ("Sequential", "Residual")
_REAL_FIELDS = {"negative_slope", "p", "eps"}
_BOOL_FIELDS = {"bias", "affine", "track_running_stats"}
_PAIR_FIELDS = {"kernel_size", "stride", "padding", "dilation", "output_size"}
_INT_FIELDS = {"in_channels", "out_channels", "in_features", "out_features", "num_features", "groups"}


def save(module, path):
    """Write ``module`` (a ``Sequential`` or a single layer) to ``path`` as one ``.npz`` file.

    The file is written at exactly ``path`` (no extension is added), atomically: into a temporary
    file in the same directory, flushed to disk, then renamed over ``path``.
    """
    if not isinstance(module, _layers.Module):
        raise TypeError(f"save: module must be a swiftcnn layer or Sequential, got "
                        f"{type(module).__name__}")
    path = _check_path(path, "save")
    spec = module._spec()
    try:
        _check_spec(spec, "the module", 0)  # what load will accept
    except ValueError as error:
        raise TypeError(f"save: cannot save a {type(module).__name__}: {error}") from None
    arrays = {
        "__format__": np.array(FORMAT_NAME),
        "__format_version__": np.array(FORMAT_VERSION, dtype=np.int64),
        "__architecture__": np.array(json.dumps(spec)),
    }
    arrays.update(module.state_dict())
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable where the platform allows it (POSIX)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _check_path(path, owner):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError(f"{owner}: path is empty")
    return path


def load(path):
    """Rebuild the model saved by ``save`` at ``path``, with its dtype and weights.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a swiftcnn model (damaged, truncated, foreign, pickled, from a
            newer format version, or its arrays do not match its architecture); the message says
            what is wrong.
    """
    path = _check_path(path, "load")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"load: {path!r} is a directory, not a model file")
    problem = f"load: {path!r} is not a valid swiftcnn model file"
    if not os.path.isfile(path):
        raise ValueError(f"{problem}: it is not a regular file")
    try:
        arrays = _read_archive(path)
    except (FileNotFoundError, PermissionError, MemoryError):
        raise  # the file vanished, is unreadable, or the machine is out of memory: not damage
    except Exception as error:  # zipfile.BadZipFile (CRC, headers), EOFError, zlib.error, bad .npy
        # headers (ValueError, SyntaxError), UnicodeDecodeError of member names, RuntimeError
        # (an encrypted member), NotImplementedError...: every way a damaged file fails.
        if type(error) is ValueError:  # raised by _read_archive or numpy's .npy header checks
            reason = str(error)
        else:
            reason = f"it is damaged ({type(error).__name__}: {error})"
        raise ValueError(f"{problem}: {reason}") from None
    try:
        spec = _read_header(arrays)
        expected = _expected_parameters(spec, "", 0)
        _check_arrays(arrays, expected)
        module = _build(spec)
        module.load_state_dict({name: arrays[name] for name in expected})
    except RecursionError:
        raise ValueError(f"{problem}: the architecture is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{problem}: {error}") from None
    return module


def _read_archive(path):
    """``{name: ndarray}`` of every member of the .npz at ``path``, never unpickling anything.

    The zip is read with ``zipfile`` and each member's .npy header is checked before its data are:
    no object (pickled) dtype, a shape of non-negative integers, and a declared data size (shape x
    item size, in exact integers) equal to the member's size in the archive. So a header declaring a
    huge or overflowing shape is refused without allocating, and a member with missing or extra
    bytes is refused instead of being read short. The data are then read with
    ``np.lib.format.read_array(..., allow_pickle=False)`` to the member's end, where zipfile checks
    its CRC-32: a flipped bit anywhere in a member's header or data is detected.
    """
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if handle.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ValueError("it holds a single .npy array, not an .npz archive")
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as error:
            raise ValueError(f"it is not an .npz (zip) archive ({error})") from None
        except OSError as error:  # e.g. EINVAL: a seek to a negative offset read from the file
            raise ValueError(f"its zip directory is damaged ({error})") from None
        with archive:
            infos = archive.infolist()
            arrays = {}
            for info in infos:
                name = info.filename
                if info.is_dir() or not name.endswith(".npy"):
                    raise ValueError(f"its entry {name!r} is not a .npy array")
                key = name[:-len(".npy")]
                if key in arrays:
                    raise ValueError(f"its entry {name!r} appears more than once")
                arrays[key] = _read_member(archive, info, key, file_size)
    return arrays


def _read_member(archive, info, key, file_size):
    """One member's array, after checking its compression, sizes and .npy header (see above)."""
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise ValueError(f"its entry {key!r} is stored with two different sizes "
                             f"({info.compress_size} and {info.file_size} bytes)")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        # Deflate expands at most ~1032:1; anything more declared is a damaged (or hostile) entry.
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise ValueError(f"its entry {key!r} declares {info.file_size} bytes from "
                             f"{info.compress_size} compressed bytes")
    else:
        raise ValueError(f"its entry {key!r} uses an unsupported compression method "
                         f"({info.compress_type})")
    if info.compress_size > file_size:
        raise ValueError(f"its entry {key!r} declares {info.compress_size} bytes, more than the "
                         f"whole file ({file_size} bytes)")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"its entry {key!r} has .npy format version {version}, not 1.0 or 2.0")
        if dtype.hasobject:
            raise ValueError(f"its entry {key!r} holds Python objects (a pickled object array), "
                             f"which load never unpickles")
        if any(not isinstance(size, int) or size < 0 for size in shape):
            raise ValueError(f"its entry {key!r} declares the invalid shape {shape}")
        declared = math.prod(shape) * dtype.itemsize  # exact: Python integers do not overflow
        held = info.file_size - member.tell()
        if declared != held:
            raise ValueError(f"its entry {key!r} declares shape {shape} of {dtype} ({declared} "
                             f"bytes) but holds {held} bytes of data")
        member.seek(0)
        array = np.lib.format.read_array(member, allow_pickle=False)
        if member.read(1):  # also reaches the end, where zipfile checks the CRC-32
            raise ValueError(f"its entry {key!r} has data after its array")
    if not isinstance(array, np.ndarray):
        raise ValueError(f"its entry {key!r} is not a NumPy array")
    return array


def _read_header(arrays):
    """Check the format name and version; return the parsed architecture."""
    for key in _META_KEYS:
        if key not in arrays:
            raise ValueError(f"it has no {key!r} entry (not written by swiftcnn.save)")
    name = arrays["__format__"]
    if name.dtype.kind != "U" or name.shape != () or str(name) != FORMAT_NAME:
        raise ValueError("its '__format__' entry is not 'swiftcnn'")
    version = arrays["__format_version__"]
    if version.dtype.kind not in "iu" or version.shape != ():
        raise ValueError("its '__format_version__' entry is not an integer")
    if int(version) != FORMAT_VERSION:
        newer = " (written by a newer swiftcnn)" if int(version) > FORMAT_VERSION else ""
        raise ValueError(f"it has format version {int(version)}{newer}; this swiftcnn reads "
                         f"version {FORMAT_VERSION}")
    text = arrays["__architecture__"]
    if text.dtype.kind != "U" or text.shape != ():
        raise ValueError("its '__architecture__' entry is not a string")
    try:
        spec = json.loads(str(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"its architecture is not valid JSON ({error})") from None
    _check_spec(spec, "architecture", 0)
    return spec


def _check_spec(spec, where, depth):
    """Validate one layer description's structure and field types (values: the constructors)."""
    if depth > _MAX_NESTING:
        raise ValueError(f"the architecture nests Sequentials more than {_MAX_NESTING} deep")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{where} is not a layer description (a JSON object with a 'type')")
    kind = spec["type"]
    if kind not in _LAYER_FIELDS:
        raise ValueError(f"{where} has unknown layer type {kind!r}")
    if kind == "Conv2d" and "groups" not in spec:
        spec["groups"] = 1  # files written before groups existed
    required = _LAYER_FIELDS[kind]
    fields = set(spec) - {"type"}
    missing = [key for key in required if key not in fields]
    unknown = sorted(fields - set(required))
    if missing or unknown:
        raise ValueError(f"{where} ({kind}) has missing fields {missing} or unknown fields {unknown}")
    for key in fields:
        value = spec[key]
        if key in _INT_FIELDS and not _is_json_int(value):
            raise ValueError(f"{where} ({kind}): {key} must be an integer, got {value!r}")
        if key == "padding" and value in ("same", "valid"):
            continue
        if key in _PAIR_FIELDS and not (isinstance(value, list) and len(value) == 2
                                        and all(_is_json_int(v) for v in value)):
            raise ValueError(f"{where} ({kind}): {key} must be a pair of integers, got {value!r}")
        if key in _BOOL_FIELDS and not isinstance(value, bool):
            raise ValueError(f"{where} ({kind}): {key} must be true or false, got {value!r}")
        if key in _REAL_FIELDS and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"{where} ({kind}): {key} must be a number, got {value!r}")
        if key == "momentum" and value is not None and (isinstance(value, bool)
                                                          or not isinstance(value, numbers.Real)):
            raise ValueError(f"{where} ({kind}): momentum must be a number or null, got {value!r}")
        if key == "dtype" and value not in ("float32", "float64"):
            raise ValueError(f"{where} ({kind}): dtype must be 'float32' or 'float64', got {value!r}")
    if kind in _CONTAINERS:
        if not isinstance(spec["layers"], list):
            raise ValueError(f"{where} ({kind}): layers must be a list")
        for index, child in enumerate(spec["layers"]):
            _check_spec(child, f"{where} layer {index}", depth + 1)


def _is_json_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _expected_parameters(spec, prefix, depth):
    """``{state-dict name: (shape, dtype name)}`` the architecture implies, without building it."""
    kind = spec["type"]
    if kind in _CONTAINERS:
        expected = {}
        for index, child in enumerate(spec["layers"]):
            expected.update(_expected_parameters(child, f"{prefix}{index}.", depth + 1))
        return expected
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        c = spec["num_features"]
        if c < 1:
            raise ValueError(f"layer {prefix.rstrip('.') or kind} has num_features < 1: {c}")
        shapes = {}
        if spec["affine"]:
            shapes.update({f"{prefix}weight": ((c,), spec["dtype"]), f"{prefix}bias": ((c,), spec["dtype"])})
        if spec["track_running_stats"]:
            shapes.update({f"{prefix}running_mean": ((c,), spec["dtype"]),
                           f"{prefix}running_var": ((c,), spec["dtype"]),
                           f"{prefix}num_batches_tracked": ((), "int64")})
        return shapes
    if kind == "Conv2d":
        if spec["groups"] < 1 or spec["in_channels"] % spec["groups"]:
            raise ValueError(f"layer {prefix.rstrip('.') or kind} has groups {spec['groups']} that do not "
                             f"divide in_channels {spec['in_channels']}")
        weight = (spec["out_channels"], spec["in_channels"] // spec["groups"], *spec["kernel_size"])
        out = spec["out_channels"]
    elif kind == "Linear":
        weight = (spec["out_features"], spec["in_features"])
        out = spec["out_features"]
    else:
        return {}
    if min(weight) < 1:
        raise ValueError(f"layer {prefix.rstrip('.') or kind} has a size < 1: {weight}")
    shapes = {f"{prefix}weight": (tuple(weight), spec["dtype"])}
    if spec["bias"]:
        shapes[f"{prefix}bias"] = ((out,), spec["dtype"])
    return shapes


def _check_arrays(arrays, expected):
    """Every expected parameter present with its shape and a float dtype; nothing else present."""
    stored = [name for name in arrays if name not in _META_KEYS]
    unexpected = [name for name in stored if name not in expected]
    if unexpected:
        raise ValueError(f"it holds arrays the architecture has no place for: {unexpected}")
    for name, (shape, _dtype) in expected.items():
        if name not in arrays:
            raise ValueError(f"the weights {name!r} are missing")
        array = arrays[name]
        wanted = "iu" if _dtype == "int64" else "f"
        if array.dtype.kind not in wanted:
            raise ValueError(f"the weights {name!r} have dtype {array.dtype}, not "
                             f"{'an integer' if _dtype == 'int64' else 'a float'} dtype")
        if array.shape != shape:
            raise ValueError(f"the weights {name!r} have shape {array.shape} but the architecture "
                             f"needs {shape}")


def _build(spec):
    """Construct the module a checked spec describes (with a fixed seed: weights are loaded next)."""
    kind = spec["type"]
    settings = {key: value for key, value in spec.items() if key != "type"}
    for key in _PAIR_FIELDS & settings.keys():
        if not isinstance(settings[key], str):
            settings[key] = tuple(settings[key])
    if kind in _CONTAINERS:
        return getattr(_layers, kind)(*[_build(child) for child in spec["layers"]])
    if kind in ("Conv2d", "Linear", "Dropout"):
        settings["seed"] = 0  # do not consume the global generator: the weights are overwritten
    return getattr(_layers, kind)(**settings)


def rebuild(module, dtype=None):
    """A new module with ``module``'s architecture and weights, optionally in another ``dtype``.

    Used by ``gradcheck`` to run a float64 copy. The original is not modified.
    """
    spec = module._spec()
    if dtype is not None:
        spec = _with_dtype(spec, np.dtype(dtype).name)
    copy = _build(spec)
    copy.load_state_dict(module.state_dict())
    copy.train(module.training)
    _copy_modes(module, copy)
    return copy


def _copy_modes(module, copy):
    """Give every layer of ``copy`` the mode of its counterpart (modes may differ per layer)."""
    copy._training = module._training
    for child, copied in zip(module._children(), copy._children()):
        copied.train(child.training)
        _copy_modes(child, copied)


def _with_dtype(spec, dtype):
    spec = dict(spec)
    if "dtype" in spec:
        spec["dtype"] = dtype
    if spec["type"] in _CONTAINERS:
        spec["layers"] = [_with_dtype(child, dtype) for child in spec["layers"]]
    return spec
