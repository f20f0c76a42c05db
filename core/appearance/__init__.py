"""Texture: which pixels show skin, de-lit UV albedo, completion, GCN refinement and the identity network."""
