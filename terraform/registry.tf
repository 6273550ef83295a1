# The functions' container images. Terraform owns this repository (instead of the
# gcf-artifacts one Cloud Functions would create) so the build account can be granted
# artifactregistry.writer on this repository alone, and old images are cleaned up.
resource "google_artifact_registry_repository" "functions" {
  # checkov:skip=CKV_GCP_84:Images are built from this public repository's code and hold no secrets; Google-managed encryption is enough and a KMS key ring is out of scope for this sample.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  format        = "DOCKER"
  description   = "Container images of the Romega chatbot functions (built by Cloud Build)."

  cleanup_policy_dry_run = false

  # The image a function runs is always one of its latest builds: keep a few for rollback,
  # delete the rest once they are a month old.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.enabled]
}
