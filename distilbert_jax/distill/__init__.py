"""Knowledge distillation of a DistilBERT student from a BERT teacher (Sanh et al. 2019)."""
