# Insights at scale (docs/insights.md): the chat instances' event batches, queried in place by
# BigQuery as an external table over <prefix>/events/. Nothing is copied or loaded: the table
# is a schema over the JSONL objects, so the events prefix's lifecycle rule (storage.tf,
# events_retention_days) bounds what BigQuery can ever read, and deleting the table deletes
# no event.
#
# Who may query: the members in insights_reader_members, and nobody else. They get
#   - roles/bigquery.dataViewer on this dataset only (the table's definition);
#   - roles/storage.objectViewer on the bucket, confined by a condition to the events prefix:
#     BigQuery reads an external table's files with the querying user's own credentials;
#   - roles/bigquery.jobUser to run the queries, granted in a project of their choice (their
#     own, or this one by whoever administers it): a project-level grant is out of this
#     configuration's scope on purpose (tests/test_terraform.py allows only the build account's).

locals {
  events_uri = "${local.snapshot_uri}/events/*"
  # Event fields the insights read (chatbot/bucket/events.py); others are ignored.
  events_schema = [
    { name = "type", type = "STRING", mode = "REQUIRED", description = "answer, dont_know or feedback" },
    { name = "time", type = "TIMESTAMP", mode = "NULLABLE", description = "When it was recorded (UTC)" },
    { name = "answer_id", type = "STRING", mode = "NULLABLE", description = "Joins feedback to its answer" },
    { name = "question", type = "STRING", mode = "NULLABLE", description = "What the visitor asked" },
    { name = "standalone_question", type = "STRING", mode = "NULLABLE", description = "A follow-up made standalone" },
    { name = "cached", type = "BOOLEAN", mode = "NULLABLE", description = "Served from the answer cache" },
    { name = "snapshot", type = "STRING", mode = "NULLABLE", description = "The knowledge snapshot that answered" },
    { name = "latency_ms", type = "FLOAT", mode = "NULLABLE", description = "Time to answer" },
    {
      name = "sources", type = "RECORD", mode = "REPEATED", description = "Cited passages, best first",
      fields = [
        { name = "source", type = "STRING", mode = "NULLABLE", description = "Document path" },
        { name = "score", type = "FLOAT", mode = "NULLABLE", description = "Cosine similarity" },
      ]
    },
    { name = "generator", type = "STRING", mode = "NULLABLE", description = "Who wrote the answer" },
    { name = "answer", type = "STRING", mode = "NULLABLE", description = "The answer's text" },
    { name = "rating", type = "STRING", mode = "NULLABLE", description = "up or down (feedback)" },
    { name = "comment", type = "STRING", mode = "NULLABLE", description = "The visitor's comment (feedback)" },
  ]
}

resource "google_bigquery_dataset" "insights" {
  # checkov:skip=CKV_GCP_81:The dataset holds no data, only an external table's definition; the events stay in the snapshot bucket, encrypted at rest by Google as every object of this configuration.
  project       = var.project_id
  dataset_id    = replace("${var.name_prefix}_insights", "-", "_")
  friendly_name = "Romega chatbot insights"
  description   = "Visitors' questions and ratings (chat events), queried in place from the snapshot bucket."
  location      = var.region
  # Access is only the dataset_iam_member grants below: no special group, no public access.

  delete_contents_on_destroy = false

  depends_on = [google_project_service.enabled]
}

resource "google_bigquery_table" "events" {
  # checkov:skip=CKV_GCP_80:An external table stores nothing in BigQuery; its files are objects in the snapshot bucket, encrypted at rest by Google.
  project     = var.project_id
  dataset_id  = google_bigquery_dataset.insights.dataset_id
  table_id    = "events"
  description = "Answer, dont_know and feedback events; one row a JSON line of ${local.events_uri}."
  # A definition only (deleting it deletes no event), but the queries in docs/insights.md
  # depend on it: set false first to replace or destroy it.
  deletion_protection = true

  external_data_configuration {
    source_format = "NEWLINE_DELIMITED_JSON"
    source_uris   = [local.events_uri]
    autodetect    = false
    # Fields added to events later are ignored, not errors; a torn line is skipped.
    ignore_unknown_values = true
    max_bad_records       = 100
    schema                = jsonencode(local.events_schema)
  }
}

resource "google_bigquery_dataset_iam_member" "insights_readers" {
  for_each = toset(var.insights_reader_members)

  project    = var.project_id
  dataset_id = google_bigquery_dataset.insights.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}

# BigQuery reads the external table's files as the querying member: the events prefix, only.
resource "google_storage_bucket_iam_member" "insights_readers_read_events" {
  for_each = toset(var.insights_reader_members)

  bucket = google_storage_bucket.snapshots.name
  role   = "roles/storage.objectViewer"
  member = each.value

  condition {
    title       = "insights-read-events"
    description = "Only the chat events, for queries of the insights external table."
    expression  = "${local.object_type} && resource.name.startsWith(\"${local.snapshot_objects}/events/\")"
  }
}
