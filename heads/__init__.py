"""Built-in head plugins: one module per family, each with a `register_heads` hookimpl."""
