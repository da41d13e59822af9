"""The first hour of a new operator, on a fresh virtualenv built from the wheel: the README's first command (init,
then the demo), status, doctor without and with keys, run with missing pieces, and Ctrl-C in a pseudo-terminal,
asserting on what the user sees.

Offline and quick: the wheel is built without build isolation (setuptools comes with `.[dev]`) and installed into
a new virtualenv without its dependencies, which it finds through a `.pth` line pointing at this environment's
site-packages (already installed, so no network); `pip check` then proves the wheel's declared dependencies are
satisfied, and the test proves `switchboard` is imported from the new virtualenv, not from the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pty_session import PtySession

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SWITCHBOARD_CONFIG", "SWITCHBOARD_DB", "SLACK_BOT_TOKEN",
           "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN", "PYTHONPATH")
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                     ".hypothesis", "*.db", "*.db-*", "benchmarks", "tests", "docs")
INSTALL = "pip install -e . && "
STEP_TIMEOUT = 120


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=STEP_TIMEOUT)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("first-hour")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                 str(root / "dist"), str(source)], root, dict(os.environ))
    assert built.returncode == 0, built.stderr
    [wheel] = (root / "dist").glob("switchboard-*.whl")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=STEP_TIMEOUT)
    [new_site] = env_dir.glob("lib/python*/site-packages")
    (new_site / "_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = str(env_dir / "bin" / "python"), "-m", "pip"
    installed = run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], root, dict(os.environ))
    assert installed.returncode == 0, installed.stderr
    checked = run([*pip, "check"], root, dict(os.environ))
    assert "switchboard" not in checked.stdout, checked.stdout  # every dependency the wheel declares is there
    yield env_dir


@pytest.fixture()
def user(venv: Path, tmp_path: Path) -> dict[str, str]:
    """A shell of a new user: the new virtualenv activated, in an empty folder, no secrets set."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), HOME=str(tmp_path))
    return env


def sb(args: list[str], folder: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run(["switchboard", *args], folder, env, stdin)


def readme_first_command() -> str:
    first_block = re.search(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)
    assert first_block is not None
    return first_block.group(1).strip()


def test_the_wheel_is_what_runs_and_carries_its_files(venv: Path, user: dict[str, str], tmp_path: Path):
    where = run(["python", "-c", "import switchboard, switchboard.data as d; print(switchboard.__file__); "
                 "print(d.read(d.SLACK_MANIFEST)[:40])"], tmp_path, user)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)), where.stdout  # not the checkout
    version = sb(["--version"], tmp_path, user)
    assert version.returncode == 0 and re.fullmatch(r"switchboard \d+\.\d+\.\d+\n", version.stdout)
    assert sb(["init", "--no-platform", "--manifest"], tmp_path, user).returncode == 0
    assert (tmp_path / "manifest.yml").read_text() == (REPO / "manifest.yml").read_text()
    [licence] = venv.glob("lib/python*/site-packages/switchboard-*.dist-info/licenses/LICENSE")
    assert licence.read_text().startswith("MIT License")


def test_the_first_hour(user: dict[str, str], tmp_path: Path):
    command = readme_first_command()
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && " + INSTALL)
    # the README's first command, after the install the fixture did from the wheel (no network here)
    first = run(["bash", "-c", command.split(INSTALL, 1)[1]], tmp_path, user,
                stdin="hello\nask the researcher and the critic about our launch\n")
    assert first.returncode == 0, first.stderr
    assert "wrote " in first.stdout and "Next steps" in first.stdout
    assert "- researcher: researcher: done with" in first.stdout and "- critic: critic: done with" in first.stdout
    assert "You said: hello\n\n" in first.stdout  # answers are separated by a blank line
    assert "asking researcher" in first.stderr and "Traceback" not in first.stderr
    assert (tmp_path / "switchboard.toml").is_file() and (tmp_path / ".env").is_file()

    status = sb(["status"], tmp_path, user)  # the bot's database: the demo kept to its own
    assert status.returncode == 0 and status.stdout.startswith("0 conversation(s) in switchboard.db")
    status = sb(["status"], tmp_path, {**user, "SWITCHBOARD_DB": "switchboard-demo.db"})
    assert status.returncode == 0 and "console:demo:default" in status.stdout and "idle" in status.stdout

    doctor = sb(["doctor"], tmp_path, user)
    assert doctor.returncode == 1 and "OPENAI_API_KEY is not set" in doctor.stdout

    run_now = sb(["run"], tmp_path, user)
    assert run_now.returncode == 2
    assert "no platform is enabled" in run_now.stderr and "OPENAI_API_KEY is not set" in run_now.stderr
    assert "Traceback" not in run_now.stderr

    emulator = subprocess.Popen(["switchboard", "emulator", "--port", "0"], cwd=tmp_path, env=user,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert emulator.stdout is not None
        base_url = emulator.stdout.readline().split()[-1]
        (tmp_path / ".env").write_text(f"OPENAI_API_KEY=sk-first-hour\nOPENAI_BASE_URL={base_url}\n")
        doctor = sb(["doctor"], tmp_path, user)
        assert doctor.returncode == 0, doctor.stdout
        assert "Everything checks out." in doctor.stdout and "sk-first-hour" not in doctor.stdout
        chat = sb(["chat", "--jsonl"], tmp_path, user, stdin="hi\n")
        assert chat.returncode == 0 and chat.stdout == '{"kind": "answer", "text": "You said: hi"}\n'
    finally:
        emulator.terminate()
        emulator.wait(timeout=STEP_TIMEOUT)

    with PtySession(["switchboard", "demo"], cwd=tmp_path, env=user) as term:
        term.expect("you> ")
        term.interrupt()
        assert term.wait() == 130
        assert "Traceback" not in term.output
