locals {
  chat_function_name  = "${var.name_prefix}-chat"
  admin_function_name = "${var.name_prefix}-admin"

  # Admin is a small control plane: a few concurrent operator calls at most.
  admin_concurrency = 4

  # Configuration (docs/architecture.md, "Configuration"). A null value is left out so that
  # the app's own default applies; extra_environment comes first so it cannot override these.
  shared_settings = {
    SNAPSHOT_URI         = local.snapshot_uri
    LOG_LEVEL            = var.log_level
    CONTROL_POLL_SECONDS = tostring(var.control_poll_seconds)
    HEARTBEAT_SECONDS    = tostring(var.heartbeat_seconds)
  }

  chat_settings = {
    # functions-framework's gunicorn serves THREADS requests at once: match the concurrency
    # Cloud Run sends to an instance, or requests queue inside it.
    THREADS             = tostring(var.chat_concurrency)
    GEMINI_MODEL        = var.gemini_model
    CACHE_TTL           = tostring(var.cache_ttl)
    MAX_RETRIES         = tostring(var.max_retries)
    RETRY_DELAY         = tostring(var.retry_delay)
    MAX_MESSAGE_CHARS   = tostring(var.max_message_chars)
    ALLOWED_ORIGINS     = length(var.allowed_origins) > 0 ? join(",", var.allowed_origins) : null
    RATE_LIMIT_CHAT     = var.rate_limit_chat
    RATE_LIMIT_INFO     = var.rate_limit_info
    RATE_LIMIT_STATS    = var.rate_limit_stats
    RATE_LIMIT_FEEDBACK = var.rate_limit_feedback
    SOURCE_BASE_URL     = var.source_base_url
  }

  admin_settings = {
    THREADS                = tostring(local.admin_concurrency)
    RATE_LIMIT_ADMIN       = var.rate_limit_admin
    RATE_LIMIT_ADMIN_WRITE = var.rate_limit_admin_write
  }

  chat_environment = merge(var.extra_environment, {
    for name, value in merge(local.shared_settings, local.chat_settings, local.redis_settings) : name => value if value != null
  })

  admin_environment = merge(var.extra_environment, {
    for name, value in merge(local.shared_settings, local.admin_settings, local.redis_settings) : name => value if value != null
  })
}

# --- chat: public --------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "chat" {
  # checkov:skip=CKV_GCP_124:The chat function is the public endpoint that the company website's visitors call; it must accept traffic from the internet. Abuse is bounded by per-IP rate limits and max_instance_count.
  project     = var.project_id
  name        = local.chat_function_name
  location    = var.region
  description = "Romega chatbot: answers website visitors from the published knowledge snapshot."

  build_config {
    runtime           = "python312"
    entry_point       = "chat"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.chat_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.chat.email

    # 1 vCPU is the least that allows more than one request per instance; 1 GiB holds the
    # embedding model plus the restored snapshot in /tmp (RAM) at 10k chunks.
    available_memory                 = var.chat_memory
    available_cpu                    = var.chat_cpu
    max_instance_request_concurrency = var.chat_concurrency
    min_instance_count               = var.chat_min_instances
    max_instance_count               = var.chat_max_instances
    timeout_seconds                  = var.chat_timeout_seconds

    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true

    environment_variables = local.chat_environment

    secret_environment_variables {
      key        = "GOOGLE_API_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.gemini_api_key.secret_id
      version    = var.gemini_api_key_secret_version
    }

    # With enable_redis (redis.tf): private ranges through the connector, and REDIS_URL.
    vpc_connector                 = var.enable_redis ? google_vpc_access_connector.redis[0].id : null
    vpc_connector_egress_settings = var.enable_redis ? "PRIVATE_RANGES_ONLY" : null

    dynamic "secret_environment_variables" {
      for_each = var.enable_redis ? [1] : []
      content {
        key        = "REDIS_URL"
        project_id = var.project_id
        secret     = google_secret_manager_secret.redis_url[0].secret_id
        version    = var.redis_url_secret_version
      }
    }
  }

  # The deploy checks that the runtime account can read its secret and that the build
  # account can fetch the source and push the image: grant all of that first.
  depends_on = [
    google_secret_manager_secret_iam_member.chat_reads_gemini_api_key,
    google_secret_manager_secret_iam_member.chat_reads_redis_url,
    google_storage_bucket_iam_member.chat_reads_snapshots,
    google_storage_bucket_iam_member.chat_writes_heartbeats,
    google_project_iam_member.build_writes_logs,
    google_project_iam_member.build_reads_staged_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_storage_bucket_iam_member.build_reads_sources,
  ]
}

# Gen2 functions are Cloud Run services: the invoker role lives on the service, whose full
# name (projects/<p>/locations/<r>/services/<s>) the function reports in
# service_config.service. (google_cloudfunctions2_function_iam_member rejects run.invoker.)
resource "google_cloud_run_service_iam_member" "chat_public_invoker" {
  # checkov:skip=CKV_GCP_102:Public by design: anonymous website visitors call POST /chat. This is the only public binding; the admin function has none.
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.chat.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# --- admin: private ------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "admin" {
  # checkov:skip=CKV_GCP_124:Ingress only decides which networks reach the URL; every admin request is still checked by Cloud Run IAM (no public invoker, see admin_invoker_members) and by X-Admin-Token. ALLOW_ALL lets an operator call it from a workstation; set admin_ingress to restrict it further.
  project     = var.project_id
  name        = local.admin_function_name
  location    = var.region
  description = "Romega chatbot admin (private): fleet cache stats, cache clearing, snapshot rollback."

  build_config {
    runtime           = "python312"
    entry_point       = "admin"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.admin_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.admin.email

    # As much as a chat instance: activation extracts and opens the target snapshot in /tmp
    # (RAM), within the same caps an instance accepts (docs/architecture.md).
    available_memory                 = var.chat_memory
    available_cpu                    = "1"
    max_instance_request_concurrency = local.admin_concurrency
    min_instance_count               = 0
    max_instance_count               = var.admin_max_instances
    timeout_seconds                  = 60

    ingress_settings               = var.admin_ingress
    all_traffic_on_latest_revision = true

    environment_variables = local.admin_environment

    secret_environment_variables {
      key        = "ADMIN_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.admin_token.secret_id
      version    = var.admin_token_secret_version
    }

    # With enable_redis (redis.tf): private ranges through the connector, and REDIS_URL.
    vpc_connector                 = var.enable_redis ? google_vpc_access_connector.redis[0].id : null
    vpc_connector_egress_settings = var.enable_redis ? "PRIVATE_RANGES_ONLY" : null

    dynamic "secret_environment_variables" {
      for_each = var.enable_redis ? [1] : []
      content {
        key        = "REDIS_URL"
        project_id = var.project_id
        secret     = google_secret_manager_secret.redis_url[0].secret_id
        version    = var.redis_url_secret_version
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.admin_reads_admin_token,
    google_secret_manager_secret_iam_member.admin_reads_redis_url,
    google_storage_bucket_iam_member.admin_reads_snapshots,
    google_storage_bucket_iam_member.admin_writes_control,
    google_project_iam_member.build_writes_logs,
    google_project_iam_member.build_reads_staged_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_storage_bucket_iam_member.build_reads_sources,
  ]
}

# Only the listed operators may invoke the admin function (they send an identity token).
resource "google_cloud_run_service_iam_member" "admin_invokers" {
  for_each = toset(var.admin_invoker_members)

  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.admin.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
