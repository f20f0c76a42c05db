"""The ICT face model, its parameters, landmark correspondence, face parts and the differentiable renderer."""
