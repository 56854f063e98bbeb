"""Text in, answers out: the WordPiece tokenizer and the pipeline."""
