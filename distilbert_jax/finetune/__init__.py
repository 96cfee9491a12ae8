"""Fine-tuning and evaluation: GLUE, SQuAD, text classification and NER on any DistilBERT or BERT
checkpoint, scored the way the published numbers were scored."""
