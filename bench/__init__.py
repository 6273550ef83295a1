"""Benchmarks (`make bench`, `make bench-quick`) and the retrieval evaluation (`make eval`).

Everything here measures the real code paths: real functions-framework processes on
127.0.0.1, the real ONNX embedder, real Chroma, the real GCS client against fake-gcs-server
and the real google-genai client against the fake Gemini server. Benchmarks report numbers;
they never fail the build.
"""
