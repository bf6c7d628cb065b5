"""Document ingestion: loaders, splitters, embeddings, the Chroma store and the pipeline."""
