# Optional shared state for a fleet (docs/deploy.md, "Shared state on Redis"): rate limits,
# the answer cache and the cache epoch in Memorystore for Redis, so limits hold across
# instances and a cache clear reaches the next request. Off by default (enable_redis).
#
# Memorystore has a private IP only: the functions reach it through a Serverless VPC Access
# connector on a VPC of its own, sending only private ranges through it (Gemini and Cloud
# Storage stay on Google's front end). AUTH is on and traffic is TLS with the instance's
# own server CA (SERVER_AUTHENTICATION); the functions get the URL, AUTH string included,
# from Secret Manager, and the CA certificate (public) as REDIS_CA_CERT.

locals {
  redis_settings = var.enable_redis ? {
    REDIS_CA_CERT    = google_redis_instance.cache[0].server_ca_certs[0].cert
    REDIS_TIMEOUT_MS = tostring(var.redis_timeout_ms)
  } : {}
}

resource "google_compute_network" "redis" {
  count = var.enable_redis ? 1 : 0

  project                 = var.project_id
  name                    = "${var.name_prefix}-redis"
  auto_create_subnetworks = false

  depends_on = [google_project_service.enabled]
}

# Nothing reaches this VPC from outside: the connector's own health-check rules (created by
# the service, at higher priority) are the only ingress allowed.
resource "google_compute_firewall" "redis_deny_ingress" {
  count = var.enable_redis ? 1 : 0

  project   = var.project_id
  name      = "${var.name_prefix}-redis-deny-ingress"
  network   = google_compute_network.redis[0].name
  direction = "INGRESS"
  priority  = 65534

  source_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_vpc_access_connector" "redis" {
  count = var.enable_redis ? 1 : 0

  project       = var.project_id
  name          = "${var.name_prefix}-redis"
  region        = var.region
  network       = google_compute_network.redis[0].name
  ip_cidr_range = var.redis_connector_cidr
  min_instances = 2
  max_instances = 3
  machine_type  = "e2-micro"
}

resource "google_redis_instance" "cache" {
  count = var.enable_redis ? 1 : 0

  project        = var.project_id
  name           = "${var.name_prefix}-cache"
  region         = var.region
  tier           = var.redis_tier
  memory_size_gb = var.redis_memory_gb
  redis_version  = "REDIS_7_2"

  authorized_network      = google_compute_network.redis[0].id
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"

  # The cache is rebuilt by asking again; nothing here needs to survive a restart.
  persistence_config {
    persistence_mode = "DISABLED"
  }

  depends_on = [google_project_service.enabled]
}

# Like the other secrets, terraform creates it and never its value. After the first apply:
#   host=$(terraform output -raw redis_host)
#   auth=$(gcloud redis instances get-auth-string <name_prefix>-cache --region <region>)
#   printf 'rediss://:%s@%s:6378/0' "$auth" "$host" | gcloud secrets versions add <name_prefix>-redis-url --data-file=-
# then set redis_url_secret_version and apply again (docs/deploy.md).
resource "google_secret_manager_secret" "redis_url" {
  count = var.enable_redis ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}-redis-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# Both functions read it: chat for the limits and cache, admin to clear the cache at once.
resource "google_secret_manager_secret_iam_member" "chat_reads_redis_url" {
  count = var.enable_redis ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.redis_url[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.chat.member
}

resource "google_secret_manager_secret_iam_member" "admin_reads_redis_url" {
  count = var.enable_redis ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.redis_url[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.admin.member
}
