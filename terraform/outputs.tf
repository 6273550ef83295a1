output "chat_url" {
  description = "Public HTTPS URL of the chat function (POST /chat, GET /health, GET /docs)."
  value       = google_cloudfunctions2_function.chat.url
}

output "admin_url" {
  description = "URL of the private admin function: needs an identity token of an admin invoker and X-Admin-Token."
  value       = google_cloudfunctions2_function.admin.url
}

output "snapshot_bucket" {
  description = "Bucket holding the knowledge snapshots (GitHub repository variable SNAPSHOT_BUCKET)."
  value       = google_storage_bucket.snapshots.name
}

output "snapshot_prefix" {
  description = "Object prefix of the snapshots (GitHub repository variable SNAPSHOT_PREFIX)."
  value       = var.snapshot_prefix
}

output "snapshot_uri" {
  description = "SNAPSHOT_URI the functions read and `python -m indexer run --to` publishes to."
  value       = local.snapshot_uri
}

output "indexer_service_account" {
  description = "Service account that publishes snapshots (GitHub repository variable GCP_SERVICE_ACCOUNT)."
  value       = google_service_account.indexer.email
}

output "workload_identity_provider" {
  description = "Full name of the GitHub OIDC provider (GitHub repository variable GCP_WORKLOAD_IDENTITY_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "gemini_api_key_secret" {
  description = "Secret to add the Gemini API key to, with `gcloud secrets versions add`."
  value       = google_secret_manager_secret.gemini_api_key.secret_id
}

output "admin_token_secret" {
  description = "Secret to add the admin token to, with `gcloud secrets versions add`."
  value       = google_secret_manager_secret.admin_token.secret_id
}

output "insights_events_table" {
  description = "BigQuery table over the chat events, for the queries of docs/insights.md (project.dataset.table)."
  value       = "${var.project_id}.${google_bigquery_dataset.insights.dataset_id}.${google_bigquery_table.events.table_id}"
}

output "redis_host" {
  description = "Memorystore's private IP (for the REDIS_URL secret), when enable_redis is on."
  value       = var.enable_redis ? google_redis_instance.cache[0].host : null
}
