"""Romega Chatbot: what both Cloud Functions run (see docs/architecture.md).

config, errors, logs, lazy   used by everything
web/         the HTTP edge: app factories, router, rate limits, models, handlers
answering/   one question: service, cache, embeddings, retrieval, answerers
bucket/      snapshots and the fleet: storage, layout, restore, publishing, control
"""
