"""Exploration agents and the collection loop (no Ray)."""
from .base import Explorer, RandomExplorer, run_episode

__all__ = ["Explorer", "RandomExplorer", "run_episode"]
