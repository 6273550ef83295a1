"""The snapshot builder: knowledge/ -> chunks -> vectors -> verified Chroma snapshot -> bucket."""
