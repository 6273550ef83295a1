# GitHub Actions publishes knowledge snapshots without a service-account key: the workflow's
# OIDC token is exchanged for a short-lived token of the indexer account.
resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "GitHub Actions"
  description               = "Workflows of ${var.github_repository} that publish knowledge snapshots."

  depends_on = [google_project_service.enabled]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  # checkov:skip=CKV_GCP_125:False positive: the condition below pins assertion.sub to "repo:<owner/name>:ref:<ref>" (and the repository, optionally its id), but checkov does not resolve the variables inside the claim and so cannot see the owner/name. tests/test_terraform.py asserts the pinning instead.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = var.workload_identity_provider_id
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"          = "assertion.sub"
    "attribute.repository"    = "assertion.repository"
    "attribute.ref"           = "assertion.ref"
    "attribute.repository_id" = "assertion.repository_id"
  }

  # Any GitHub repository can mint a token for this issuer: only runs of the configured
  # repository on the publishing ref are let in (pull requests and other branches are not).
  # The subject of a job without a GitHub environment is "repo:<owner/name>:ref:<ref>".
  # Pinning the numeric repository id as well keeps out a namesake repository created after
  # this one is renamed or deleted.
  attribute_condition = join(" && ", compact([
    "assertion.sub == 'repo:${var.github_repository}:ref:${var.github_publish_ref}'",
    "assertion.repository == '${var.github_repository}'",
    var.github_repository_id == null ? null : "assertion.repository_id == '${var.github_repository_id}'",
  ]))

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}
