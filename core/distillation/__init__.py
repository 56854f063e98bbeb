"""Knowledge distillation: smaller, faster students learnt from a teacher, as the DistilBERT paper did it.

`student` builds a student from a teacher (its embeddings, every other layer and its heads). Import the
modules you need (``from distilbert_heads.distillation.student import student_from_teacher``); this package
imports nothing itself, so ``import distilbert_heads`` stays free of Keras.
"""
