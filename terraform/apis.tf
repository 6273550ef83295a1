locals {
  services = toset([
    "artifactregistry.googleapis.com",     # the functions' container images
    "bigquery.googleapis.com",             # the insights dataset over the events (insights.tf)
    "cloudbuild.googleapis.com",           # builds the function sources
    "cloudfunctions.googleapis.com",       # Cloud Functions gen2
    "cloudresourcemanager.googleapis.com", # project lookups (data.google_project)
    "generativelanguage.googleapis.com",   # Gemini, called with GOOGLE_API_KEY
    "iam.googleapis.com",                  # service accounts, workload identity pool
    "iamcredentials.googleapis.com",       # GitHub Actions impersonates the indexer account
    "logging.googleapis.com",              # logs and log-based metrics
    "run.googleapis.com",                  # gen2 functions run as Cloud Run services
    "secretmanager.googleapis.com",        # GOOGLE_API_KEY, ADMIN_TOKEN
    "storage.googleapis.com",              # snapshot and source buckets
    "sts.googleapis.com",                  # exchanges the GitHub OIDC token
  ])

  # Only with enable_redis (redis.tf): Memorystore, its VPC and the functions' connector.
  redis_services = toset([
    "compute.googleapis.com",
    "redis.googleapis.com",
    "vpcaccess.googleapis.com",
  ])
}

resource "google_project_service" "enabled" {
  for_each = var.enable_redis ? setunion(local.services, local.redis_services) : local.services

  project = var.project_id
  service = each.value

  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}
