"""The torch layer every system builds on: field embeddings, attention merge, early stopping, training loop."""
