"""Knowledge distillation: smaller, faster students learnt from a teacher, as the DistilBERT paper did it.

`student` builds a student from a teacher (its embeddings, every other layer and its heads); `losses` holds
the soft-target, masked-LM and hidden-cosine losses with padding masked out; `distiller` is the Keras
training model (teacher frozen, one student pass); `run` is `distill()`, streamed, checkpointed and
resumable like `train`. This package imports nothing itself, so ``import distilbert_heads`` stays free of
Keras; the public names are ``distilbert_heads.distill`` and ``distilbert_heads.student_from_teacher``.
"""
