import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    "The shared datasets folder ($MUSICML_DATA); tests that need real data skip without it (tests never download)."
    d = os.environ.get("MUSICML_DATA")
    if not d:
        pytest.skip("MUSICML_DATA is not set")
    return Path(d).resolve()


def run_cli(*args, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    "Run the installed `musicml` command in a subprocess."
    exe = Path(sys.executable).with_name("musicml")
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"musicml {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p
