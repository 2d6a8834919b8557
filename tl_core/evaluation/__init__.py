"""The evaluation wing: metrics, error analysis, Grad-CAM, likely label issues."""
