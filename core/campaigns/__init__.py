"""Who wrote a review, about what and when: the per-reviewer and per-product history of every stored batch,
the behavioural features read from it, product bursts and groups of accounts that review together."""
