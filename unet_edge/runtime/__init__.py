"""Inference backends behind one interface, and the threaded video pipeline."""
