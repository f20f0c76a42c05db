"""Detail: mid-frequency UV displacement guided by photometric and CLIP feature-consistency losses."""
