"The papermill reports run end to end with small settings and write their JSON and plots."
import json

import papermill as pm
import pytest
from conftest import ROOT


@pytest.mark.slow
def test_model_quality_report(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/model_quality.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(models="pop,itemknn", grid="default", output_dir=str(tmp_path)),
                        kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "model_quality.json").read_text())
    assert set(res["models"]) == {"pop", "itemknn"}
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
    assert (tmp_path / "validation_search.png").exists()
