"""docker/Dockerfile `serve` target: port, health check on /health, listening on all interfaces; the
docker/README.md command. (Images are not built here: no Docker daemon.)"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve_stage() -> list[str]:
    """The serve stage's instructions, continuation lines joined."""
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    stage = re.split(r"^FROM\s+base\s+AS\s+serve\s*$", text, flags=re.M | re.I)[1]
    stage = re.split(r"^FROM\s", stage, flags=re.M)[0]
    return [line.strip() for line in stage.splitlines() if line.strip() and not line.startswith("#")]


def test_serve_stage():
    lines = serve_stage()
    assert "EXPOSE 8000" in lines
    assert "ENV TRT_MINITRON_SERVE_HOST=0.0.0.0" in lines  # `serve --host` default: reachable through -p
    check = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "http://127.0.0.1:8000/health" in check and "--start-period=" in check
    assert 'ENTRYPOINT ["trt-minitron"]' in lines


def test_healthcheck_command_fails_without_a_server():
    check = next(line for line in serve_stage() if line.startswith("HEALTHCHECK"))
    code = re.search(r'"-c", "(.*)"\]', check)[1].replace("8000", "1")  # port 1: nothing listens
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0


def test_readme_shows_the_run_command():
    text = (ROOT / "docker" / "README.md").read_text()
    assert re.search(r"docker build -f docker/Dockerfile --target serve\s+-t trt-minitron:serve \.", text)
    assert re.search(r"docker run --gpus all -p 8000:8000 .*trt-minitron:serve serve /engines/\S+", text)


def test_host_default_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    from test_serve_launch import make_engine

    from trt_minitron.cli import main

    monkeypatch.setenv("TRT_MINITRON_SERVE_HOST", "0.0.0.0")
    assert main(["serve", str(make_engine(tmp_path / "e", tp=1)), "--dry-run"]) == 0
    assert "--host 0.0.0.0 --port 8000" in capsys.readouterr().out
