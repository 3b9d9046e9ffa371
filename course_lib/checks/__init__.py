"""Reference outputs (reference.pt) and the cases that produce them."""
