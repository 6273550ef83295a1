locals {
  bucket_location      = coalesce(var.bucket_location, upper(var.region))
  snapshot_bucket_name = coalesce(var.snapshot_bucket_name, "${var.project_id}-${var.name_prefix}-snapshots")
  source_bucket_name   = coalesce(var.source_bucket_name, "${var.project_id}-${var.name_prefix}-sources")
  snapshot_uri         = "gs://${google_storage_bucket.snapshots.name}/${var.snapshot_prefix}"

  chat_zip_path  = coalesce(var.chat_zip_path, "${path.module}/../build/chat.zip")
  admin_zip_path = coalesce(var.admin_zip_path, "${path.module}/../build/admin.zip")
}

# Snapshots, the LATEST pointer and the control objects (see docs/architecture.md, "Bucket layout").
resource "google_storage_bucket" "snapshots" {
  # checkov:skip=CKV_GCP_62:Usage logs are a legacy feature; reads and writes are audited through Cloud Audit Logs (enable Data Access logs for storage if needed), and a separate log bucket is out of scope for this sample.
  name          = local.snapshot_bucket_name
  project       = var.project_id
  location      = local.bucket_location
  storage_class = "STANDARD"

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Snapshots are the only copy of the built knowledge base; make `terraform destroy` stop
  # instead of deleting them.
  force_destroy = false

  # Versioning keeps every earlier LATEST and any snapshot deleted by mistake, so a bad
  # publish or a slip of the hand can be undone; the rules below bound what that costs.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_to_keep
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # A live chat instance rewrites its heartbeat every HEARTBEAT_SECONDS; the heartbeat of an
  # instance that was scaled away stops changing and is removed after a day ...
  lifecycle_rule {
    condition {
      age            = var.heartbeat_retention_days
      matches_prefix = ["${var.snapshot_prefix}/control/instances/"]
    }
    action {
      type = "Delete"
    }
  }

  # Visitors' questions and ratings (no IP addresses): kept as long as the insights need them.
  lifecycle_rule {
    condition {
      age            = var.events_retention_days
      matches_prefix = ["${var.snapshot_prefix}/events/"]
    }
    action {
      type = "Delete"
    }
  }

  # The bucket is versioned: an expired events object would otherwise linger as a
  # noncurrent version for the general retention period.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
      matches_prefix             = ["${var.snapshot_prefix}/events/"]
    }
    action {
      type = "Delete"
    }
  }

  # ... and the noncurrent versions that every heartbeat rewrite leaves are not kept for
  # the full retention period: they have no value once replaced.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
      matches_prefix             = ["${var.snapshot_prefix}/control/instances/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# The function source zips that `make package` builds; Cloud Build reads them from here.
resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62:Usage logs are a legacy feature; the bucket only holds build inputs that terraform writes, audited through Cloud Audit Logs, and a separate log bucket is out of scope for this sample.
  name          = local.source_bucket_name
  project       = var.project_id
  location      = local.bucket_location
  storage_class = "STANDARD"

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Only content-addressed build inputs live here; all of them can be rebuilt from git.
  force_destroy = true

  versioning {
    enabled = true
  }

  # A replaced zip stays long enough to redeploy the previous build by hand.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# The object names carry the zip's md5, so a changed zip is a new object and terraform
# redeploys the function; an unchanged zip leaves the function alone.
resource "google_storage_bucket_object" "chat_source" {
  name   = "chat-${filemd5(local.chat_zip_path)}.zip"
  bucket = google_storage_bucket.sources.name
  source = local.chat_zip_path
}

resource "google_storage_bucket_object" "admin_source" {
  name   = "admin-${filemd5(local.admin_zip_path)}.zip"
  bucket = google_storage_bucket.sources.name
  source = local.admin_zip_path
}
