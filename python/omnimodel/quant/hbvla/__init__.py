"""HBVLA (seed 000, METHODS.md section 2): 1-bit post-training binarization stored and run natively."""
