"""PyTorch reference implementations of the VLA architectures omnimodel converts (ground truth for the
analyzer and the numerical validator). One subpackage per architecture."""
