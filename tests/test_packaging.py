"The package installs, exposes its command and keeps its import cost low."
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_contains_modules_and_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = tmp_path.glob("musicml-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for mod in ("musicml/core.py", "musicml/data/lastfm.py", "musicml/eval/evaluator.py", "musicml/models/baselines.py", "musicml/cli.py"):
        assert mod in names, mod
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "musicml = musicml.cli:main" in zipfile.ZipFile(whl).read(ep).decode()
    assert not any(n.startswith(("nbs/", "tests/")) for n in names)


def test_data_layer_does_not_import_torch():
    code = "import sys, musicml.data.lastfm, musicml.data.splits, musicml.eval.evaluator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_version_matches_metadata():
    from importlib.metadata import version

    import musicml
    assert musicml.__version__ == version("musicml")
