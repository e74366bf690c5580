"""Arch specs: per architecture, which skill serves each module kind and how variants become knobs."""
