"""Knowledge distillation: smaller students learnt from a teacher (losses, the training model, `distill`)."""
