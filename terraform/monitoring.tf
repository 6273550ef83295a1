# Log-based metrics over the one summary line the app writes per request:
#   jsonPayload: event="request", route, status (HTTP status), cached (bool), latency_ms
# Gen2 functions log as their Cloud Run service, hence resource.type="cloud_run_revision".

locals {
  chat_request_logs = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${local.chat_function_name}\"",
    "jsonPayload.event=\"request\"",
  ])
}

resource "google_logging_metric" "chat_cache_hits" {
  project     = var.project_id
  name        = "${var.name_prefix}/chat_cache_hits"
  description = "POST /chat answers served from an instance's cache."
  filter      = "${local.chat_request_logs} AND jsonPayload.route=\"/chat\" AND jsonPayload.cached=true"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.enabled]
}

# A miss is a successful answer that did not come from the cache (use_cache=false included):
# each one cost an embedding, a retrieval and usually a Gemini call.
resource "google_logging_metric" "chat_cache_misses" {
  project     = var.project_id
  name        = "${var.name_prefix}/chat_cache_misses"
  description = "POST /chat answers (HTTP 200) that were generated rather than served from the cache."
  filter      = "${local.chat_request_logs} AND jsonPayload.route=\"/chat\" AND jsonPayload.cached=false AND jsonPayload.status=200"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "chat_rate_limited" {
  project     = var.project_id
  name        = "${var.name_prefix}/chat_rate_limited"
  description = "Requests to the chat function refused with HTTP 429, by route."
  filter      = "${local.chat_request_logs} AND jsonPayload.status=429"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "The route that was rate limited."
    }
  }

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
  }

  depends_on = [google_project_service.enabled]
}

# Visitors who saw an error from us (Gemini down, no snapshot): the number bounded in
# docs/architecture.md ("Numbers to reach").
resource "google_logging_metric" "chat_server_errors" {
  project     = var.project_id
  name        = "${var.name_prefix}/chat_server_errors"
  description = "Requests to the chat function answered with HTTP 5xx, by route and status."
  filter      = "${local.chat_request_logs} AND jsonPayload.status>=500"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "The route that failed."
    }

    labels {
      key         = "status"
      value_type  = "STRING"
      description = "The HTTP status returned."
    }
  }

  label_extractors = {
    route  = "EXTRACT(jsonPayload.route)"
    status = "EXTRACT(jsonPayload.status)"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "chat_latency" {
  project     = var.project_id
  name        = "${var.name_prefix}/chat_latency"
  description = "Server-side latency of POST /chat, split by cache hit or miss."
  filter      = "${local.chat_request_logs} AND jsonPayload.route=\"/chat\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"

    labels {
      key         = "cached"
      value_type  = "STRING"
      description = "Whether the answer came from the cache."
    }
  }

  value_extractor = "EXTRACT(jsonPayload.latency_ms)"

  label_extractors = {
    cached = "EXTRACT(jsonPayload.cached)"
  }

  # From 1 ms to about 33 s: cached answers land in the first buckets, Gemini calls later.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 16
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.enabled]
}
