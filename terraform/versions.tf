terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.x and 7.x both carry every argument used here (build_config.service_account,
      # build_config.docker_repository, service_config.available_cpu and
      # max_instance_request_concurrency, replication.auto on secrets).
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge({
    app        = "romega-chatbot"
    managed-by = "terraform"
  }, var.labels)
}

data "google_project" "this" {
  project_id = var.project_id
}
