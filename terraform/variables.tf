# --- Project -------------------------------------------------------------------------------

variable "project_id" {
  description = "ID of the Google Cloud project to deploy into (billing must be enabled)."
  type        = string
}

variable "region" {
  description = "Region of the functions, the buckets and the Artifact Registry repository."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, service accounts, secrets, metrics)."
  type        = string
  default     = "romega"

  validation {
    # Function names become Cloud Run service names and service-account ids: keep them short,
    # lower-case and hyphenated so that neither API rewrites them.
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-16 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}
}

# --- Storage -------------------------------------------------------------------------------

variable "snapshot_bucket_name" {
  description = "Name of the snapshot bucket; null means \"<project_id>-<name_prefix>-snapshots\"."
  type        = string
  default     = null
}

variable "source_bucket_name" {
  description = "Name of the bucket holding the function source zips; null means \"<project_id>-<name_prefix>-sources\"."
  type        = string
  default     = null
}

variable "bucket_location" {
  description = "Location of both buckets; null means the region."
  type        = string
  default     = null
}

variable "snapshot_prefix" {
  description = "Object prefix inside the snapshot bucket: SNAPSHOT_URI is gs://<bucket>/<prefix>."
  type        = string
  default     = "romega"

  validation {
    # The IAM conditions below are written against "<prefix>/..." object names, so the prefix
    # must be non-empty and carry no leading or trailing slash.
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.snapshot_prefix))
    error_message = "snapshot_prefix must be non-empty, made of letters, digits, '.', '_', '-' and '/', without a leading or trailing slash."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version (an old LATEST, a deleted snapshot) is kept before it is deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "noncurrent_versions_to_keep" {
  description = "Number of noncurrent versions kept per object name; older ones are deleted whatever their age."
  type        = number
  default     = 5

  validation {
    condition     = var.noncurrent_versions_to_keep >= 1
    error_message = "noncurrent_versions_to_keep must be at least 1."
  }
}

variable "heartbeat_retention_days" {
  description = "Days after which the heartbeat of a chat instance that stopped writing it is deleted."
  type        = number
  default     = 1

  validation {
    condition     = var.heartbeat_retention_days >= 1
    error_message = "heartbeat_retention_days must be at least 1."
  }
}

variable "events_retention_days" {
  description = "Days the chat instances' answer, dont_know and feedback events are kept (they hold visitors' questions)."
  type        = number
  default     = 90

  validation {
    condition     = var.events_retention_days >= 1
    error_message = "events_retention_days must be at least 1."
  }
}

# --- Function sources (built by `make package`) ----------------------------------------------

variable "chat_zip_path" {
  description = "Path of the chat function's source zip; null means build/chat.zip at the repository root."
  type        = string
  default     = null
}

variable "admin_zip_path" {
  description = "Path of the admin function's source zip; null means build/admin.zip at the repository root."
  type        = string
  default     = null
}

# --- Secrets (values are added outside terraform, see docs/deploy.md) ------------------------

variable "gemini_api_key_secret_version" {
  description = "Version number of the Gemini API key secret that the chat function reads as GOOGLE_API_KEY."
  type        = string
  default     = "1"

  validation {
    # A pinned number makes a key rotation an explicit, reviewable deploy; "latest" would let
    # a stray `gcloud secrets versions add` change running code on its next cold start.
    condition     = can(regex("^[1-9][0-9]*$", var.gemini_api_key_secret_version))
    error_message = "gemini_api_key_secret_version must be a version number such as \"1\", not \"latest\"."
  }
}

variable "admin_token_secret_version" {
  description = "Version number of the admin token secret that the admin function reads as ADMIN_TOKEN."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[1-9][0-9]*$", var.admin_token_secret_version))
    error_message = "admin_token_secret_version must be a version number such as \"1\", not \"latest\"."
  }
}

# --- Chat function -------------------------------------------------------------------------

variable "chat_memory" {
  description = "Memory of one chat instance. The restored snapshot lives in /tmp, which counts against it."
  type        = string
  default     = "1Gi"
}

