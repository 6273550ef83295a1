# One service account per component, each with only what docs/architecture.md ("Security")
# says it does:
#
#   account   reads                        writes
#   chat      the whole snapshot prefix    <prefix>/control/instances/* (its heartbeat),
#                                          <prefix>/events/* (create only)
#   admin     the whole snapshot prefix    <prefix>/LATEST, <prefix>/control/*
#   indexer   the whole snapshot prefix    <prefix>/snapshots/* (create only), <prefix>/LATEST
#   build     the function source zips     images in the functions repository, build logs
#
# Write access is bucket-level with IAM conditions on the object name (uniform bucket-level
# access makes conditions possible). roles/storage.objectUser is used where an object is
# replaced (LATEST, the cache epoch, heartbeats): replacing needs storage.objects.delete on
# top of create. Snapshots are immutable, so the indexer may only create them.

locals {
  snapshot_objects = "projects/_/buckets/${google_storage_bucket.snapshots.name}/objects/${var.snapshot_prefix}"
  object_type      = "resource.type == \"storage.googleapis.com/Object\""
}

resource "google_service_account" "chat" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-chat"
  display_name = "Romega chat function"
  description  = "Runtime identity of the public chat function: reads snapshots, writes its heartbeat and events."
}

resource "google_service_account" "admin" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-admin"
  display_name = "Romega admin function"
  description  = "Runtime identity of the private admin function: moves LATEST, bumps the cache epoch."
}

resource "google_service_account" "indexer" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-indexer"
  display_name = "Romega indexer"
  description  = "Publishes knowledge snapshots; used by GitHub Actions through workload identity federation."
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "Romega function builds"
  description  = "Cloud Build identity that turns the function source zips into images."
}

# --- chat ----------------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "chat_reads_snapshots" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.chat.member
}

resource "google_storage_bucket_iam_member" "chat_writes_heartbeats" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectUser"
  member = google_service_account.chat.member

  condition {
    title       = "chat-heartbeats-only"
    description = "Chat instances may create and replace only their heartbeats."
    expression  = "${local.object_type} && resource.name.startsWith(\"${local.snapshot_objects}/control/instances/\")"
  }
}

# Answer, dont_know and feedback events: batches written once, never replaced.
resource "google_storage_bucket_iam_member" "chat_creates_events" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.chat.member

  condition {
    title       = "chat-events-create-only"
    description = "Chat instances may create event batches and nothing else there."
    expression  = "${local.object_type} && resource.name.startsWith(\"${local.snapshot_objects}/events/\")"
  }
}

# --- admin ---------------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "admin_reads_snapshots" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.admin.member
}

resource "google_storage_bucket_iam_member" "admin_writes_control" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectUser"
  member = google_service_account.admin.member

  condition {
    title       = "admin-latest-and-control"
    description = "The admin function may replace LATEST (rollback) and the control objects (cache epoch), never a snapshot."
    expression  = "${local.object_type} && (resource.name == \"${local.snapshot_objects}/LATEST\" || resource.name.startsWith(\"${local.snapshot_objects}/control/\"))"
  }
}

# --- indexer -------------------------------------------------------------------------------

# Read access is what makes `indexer run` incremental: it restores the snapshot LATEST names
# to reuse its unchanged vectors (docs/architecture.md, "Incremental indexing").
resource "google_storage_bucket_iam_member" "indexer_reads_snapshots" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.indexer.member
}

resource "google_storage_bucket_iam_member" "indexer_creates_snapshots" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.indexer.member

  condition {
    title       = "indexer-new-snapshots"
    description = "The indexer may add snapshots and manifests; without delete it cannot overwrite one."
    expression  = "${local.object_type} && resource.name.startsWith(\"${local.snapshot_objects}/snapshots/\")"
  }
}

resource "google_storage_bucket_iam_member" "indexer_moves_latest" {
  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectUser"
  member = google_service_account.indexer.member

  condition {
    title       = "indexer-latest-pointer"
    description = "The indexer may replace the LATEST pointer, last step of a publish."
    expression  = "${local.object_type} && resource.name == \"${local.snapshot_objects}/LATEST\""
  }
}

# GitHub Actions runs of the configured repository (and ref, see the provider's
# attribute_condition) may impersonate the indexer; nothing else may.
resource "google_service_account_iam_member" "github_impersonates_indexer" {
  service_account_id = google_service_account.indexer.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

# --- build ---------------------------------------------------------------------------------

# Project level, because log entries are written to the project: there is no narrower
# resource to grant logging.logEntries.create on. It carries no read or admin rights.
resource "google_project_iam_member" "build_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_pushes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_reads_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# Cloud Functions copies each source zip into its own gcf-v2-sources-<number>-<region>
# bucket and Cloud Build fetches it from there. That bucket is created by the service on the
# first deploy, so a bucket-level grant could not be made beforehand: the grant is project
# level with a condition that confines it to the objects of that one bucket.
resource "google_project_iam_member" "build_reads_staged_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-staged-sources-only"
    description = "Only the function sources that Cloud Functions stages for the build."
    expression  = "${local.object_type} && resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}/objects/\")"
  }
}

# Deploying a function "as" the build and runtime accounts needs iam.serviceAccounts.actAs
# on them; the deployer (a project owner, see docs/deploy.md) has it already.
