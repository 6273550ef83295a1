"""The snapshot builder: knowledge/ -> chunks -> vectors -> verified Chroma snapshot -> bucket.

Indexer-only code (document parsing with selectolax, progress bars with tqdm, writing and
packing collections) lives here and never ships in a function zip.
"""