variable "chat_cpu" {
  description = "vCPUs of one chat instance; at least 1 so that an instance may serve concurrent requests."
  type        = string
  default     = "1"

  validation {
    condition     = tonumber(var.chat_cpu) >= 1
    error_message = "chat_cpu must be at least 1: Cloud Run allows request concurrency above 1 only from 1 vCPU."
  }
}

variable "chat_concurrency" {
  description = "Requests one chat instance serves at once; also passed as THREADS to functions-framework."
  type        = number
  default     = 8

  validation {
    condition     = var.chat_concurrency > 1 && var.chat_concurrency <= 80
    error_message = "chat_concurrency must be between 2 and 80."
  }
}

variable "chat_min_instances" {
  description = "Chat instances kept warm (0 = scale to zero, cold starts restore the snapshot)."
  type        = number
  default     = 0
}

variable "chat_max_instances" {
  description = "Upper bound on chat instances: bounds cost and Gemini spend."
  type        = number
  default     = 10
}

variable "chat_timeout_seconds" {
  description = "Request timeout of the chat function."
  type        = number
  default     = 60
}

variable "allowed_origins" {
  description = "Origins of the company website allowed by CORS (ALLOWED_ORIGINS, comma-joined); empty leaves the app default."
  type        = list(string)
  default     = []
}

variable "gemini_model" {
  description = "GEMINI_MODEL: the Gemini model that writes the answers."
  type        = string
  default     = "gemini-2.5-flash"
}

variable "cache_ttl" {
  description = "CACHE_TTL: seconds an answer stays in an instance's cache."
  type        = number
  default     = 3600
}

variable "max_retries" {
  description = "MAX_RETRIES: retries of a failed Gemini call."
  type        = number
  default     = 3
}

variable "retry_delay" {
  description = "RETRY_DELAY: base of the exponential back-off between Gemini retries, in seconds."
  type        = number
  default     = 1.0
}

variable "max_message_chars" {
  description = "MAX_MESSAGE_CHARS: longest visitor message accepted."
  type        = number
  default     = 2000
}

variable "rate_limit_chat" {
  description = "RATE_LIMIT_CHAT, e.g. \"20/minute\"; null leaves the app default (20/minute)."
  type        = string
  default     = null
}

variable "rate_limit_info" {
  description = "RATE_LIMIT_INFO, e.g. \"60/minute\"; null leaves the app default."
  type        = string
  default     = null
}

variable "rate_limit_stats" {
  description = "RATE_LIMIT_STATS, e.g. \"30/minute\"; null leaves the app default."
  type        = string
  default     = null
}

variable "rate_limit_feedback" {
  description = "RATE_LIMIT_FEEDBACK (POST /feedback), e.g. \"10/minute\"; null leaves the app default (10/minute)."
  type        = string
  default     = null
}

variable "source_base_url" {
  description = "SOURCE_BASE_URL: where a knowledge document's public page is (this + its path) when it names none itself; null: no link."
  type        = string
  default     = null
}

# --- Settings shared by both functions -----------------------------------------------------

variable "log_level" {
  description = "LOG_LEVEL of both functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL."
  }
}

variable "control_poll_seconds" {
  description = "CONTROL_POLL_SECONDS: how often a chat instance re-reads LATEST and the cache epoch."
  type        = number
  default     = 10
}

variable "heartbeat_seconds" {
  description = "HEARTBEAT_SECONDS: how often a chat instance writes its heartbeat."
  type        = number
  default     = 60
}

variable "extra_environment" {
  description = "Further environment variables for both functions (e.g. EMBEDDING_BACKEND, CACHE_MAX_ENTRIES, GENERATION_DEADLINE_SECONDS, GEMINI_BASE_URL). Never put a secret here."
  type        = map(string)
  default     = {}

  validation {
    condition = length(setintersection(keys(var.extra_environment), [
      "GOOGLE_API_KEY", "ADMIN_TOKEN", "SNAPSHOT_URI", "THREADS",
    ])) == 0
    error_message = "extra_environment cannot set GOOGLE_API_KEY or ADMIN_TOKEN (they come from Secret Manager), SNAPSHOT_URI or THREADS (derived by terraform)."
  }
}

