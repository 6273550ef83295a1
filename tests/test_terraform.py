"""Static checks of terraform/: the security properties docs/architecture.md promises for the cloud.

The configuration is parsed with python-hcl2 (no provider download, no cloud account), so
these tests hold the *written* configuration to: a private admin function, one public
endpoint, least-privilege IAM, secrets pinned and kept out of terraform, private buckets,
and functions sized for concurrent requests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

TERRAFORM_DIR = Path(__file__).resolve().parent.parent / "terraform"

PUBLIC_MEMBERS = {"allusers", "allauthenticatedusers"}

# Project-wide grants are the widest there are: each one allowed here is justified in iam.tf.
#   logging.logWriter: log entries are written to the project, there is no narrower resource.
#   storage.objectViewer: only with a condition confining it to the Cloud Functions staging
#     bucket, which the service creates on first deploy (so no bucket-level grant is possible).
PROJECT_ROLE_ALLOW_LIST = {"roles/logging.logWriter", "roles/storage.objectViewer"}
FORBIDDEN_ROLES = {
    "roles/owner",
    "roles/editor",
    "roles/storage.admin",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
    "roles/secretmanager.admin",
}
WRITE_ROLES = {
    "roles/storage.objectCreator",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
}


# --- loading -------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Return hcl2 output as plain Python: quotes stripped, parser bookkeeping dropped.

    python-hcl2 v7+ keeps string literals quoted ('"x"'), block labels quoted, and adds
    "__is_block__"/"__comments__" keys; older versions do none of that. Expressions stay
    as "${...}" text in both.
    """
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


