"""`import swiftcnn`, layers, training, save and load need only NumPy (API.md "Package").

Runs in a child interpreter where a sys.meta_path finder makes torch, matplotlib, tqdm (and scipy,
pandas) unimportable, as on a machine where they are not installed."""
import json

BLOCKER = r"""
import sys
BLOCKED = ("torch", "matplotlib", "tqdm", "scipy", "pandas", "PIL")
attempts = []
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_numpy_only)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
for m in list(sys.modules):
    if m.split(".")[0] in BLOCKED:
        del sys.modules[m]
"""


def test_import_build_train_save_load_with_numpy_only(run_python, tmp_path):
    path = tmp_path / "model.npz"
    res = run_python(BLOCKER + f"""
import json, io, contextlib
import numpy as np
import swiftcnn as S
assert isinstance(S.__version__, str) and S.__version__
r = np.random.default_rng(0)
S.manual_seed(0)
model = S.Sequential(S.Conv2d(1, 6, 5, padding=2), S.Sigmoid(), S.MaxPool2d(2), S.Conv2d(6, 16, 5), S.Sigmoid(),
                     S.MaxPool2d(2), S.Flatten(), S.Linear(400, 120), S.Sigmoid(), S.Linear(120, 84), S.Sigmoid(),
                     S.Linear(84, 10))
x = r.standard_normal((8, 1, 28, 28)).astype(np.float32)
y = r.integers(0, 10, 8)
opt = S.optim.SGD(model.parameters(), lr=0.1)
before = model.state_dict()["0.weight"].copy()
opt.zero_grad(); loss, g = S.softmax_cross_entropy(model(x), y); model.backward(g); opt.step()
assert not np.array_equal(before, model.state_dict()["0.weight"])
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    hist = model.fit(x, y, epochs=2, batch_size=4, optimizer=S.optim.Adam(model.parameters()), progress=True)
assert len(hist.history["loss"]) == 2
report = S.gradcheck(S.Linear(3, 2, dtype="float64", seed=1), r.standard_normal((2, 3)))
assert report.passed
model.save({str(path)!r})
loaded = S.load({str(path)!r})
assert np.array_equal(loaded.predict(x), model.predict(x))
print("RESULT", json.dumps({{"blocked_attempts": sorted(set(attempts)),
                             "loaded_blocked": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
                             "progress_lines": len([l for l in buf.getvalue().splitlines() if l.strip()])}}))
""")
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    info = json.loads(line[len("RESULT "):])
    assert info["loaded_blocked"] == []
    assert info["progress_lines"] == 2  # without tqdm: one line per epoch


def test_viz_needs_matplotlib_but_the_package_does_not(run_python):
    res = run_python(BLOCKER + """
import swiftcnn
try:
    import swiftcnn.viz
except ImportError as e:
    print("VIZ_IMPORT_ERROR", "matplotlib" in str(e))
else:
    print("VIZ_IMPORTED_LAZILY")
import swiftcnn.datasets
print("OK")
""")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout
    # swiftcnn.viz without matplotlib either fails with an ImportError that says what is missing, or
    # imports and defers matplotlib to first use.
    assert "VIZ_IMPORT_ERROR True" in res.stdout or "VIZ_IMPORTED_LAZILY" in res.stdout, res.stdout