# --- Admin function ------------------------------------------------------------------------

variable "admin_invoker_members" {
  description = "IAM members allowed to call the admin function, e.g. [\"user:ops@example.com\", \"group:ops@example.com\"]."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for member in var.admin_invoker_members :
      !contains(["allusers", "allauthenticatedusers"], lower(member))
    ])
    error_message = "The admin function is private: allUsers and allAuthenticatedUsers cannot be admin invokers."
  }
}

variable "admin_ingress" {
  description = "Ingress of the admin function. ALLOW_ALL lets an operator call it from a workstation; every call still needs IAM (run.invoker) and X-Admin-Token."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.admin_ingress)
    error_message = "admin_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "admin_max_instances" {
  description = "Upper bound on admin instances."
  type        = number
  default     = 2
}

variable "rate_limit_admin" {
  description = "RATE_LIMIT_ADMIN, the admin reads (GET /cache/stats, GET /snapshots), e.g. \"30/minute\"; null leaves the app default (30/minute)."
  type        = string
  default     = null
}

variable "rate_limit_admin_write" {
  description = "RATE_LIMIT_ADMIN_WRITE, the admin changes (DELETE /cache, POST /snapshots/activate), e.g. \"5/minute\"; null leaves the app default (5/minute)."
  type        = string
  default     = null
}

# --- Knowledge publishing from GitHub Actions ----------------------------------------------

variable "github_repository" {
  description = "GitHub repository (\"owner/name\") whose workflow may publish snapshots as the indexer service account."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like \"owner/name\"."
  }
}

variable "github_repository_id" {
  description = "Numeric id of that repository (`gh api repos/OWNER/NAME --jq .id`); null skips the id check."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository_id == null || can(regex("^[0-9]+$", var.github_repository_id))
    error_message = "github_repository_id must be the repository's numeric id."
  }
}

variable "github_publish_ref" {
  description = "The only git ref whose workflow runs may publish snapshots."
  type        = string
  default     = "refs/heads/main"
}

variable "workload_identity_pool_id" {
  description = "ID of the workload identity pool for GitHub Actions (a deleted pool's ID stays reserved for 30 days)."
  type        = string
  default     = "github-actions"
}

variable "workload_identity_provider_id" {
  description = "ID of the GitHub OIDC provider inside the pool."
  type        = string
  default     = "github"
}

# --- Insights (BigQuery over the events) ---------------------------------------------------

variable "insights_reader_members" {
  description = "IAM members who may query the insights dataset's events table, e.g. [\"group:knowledge@example.com\"] (they also need roles/bigquery.jobUser in a project of theirs)."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for member in var.insights_reader_members :
      !contains(["allusers", "allauthenticatedusers"], lower(member))
    ])
    error_message = "Events hold visitors' questions: allUsers and allAuthenticatedUsers cannot read them."
  }
}

# --- shared state on Redis (redis.tf, docs/deploy.md) ------------------------------------

variable "enable_redis" {
  description = "Memorystore for Redis for fleet-wide rate limits, answer cache and cache clear. Off: each instance keeps its own."
  type        = bool
  default     = false
}

variable "redis_tier" {
  description = "BASIC (one node; a failure empties the cache, which the functions survive) or STANDARD_HA."
  type        = string
  default     = "BASIC"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.redis_tier)
    error_message = "redis_tier must be BASIC or STANDARD_HA."
  }
}

variable "redis_memory_gb" {
  description = "Memorystore capacity; 1 GB holds hundreds of thousands of cached answers."
  type        = number
  default     = 1
}

variable "redis_connector_cidr" {
  description = "An unused /28 in the Redis VPC for the Serverless VPC Access connector."
  type        = string
  default     = "10.8.0.0/28"
}

variable "redis_timeout_ms" {
  description = "REDIS_TIMEOUT_MS: the budget of each Redis call before an instance falls back to its memory."
  type        = number
  default     = 50
}

variable "redis_url_secret_version" {
  description = "The version of the <name_prefix>-redis-url secret the functions read (pinned, like the others)."
  type        = string
  default     = "1"
}
