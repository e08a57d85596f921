"""The command layer: what ``ggufkit run|chat|perplexity|bench`` print and read.

Each module takes parsed options from ``ggufkit.cli``, calls the library (``runtime``), and owns
the terminal: streaming text, progress lines, stdin loops. The library below returns values,
yields tokens and takes callbacks; it never prints."""
