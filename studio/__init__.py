"""GenAI Studio: a local-first workbench for RAG, prompting, fine-tuning and generative models.

The core (this package, ``ingest``, ``finetune``, ``generative``, ``eval``) works without the UI;
``studio.ui`` (Gradio) and ``studio.cli`` are thin front ends over it.
"""

__version__ = "0.1.0"
