"""The embedded synthetic audiovisual world (SPEC section 8)."""
