"""Getting a trained model out: exports for serving."""
