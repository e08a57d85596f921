"""numpy reference (de)quantizers, bit-exact with ggml; each module registers its types."""
