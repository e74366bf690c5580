"""Code generation: a Plan -> readable C++ (rendered from templates/) and what builds it."""
