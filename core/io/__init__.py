"""Review files in and out: reading bytes into a table (`readers`), parsing cell values (`values`), the
canonical frame with its quarantine and report (`load`, `schema`), and stored batches (`batches`)."""
