"""Plain numpy reference implementations that the product is checked against (test-only code)."""