class Config:
    """Every block of every .tf file in terraform/, merged."""

    def __init__(self, directory: Path) -> None:
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        for path in sorted(directory.glob("*.tf")):
            with path.open() as handle:
                parsed = _clean(hcl2.load(handle))
            for block in parsed.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources.setdefault(rtype, {})[name] = body
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(block)

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        """Return the resources of one type, by name."""
        return self.resources.get(rtype, {})

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        """Return one resource's body, failing clearly if it is missing."""
        assert name in self.of_type(rtype), f"{rtype}.{name} is not defined in terraform/"
        return self.of_type(rtype)[name]

    def all_resources(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield (type, name, body) of every resource."""
        for rtype, named in self.resources.items():
            for name, body in named.items():
                yield rtype, name, body

    def resolve(self, value: Any) -> Any:
        """Evaluate the simple expressions used for settings: var.X, local.X, tostring(...)."""
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\$\{(.*)\}", value.strip())
        if not match:
            return value
        expr = match.group(1).strip()
        if wrapped := re.fullmatch(r"tostring\((.*)\)", expr):
            return str(self.resolve("${" + wrapped.group(1) + "}"))
        if ref := re.fullmatch(r"var\.(\w+)", expr):
            variable = self.variables[ref.group(1)]
            assert "default" in variable, f"var.{ref.group(1)} has no default to check"
            return self.resolve(variable["default"])
        if ref := re.fullmatch(r"local\.(\w+)", expr):
            return self.resolve(self.locals[ref.group(1)])
        return value


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the single nested block `name` of a resource body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name!r} block"
    return blocks[0]


def _members(body: dict[str, Any]) -> list[str]:
    """Return the IAM members of an *_iam_member or *_iam_binding resource."""
    members = body.get("members", [])
    if "member" in body:
        members = [*members, body["member"]]
    return [str(member) for member in members]


def _is_iam(rtype: str) -> bool:
    """Return whether a resource type is an IAM grant."""
    return rtype.endswith(("_iam_member", "_iam_binding", "_iam_policy"))


@pytest.fixture(scope="module")
def tf() -> Config:
    """The parsed terraform configuration."""
    return Config(TERRAFORM_DIR)


# --- who may call what ---------------------------------------------------------------------


def test_admin_function_has_no_public_invoker(tf: Config) -> None:
    """No IAM grant on the admin function (or its Cloud Run service) names the public."""
    admin_grants = [
        (rtype, name, body)
        for rtype, name, body in tf.all_resources()
        if _is_iam(rtype) and "google_cloudfunctions2_function.admin" in repr(body)
    ]
    assert admin_grants, "the admin invoker binding was not found"
    for rtype, name, body in admin_grants:
        public = [m for m in _members(body) if m.lower() in PUBLIC_MEMBERS]
        assert not public, f"{rtype}.{name} makes the admin function public: {public}"
        assert body["member"] == "${each.value}"
    variable = tf.variables["admin_invoker_members"]
    assert variable["default"] == []
    # The member list comes from a variable: its validation must refuse the public too.
    assert "allusers" in repr(variable["validation"]).lower()
    assert "allauthenticatedusers" in repr(variable["validation"]).lower()


def test_chat_invoker_is_the_only_public_grant(tf: Config) -> None:
    """Exactly one resource mentions allUsers/allAuthenticatedUsers: the chat invoker."""
    public = [
        (rtype, name)
        for rtype, name, body in tf.all_resources()
        if any(marker in repr(body).lower() for marker in PUBLIC_MEMBERS)
    ]
    assert public == [("google_cloud_run_service_iam_member", "chat_public_invoker")]
    grant = tf.resource("google_cloud_run_service_iam_member", "chat_public_invoker")
    assert grant["role"] == "roles/run.invoker"
    assert grant["member"] == "allUsers"
    assert "google_cloudfunctions2_function.chat." in grant["service"]


# --- least privilege -----------------------------------------------------------------------


def test_project_level_roles_are_allow_listed(tf: Config) -> None:
    """Project-wide grants are additive, few, and never an admin or basic role."""
    assert not tf.of_type("google_project_iam_binding"), "authoritative project bindings"
    assert not tf.of_type("google_project_iam_policy"), "authoritative project policy"
    grants = tf.of_type("google_project_iam_member")
    assert grants, "the build account's log writer grant was not found"
    for name, body in grants.items():
        role = body["role"]
        assert role in PROJECT_ROLE_ALLOW_LIST, f"google_project_iam_member.{name} grants {role}"
        assert "google_service_account.build." in body["member"], f"{name}: only the build account"
        if role == "roles/storage.objectViewer":
            expression = _block(body, "condition")["expression"]
            assert "/buckets/gcf-v2-sources-" in expression, f"{name}: unconfined objectViewer"


def test_no_resource_grants_a_forbidden_role(tf: Config) -> None:
    """No IAM resource anywhere hands out owner, editor, storage.admin or impersonation."""
    for rtype, name, body in tf.all_resources():
        if _is_iam(rtype):
            assert body.get("role") not in FORBIDDEN_ROLES, f"{rtype}.{name} grants {body['role']}"


def test_bucket_writes_are_confined_by_conditions(tf: Config) -> None:
    """Each object-write grant on the snapshot bucket is confined to the objects its
    component writes; reads are bucket-wide viewer only."""
    expected = {
        "chat_writes_heartbeats": ["/control/instances/"],
        "chat_creates_events": ["/events/"],
        "admin_writes_control": ['/LATEST"', "/control/"],
        "indexer_creates_snapshots": ["/snapshots/"],
        "indexer_moves_latest": ['/LATEST"'],
    }
    writes = {
        name: body
        for name, body in tf.of_type("google_storage_bucket_iam_member").items()
        if body["role"] in WRITE_ROLES
    }
    assert set(writes) == set(expected)
    for name, body in writes.items():
        expression = _block(body, "condition")["expression"]
        assert "resource.name" in expression
        for fragment in expected[name]:
            assert fragment in expression, f"{name}: {fragment!r} not in {expression!r}"
    # Snapshots are immutable: the indexer may create them but not delete or replace them.
    assert writes["indexer_creates_snapshots"]["role"] == "roles/storage.objectCreator"
    # Event batches likewise: written once (if_generation_match=0), never replaced.
    assert writes["chat_creates_events"]["role"] == "roles/storage.objectCreator"
    for name, body in tf.of_type("google_storage_bucket_iam_member").items():
        assert body["role"] in WRITE_ROLES | {"roles/storage.objectViewer"}, name


def test_each_component_has_its_own_service_account(tf: Config) -> None:
    """chat, admin, indexer and build run as four different accounts."""
    assert set(tf.of_type("google_service_account")) == {"chat", "admin", "indexer", "build"}
    for function, account in (("chat", "chat"), ("admin", "admin")):
        body = tf.resource("google_cloudfunctions2_function", function)
        service = _block(body, "service_config")
        build = _block(body, "build_config")
        assert service["service_account_email"] == f"${{google_service_account.{account}.email}}"
        assert build["service_account"] == "${google_service_account.build.id}"


# --- secrets -------------------------------------------------------------------------------


def test_secret_values_never_enter_terraform(tf: Config) -> None:
    """Secrets are declared, but their versions are added outside terraform (not in state)."""
    assert set(tf.of_type("google_secret_manager_secret")) == {
        "gemini_api_key",
        "admin_token",
        "redis_url",
    }
    assert not tf.of_type("google_secret_manager_secret_version")


def test_secret_env_vars_are_pinned_versions(tf: Config) -> None:
    """GOOGLE_API_KEY and ADMIN_TOKEN come from Secret Manager at a pinned version number."""
    expected = {
        "chat": ("GOOGLE_API_KEY", "gemini_api_key"),
        "admin": ("ADMIN_TOKEN", "admin_token"),
    }
    for function, (key, secret) in expected.items():
        service = _block(tf.resource("google_cloudfunctions2_function", function), "service_config")
        (entry,) = service["secret_environment_variables"]
        assert entry["key"] == key
        assert entry["secret"] == f"${{google_secret_manager_secret.{secret}.secret_id}}"
        version = tf.resolve(entry["version"])
        assert version != "latest" and re.fullmatch(r"[1-9][0-9]*", version), version
        assert key not in repr(service.get("environment_variables")), f"{key} as plain env"


def test_each_secret_is_readable_by_exactly_its_function(tf: Config) -> None:
    """secretAccessor is granted per secret, to the one runtime account that reads it."""
    grants = {
        (body["secret_id"], body["member"])
        for body in tf.of_type("google_secret_manager_secret_iam_member").values()
        if body["role"] == "roles/secretmanager.secretAccessor"
    }
    assert grants == {
        (
            "${google_secret_manager_secret.gemini_api_key.secret_id}",
            "${google_service_account.chat.member}",
        ),
        (
            "${google_secret_manager_secret.admin_token.secret_id}",
            "${google_service_account.admin.member}",
        ),
        # REDIS_URL (enable_redis): chat for limits and cache, admin to clear at once.
        (
            "${google_secret_manager_secret.redis_url[0].secret_id}",
            "${google_service_account.chat.member}",
        ),
        (
            "${google_secret_manager_secret.redis_url[0].secret_id}",
            "${google_service_account.admin.member}",
        ),
    }
    for rtype, name, body in tf.all_resources():
        if rtype.startswith("google_project_iam"):
            assert "secretmanager" not in body.get("role", ""), f"{rtype}.{name}"


# --- shared state on Redis -----------------------------------------------------------------

REDIS_RESOURCES = {
    ("google_compute_network", "redis"),
    ("google_compute_firewall", "redis_deny_ingress"),
    ("google_vpc_access_connector", "redis"),
    ("google_redis_instance", "cache"),
    ("google_secret_manager_secret", "redis_url"),
    ("google_secret_manager_secret_iam_member", "chat_reads_redis_url"),
    ("google_secret_manager_secret_iam_member", "admin_reads_redis_url"),
}


def test_redis_is_off_by_default_and_every_part_of_it_follows_the_switch(tf: Config) -> None:
    """enable_redis=false (the default) creates nothing of it and sets no REDIS_* variable."""
    assert tf.resolve("${var.enable_redis}") is False
    for rtype, name in REDIS_RESOURCES:
        count = tf.resource(rtype, name).get("count")
        assert count == "${var.enable_redis ? 1 : 0}", f"{rtype}.{name}: count={count!r}"
    assert tf.locals["redis_settings"].startswith("${var.enable_redis ?")


def test_memorystore_has_auth_and_tls_and_a_private_network(tf: Config) -> None:
    """AUTH on, in-transit encryption with server authentication, on its own VPC."""
    redis = tf.resource("google_redis_instance", "cache")
    assert redis["auth_enabled"] is True
    assert redis["transit_encryption_mode"] == "SERVER_AUTHENTICATION"
    assert redis["authorized_network"] == "${google_compute_network.redis[0].id}"
    connector = tf.resource("google_vpc_access_connector", "redis")
    assert connector["network"] == "${google_compute_network.redis[0].name}"


def test_both_functions_reach_redis_through_the_connector_with_the_url_as_a_secret(
    tf: Config,
) -> None:
    """The connector carries private ranges only; REDIS_URL is a pinned secret version."""
    for function in ("chat", "admin"):
        service = _block(tf.resource("google_cloudfunctions2_function", function), "service_config")
        assert "google_vpc_access_connector.redis[0].id" in service["vpc_connector"]
        assert '"PRIVATE_RANGES_ONLY"' in service["vpc_connector_egress_settings"]
        (dynamic,) = service["dynamic"]
        content = _block(dynamic["secret_environment_variables"], "content")
        assert content["key"] == "REDIS_URL"
        assert content["secret"] == "${google_secret_manager_secret.redis_url[0].secret_id}"
        version = tf.resolve(content["version"])
        assert re.fullmatch(r"[1-9][0-9]*", version), version
        assert "REDIS_URL" not in repr(service.get("environment_variables"))


# --- storage -------------------------------------------------------------------------------


def test_buckets_are_private(tf: Config) -> None:
    """Every bucket has uniform bucket-level access and enforced public access prevention."""
    buckets = tf.of_type("google_storage_bucket")
    assert set(buckets) == {"snapshots", "sources"}
    for name, body in buckets.items():
        assert body["uniform_bucket_level_access"] is True, name
        assert body["public_access_prevention"] == "enforced", name


def test_snapshot_bucket_keeps_bounded_history(tf: Config) -> None:
    """Versioning is on, and noncurrent versions expire by age and by count."""
    body = tf.resource("google_storage_bucket", "snapshots")
    assert _block(body, "versioning")["enabled"] is True
    conditions = [_block(rule, "condition") for rule in body["lifecycle_rule"]]
    assert all(_block(rule, "action")["type"] == "Delete" for rule in body["lifecycle_rule"])
    unscoped = [c for c in conditions if "matches_prefix" not in c]
    assert any("days_since_noncurrent_time" in c for c in unscoped)
    assert any("num_newer_versions" in c for c in unscoped)
    assert body["force_destroy"] is False
    # Events hold visitors' questions: they expire after the retention period, and their
    # noncurrent versions (the bucket is versioned) do not outlive it by the general rule.
    events = [
        c for c in conditions if c.get("matches_prefix") == ["${var.snapshot_prefix}/events/"]
    ]
    assert [c["age"] for c in events if "age" in c] == ["${var.events_retention_days}"]
    assert [c["days_since_noncurrent_time"] for c in events if "age" not in c] == [1]


def test_insights_table_reads_the_events_prefix_with_the_reports_schema(tf: Config) -> None:
    """BigQuery's external table is an explicit schema over <prefix>/events/*, holding the
    fields the DuckDB report reads; only the listed readers get it, and only those files."""
    from chatbot.insights.query import COLUMNS

    table = tf.resource("google_bigquery_table", "events")
    external = _block(table, "external_data_configuration")
    assert external["source_format"] == "NEWLINE_DELIMITED_JSON" and external["autodetect"] is False
    assert [tf.resolve(uri) for uri in external["source_uris"]] == [
        "${local.snapshot_uri}/events/*"
    ]
    fields = {field["name"]: field for field in tf.locals["events_schema"]}
    assert set(COLUMNS) <= set(fields)
    assert [f["name"] for f in fields["sources"]["fields"]] == ["source", "score"]
    assert fields["sources"]["mode"] == "REPEATED"
    viewers = tf.resource("google_bigquery_dataset_iam_member", "insights_readers")
    assert viewers["role"] == "roles/bigquery.dataViewer"
    assert viewers["for_each"] == "${toset(var.insights_reader_members)}"
    files = tf.resource("google_storage_bucket_iam_member", "insights_readers_read_events")
    assert files["role"] == "roles/storage.objectViewer"
    assert "/events/" in _block(files, "condition")["expression"]
    assert tf.variables["insights_reader_members"]["default"] == []


def test_function_sources_are_content_addressed(tf: Config) -> None:
    """A changed zip gets a new object name, so terraform redeploys exactly when it changes."""
    for function in ("chat", "admin"):
        obj = tf.resource("google_storage_bucket_object", f"{function}_source")
        assert obj["name"].startswith(f"{function}-${{filemd5(")
        assert obj["bucket"] == "${google_storage_bucket.sources.name}"


# --- functions -----------------------------------------------------------------------------


def test_functions_run_python312_with_their_entry_points(tf: Config) -> None:
    """Both functions build with python312 from their own zip and entry point."""
    for function in ("chat", "admin"):
        build = _block(tf.resource("google_cloudfunctions2_function", function), "build_config")
        assert build["runtime"] == "python312"
        assert build["entry_point"] == function
        source = _block(_block(build, "source"), "storage_source")
        assert source["object"] == f"${{google_storage_bucket_object.{function}_source.name}}"


def test_chat_serves_concurrent_requests_with_matching_threads(tf: Config) -> None:
    """Chat takes several requests per instance (so >= 1 vCPU) and THREADS matches it."""
    service = _block(tf.resource("google_cloudfunctions2_function", "chat"), "service_config")
    concurrency = int(tf.resolve(service["max_instance_request_concurrency"]))
    assert concurrency > 1
    assert float(tf.resolve(service["available_cpu"])) >= 1
    assert tf.resolve(service["available_memory"]) == "1Gi"
    assert int(tf.resolve(service["min_instance_count"])) == 0
    assert service["environment_variables"] == "${local.chat_environment}"
    assert "local.chat_settings" in tf.locals["chat_environment"]
    threads = tf.locals["chat_settings"].get("THREADS")
    assert threads is not None, "THREADS is not set for the chat function"
    assert int(tf.resolve(threads)) == concurrency
    assert tf.locals["shared_settings"]["SNAPSHOT_URI"] == "${local.snapshot_uri}"
    assert tf.locals["snapshot_uri"].startswith("gs://")


# Which function serves the routes each limit applies to (docs/architecture.md, "Endpoints").
RATE_LIMITS = {
    "chat": {"RATE_LIMIT_CHAT", "RATE_LIMIT_FEEDBACK", "RATE_LIMIT_STATS", "RATE_LIMIT_INFO"},
    "admin": {"RATE_LIMIT_ADMIN", "RATE_LIMIT_ADMIN_WRITE"},
}


def test_every_rate_limit_is_settable_for_the_function_that_applies_it(tf: Config) -> None:
    """Each RATE_LIMIT_* the app reads reaches its function from a variable of its own (null
    by default, so the app's default applies): the admin's write limit included."""
    from chatbot.config import ENVIRONMENT_VARIABLES

    read = {name for name in ENVIRONMENT_VARIABLES if name.startswith("RATE_LIMIT_")}
    assert set().union(*RATE_LIMITS.values()) == read
    for function, names in RATE_LIMITS.items():
        settings = tf.locals[f"{function}_settings"]
        assert f"local.{function}_settings" in tf.locals[f"{function}_environment"]
        service = _block(tf.resource("google_cloudfunctions2_function", function), "service_config")
        assert service["environment_variables"] == f"${{local.{function}_environment}}"
        passed = {name for name in settings if name.startswith("RATE_LIMIT_")}
        assert passed == names, f"{function}: {passed ^ names}"
        for name in names:
            variable = name.lower()
            assert settings[name] == f"${{var.{variable}}}", (function, name)
            assert variable in tf.variables, f"var.{variable} is not declared"
            assert tf.variables[variable]["default"] is None, variable
            assert name in tf.variables[variable]["description"], variable


# --- publishing from GitHub ----------------------------------------------------------------


def test_only_the_configured_repository_can_publish(tf: Config) -> None:
    """The OIDC provider admits only the configured repository on the publishing ref, and
    only that repository's runs may impersonate the indexer account."""
    provider = tf.resource("google_iam_workload_identity_pool_provider", "github")
    condition = provider["attribute_condition"]
    assert (
        "assertion.sub == 'repo:${var.github_repository}:ref:${var.github_publish_ref}'"
        in condition
    )
    assert "assertion.repository == '${var.github_repository}'" in condition
    assert tf.variables["github_publish_ref"]["default"] == "refs/heads/main"
    binding = tf.resource("google_service_account_iam_member", "github_impersonates_indexer")
    assert binding["service_account_id"] == "${google_service_account.indexer.name}"
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"].startswith("principalSet://iam.googleapis.com/")
    assert binding["member"].endswith("/attribute.repository/${var.github_repository}")


# --- observability -------------------------------------------------------------------------


def test_log_metrics_count_cache_hits_misses_and_rate_limits(tf: Config) -> None:
    """Log-based metrics select the per-request summary line by its documented fields."""
    metrics = tf.of_type("google_logging_metric")
    base = tf.locals["chat_request_logs"]
    assert 'jsonPayload.event=\\"request\\"' in base or 'jsonPayload.event="request"' in base
    assert "cloud_run_revision" in base
    assert "jsonPayload.cached=true" in metrics["chat_cache_hits"]["filter"]
    assert "jsonPayload.cached=false" in metrics["chat_cache_misses"]["filter"]
    assert "jsonPayload.status=429" in metrics["chat_rate_limited"]["filter"]
    for name in ("chat_cache_hits", "chat_cache_misses", "chat_rate_limited"):
        assert metrics[name]["filter"].startswith("${local.chat_request_logs} AND "), name


def test_terraform_is_formatted() -> None:
    """`terraform fmt -check` passes, as CI requires."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"
