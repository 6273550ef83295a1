# Terraform creates the secrets but never their values: versions are added with
# `gcloud secrets versions add` (docs/deploy.md), so no key or token lands in the state.
# The functions read the version numbers pinned in variables.

resource "google_secret_manager_secret" "gemini_api_key" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-gemini-api-key"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret" "admin_token" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-admin-token"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# Each secret is readable by exactly the one runtime account that needs it.
resource "google_secret_manager_secret_iam_member" "chat_reads_gemini_api_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.gemini_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.chat.member
}

resource "google_secret_manager_secret_iam_member" "admin_reads_admin_token" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.admin_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.admin.member
}
