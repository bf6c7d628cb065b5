"""LoRA fine-tuning: datasets, training through the job runner, adapter export."""
