"""Artifacts that run code: every exported file is checked against its manifest before it is opened; AOTInductor
packages and torch.export programs load only with trust_native; tampered, unlisted or unvouched files are refused."""
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from conftest import run_cli

from musicml.artifacts import ArtifactError, sha256_file
from musicml.optimize.core import tiny_ranker_task
from musicml.optimize.export import NativeCodeRefused, export_all, load_runner

NAME = "tiny-ranker"


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return tiny_ranker_task()


@pytest.fixture(scope="module")
def built(task, tmp_path_factory):
    "An export directory as `musicml optimize` / `export_all` writes it: .pt2, AOTInductor package, .onnx, manifest.json."
    d = tmp_path_factory.mktemp("exports")
    export_all(task, d, formats=("pt2", "aoti", "onnx"))
    return d


@pytest.fixture
def exports(built, tmp_path):
    "A private copy of the export directory, to tamper with."
    return shutil.copytree(built, tmp_path / "exports")


@pytest.fixture
def no_load(monkeypatch):
    "Make every runtime loader fail loudly: a refusal must come before the file is handed to any of them."
    def boom(*a, **k):
        raise AssertionError("a loader was reached for a file that should have been refused")
    import onnxruntime
    import torch._inductor
    monkeypatch.setattr(torch._inductor, "aoti_load_package", boom)
    monkeypatch.setattr(torch.export, "load", boom)
    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)


def _close(task, run):
    x = task.batch(task.eval_inputs, slice(0, 4))
    np.testing.assert_allclose(run(*x), task.module(*x).detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("file,fmt,what", [(f"{NAME}.aoti.pt2", "aoti", "an AOTInductor package"),
                                           (f"{NAME}.pt2", "pt2", "a torch.export program")])
def test_native_refused_without_trust_loads_with_trust(task, exports, file, fmt, what, monkeypatch):
    with monkeypatch.context() as m:   # refused before any loader runs
        m.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: pytest.fail("aoti_load_package reached"))
        m.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch.export.load reached"))
        with pytest.raises(NativeCodeRefused, match=rf"{file}: refused: {what}.*runs code.*--trust-native"):
            load_runner(exports / file)
    run = load_runner(exports / file, trust_native=True)
    assert run.format == fmt and run.input_names == ["users", "items", "dense"]
    _close(task, run)


def _flip_last_byte(p):
    raw = bytearray(p.read_bytes()); raw[-1] ^= 0xFF; p.write_bytes(bytes(raw))


def _plant_library(p):
    "Re-zip the package with a planted shared library, as someone swapping in their own code would."
    with zipfile.ZipFile(p) as src:
        items = [(i, src.read(i)) for i in src.infolist()]
    with zipfile.ZipFile(p, "w") as z:
        for info, data in items:
            z.writestr(info, data)
        z.writestr(f"{NAME}.aoti/data/aotinductor/model/evil.so", b"\x7fELF planted")


@pytest.mark.parametrize("tamper", [_flip_last_byte, _plant_library, lambda p: p.write_bytes(p.read_bytes() + b"\0")],
                         ids=["byte", "rezip", "append"])
@pytest.mark.parametrize("file", [f"{NAME}.aoti.pt2", f"{NAME}.pt2"])
def test_tampered_native_refused_even_with_trust(exports, file, tamper, no_load):
    tamper(exports / file)
    with pytest.raises(ArtifactError, match=rf"{file}: sha256 differs from manifest.json"):
        load_runner(exports / file, trust_native=True)
    with pytest.raises(ArtifactError, match=rf"{file}: sha256 differs"):   # without trust: the tampering is what is said
        load_runner(exports / file)


def test_onnx_is_data_but_still_checked(task, exports, no_load):
    _flip_last_byte(exports / f"{NAME}.onnx")
    with pytest.raises(ArtifactError, match=rf"{NAME}.onnx: sha256 differs from manifest.json"):
        load_runner(exports / f"{NAME}.onnx")


def test_onnx_loads_without_trust(task, exports):
    run = load_runner(exports / f"{NAME}.onnx", threads=1)
    assert run.format == "onnx"
    _close(task, run)


def test_sidecar_is_part_of_the_artifact(exports, no_load):
    side = exports / f"{NAME}.onnx.json"
    rep = json.loads(side.read_text()); rep["extra"]["inputs"][0]["dtype"] = "float32"; side.write_text(json.dumps(rep))
    with pytest.raises(ArtifactError, match=rf"{NAME}.onnx.json: sha256 differs"):
        load_runner(exports / f"{NAME}.onnx")


def test_unlisted_and_unmanifested_files_refused(exports, tmp_path, no_load):
    shutil.copy(exports / f"{NAME}.aoti.pt2", exports / "other.aoti.pt2")
    with pytest.raises(ArtifactError, match=r"other.aoti.pt2: not listed in .*manifest.json"):
        load_runner(exports / "other.aoti.pt2", trust_native=True)
    (tmp_path / "loose").mkdir()
    shutil.copy(exports / f"{NAME}.onnx", tmp_path / "loose" / "m.onnx")
    with pytest.raises(ArtifactError, match=r"m.onnx: no manifest.json beside it"):
        load_runner(tmp_path / "loose" / "m.onnx")


def test_pinned_digest_replaces_the_manifest(task, exports):
    p = exports / f"{NAME}.pt2"
    with pytest.raises(ArtifactError, match=rf"{NAME}.pt2: sha256 differs from the digest recorded"):
        load_runner(p, sha256="0" * 64, trust_native=True)
    (exports / "manifest.json").unlink()
    _close(task, load_runner(p, sha256=sha256_file(p), trust_native=True))


def _bench(exports, tmp_path, *extra):
    return run_cli("bench", "inference", "--tiny", "ranker", "--target", "cpu", "--exports", exports,
                   "--out", tmp_path / "r.json", *extra, check=False)


@pytest.mark.slow
def test_cli_refuses_native_without_flag_and_tampered_with_it(exports, tmp_path):
    p = _bench(exports, tmp_path)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and f"{NAME}.aoti.pt2: refused: an AOTInductor package" in err[0] and "--trust-native" in err[0]
    assert not (tmp_path / "r.json").exists()
    _flip_last_byte(exports / f"{NAME}.onnx")
    p = _bench(exports, tmp_path, "--trust-native")
    assert p.returncode == 2 and f"{NAME}.onnx: sha256 differs from manifest.json" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_benchmarks_trusted_exports(exports, tmp_path):
    p = _bench(exports, tmp_path, "--trust-native", "--iterations", "20", "--batch-sizes", "1",
               "--variants", f"cpu-file-{NAME}.aoti.pt2,cpu-file-{NAME}.onnx")
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["exports"] == str(exports)
    for v in (f"cpu-file-{NAME}.aoti.pt2", f"cpu-file-{NAME}.onnx"):
        assert res["variants"][v]["status"] == "ok", res["variants"][v]
        assert res["variants"][v]["max_abs_err"] < 1e-4   # the CLI's tiny ranker is the one exported here (seeded)
