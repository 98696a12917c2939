import asyncio
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


def offline_answers(version_dir, bodies) -> list[dict]:
    """What bundle `version_dir` alone answers to each `/v1/recommendations` body: the service in process (no experiment,
    no shadow, no micro-batching wait), one request at a time: the offline answer a live arm's answers are compared with."""
    import httpx

    from musicml.serve.app import Settings, create_app

    async def ask():
        app = create_app(Settings(models=str(version_dir), max_wait_ms=0, experiment=None, experiment_config=None))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
                for _ in range(600):
                    if (await c.get("/readyz")).status_code == 200: break
                    await asyncio.sleep(0.05)
                return [(await c.post("/v1/recommendations", json=b)).json() for b in bodies]
    return asyncio.run(ask())
