"""Batch loading: Caltech-256 and any folder of images into the index, through the embedder."""
