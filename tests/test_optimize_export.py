"Exports of tiny inference tasks: each artifact reproduces eager in its runtime; int8 quality guards; clear errors."
import json

import numpy as np
import pytest
import torch

from musicml.optimize.core import artifact_task, tiny_ranker_task, tiny_sasrec_task
from musicml.optimize.export import (
    ExportError,
    export_aoti,
    export_executorch,
    export_onnx,
    export_pt2,
    load_runner,
    quantize_onnx,
)
from musicml.optimize.quantize import dynamic_int8, quantize_embeddings, static_int8


@pytest.fixture(scope="module")
def sas():
    torch.set_num_threads(1)
    return tiny_sasrec_task(layers=1, steps=80)


@pytest.fixture(scope="module")
def rk():
    return tiny_ranker_task()


def _check(task, rep, fmt, atol=1e-4):
    assert rep.format == fmt and rep.size_bytes > 0 and len(rep.sha256) == 64
    assert rep.max_abs_err <= atol
    run = load_runner(rep.path, threads=1, trust_native=True)   # exported just before, by this test
    x = task.batch(task.eval_inputs, slice(0, 5))
    np.testing.assert_allclose(run(*x), task.module(*x).detach().numpy(), atol=atol)
    return run


def test_pt2_and_onnx_two_shapes(sas, rk, tmp_path):
    r = export_pt2(sas, path=tmp_path / "s.pt2")
    assert r.extra["shapes"] == [[[1, 12]], [[3, 8]]]
    _check(sas, r, "pt2")
    r = export_onnx(rk, path=tmp_path / "r.onnx")
    assert r.extra["shapes"] == [[[1], [1, 20], [1, 20, 6]], [[3], [3, 13], [3, 13, 6]]]
    run = _check(rk, r, "onnx")
    x = rk.batch(rk.eval_inputs, slice(0, 4))
    short = (x[0], x[1][:, :7], x[2][:, :7])            # a third shape, never seen in export
    np.testing.assert_allclose(run(*short), rk.module(*short).detach().numpy(), atol=1e-4)
    assert json.loads((tmp_path / "r.onnx.json").read_text())["sha256"] == r.sha256


def test_onnx_int8_quality_guard(sas, tmp_path):
    r = export_onnx(sas, path=tmp_path / "s8.onnx", quantize="static")
    q = sas.quality(load_runner(r.path))
    assert q["top10_overlap"] >= 0.8 and q["ndcg@10"] >= 0.9 * sas.quality(sas.module)["ndcg@10"], q
    with pytest.raises(FileNotFoundError, match="nope.onnx: ONNX model not found"):
        quantize_onnx(tmp_path / "nope.onnx", tmp_path / "x.onnx")


def test_executorch_fp32_int8(rk, tmp_path):
    _check(rk, export_executorch(rk, path=tmp_path / "r.pte"), "pte")
    r = export_executorch(rk, path=tmp_path / "r8.pte", quantize=True)
    assert r.extra["quantized"] and r.extra["top10_overlap"] >= 0.8
    assert rk.quality(load_runner(r.path))["top10_overlap"] >= 0.8


def test_aoti(rk, tmp_path):
    _check(rk, export_aoti(rk, path=tmp_path / "r.aoti.pt2"), "aoti")


def test_quantized_quality_guard(sas, rk):
    base = sas.quality(sas.module)
    for m in (dynamic_int8(sas.module), quantize_embeddings(sas.module)):
        q = sas.quality(m)
        assert q["top10_overlap"] >= 0.8 and q["ndcg@10"] >= 0.9 * base["ndcg@10"], q
    q = rk.quality(static_int8(rk.module, rk.example_inputs, rk.calib))
    assert q["top10_overlap"] >= 0.8, q


def test_guard_can_fail(sas):
    "The export check rejects an artifact whose scores are those of another model."
    from musicml.optimize.export import _check_inputs, _compare
    other = tiny_sasrec_task(layers=1, steps=0, seed=1)
    checks = _check_inputs(sas.module, sas.example_inputs, sas.eval_inputs, ["tokens"], sas.dynamic_axes)
    with pytest.raises(ExportError, match="differs from eager"):
        _compare(sas.module, other.module, checks, atol=1e-4)
    with pytest.raises(ExportError, match="top-10 overlap"):
        _compare(sas.module, other.module, checks, atol=1e-4, quantized=True, min_overlap=0.8)


def test_bad_paths_and_shapes(rk, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pte: artifact not found"):
        load_runner(tmp_path / "missing.pte")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected one of \.pt2, \.onnx, \.pte"):
        load_runner(tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="config.json"):
        artifact_task(tmp_path / "no_model")
    run = load_runner(export_pt2(rk, path=tmp_path / "r.pt2").path, trust_native=True)
    u, it, de = rk.example_inputs
    with pytest.raises(ValueError, match=r"input 'dense' expected shape \['batch', 'cands', 6\] float32, got \[1, 20, 4\]"):
        run(u, it, de[..., :4])
    with pytest.raises(ValueError, match="expected 3 inputs"):
        run(u, it)
    with pytest.raises(ValueError, match="input 'users'"):
        run(u[:, None], it, de)
