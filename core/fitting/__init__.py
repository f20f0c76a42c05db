"""Detect, regress and refine: from a photo's landmarks and pixels to fitted face parameters."""
