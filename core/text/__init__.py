"""Review text as numbers: sentence embeddings and their backends (`embed`, `onnx_backend`, `weights`), the
per-text descriptors (`descriptors`) and the word-bigram language model (`language_model`)."""
