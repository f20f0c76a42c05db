"""Files: OBJ/MTL/PNG/EXR writing and the glTF binary with morph targets."""
