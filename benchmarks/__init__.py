"""Side-by-side CPU benchmarks of distilbert_heads against its peers (see README.md)."""
