"""Mechanisms every room uses, each written once: atomic writes, file locks, task execution, progress."""
